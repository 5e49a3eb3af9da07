{{/* Names and labels. */}}
{{- define "custos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "custos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "custos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "custos.labels" -}}
helm.sh/chart: {{ include "custos.chart" . }}
app.kubernetes.io/name: {{ include "custos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: custos
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "custos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "custos.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "custos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "custos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "custos.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
custos.check fails the render on values that would silently be overridden: the chart owns the
keys of custos.yaml that name files inside the pod, the listener and the drain timeout.
*/}}
{{- define "custos.check" -}}
{{- $c := .Values.config | default dict }}
{{- range $k := list "nats" "policy" }}
{{- if hasKey $c $k }}
{{- fail (printf "config.%s is set by the chart: use the chart's values (nats.*, policy) instead" $k) }}
{{- end }}
{{- end }}
{{- if hasKey ($c.keys | default dict) "file" }}
{{- fail "config.keys.file is set by the chart: name the Secret in keys.secretName and keys.key" }}
{{- end }}
{{- range $k := list "metrics_listen" "scheduler_metrics_listen" }}
{{- if hasKey ($c.telemetry | default dict) $k }}
{{- fail (printf "config.telemetry.%s is set by the chart: use metrics.port" $k) }}
{{- end }}
{{- end }}
{{- range $k := list "drain_timeout" "spool_dir" }}
{{- if hasKey ($c.worker | default dict) $k }}
{{- fail (printf "config.worker.%s is set by the chart: use worker.drainTimeoutSeconds or worker.spool" $k) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- end }}

{{/*
custos.config renders custos.yaml for one role: (dict "root" $ "seed" .Values.nats.seeds.worker).
The file is the config value plus the keys the chart owns.
*/}}
{{- define "custos.config" -}}
{{- $v := .root.Values }}
{{- $c := deepCopy ($v.config | default dict) }}
{{- $_ := set $c "nats" (dict "url" $v.nats.url "seed_file" (printf "/etc/custos/nats/%s" .seed.key)) }}
{{- $_ := set $c "keys" (merge (dict "file" (printf "/etc/custos/keys/%s" $v.keys.key)) ($c.keys | default dict)) }}
{{- if $v.policy }}
{{- $_ := set $c "policy" "policy.yaml" }}
{{- end }}
{{- $listen := printf ":%d" (int $v.metrics.port) }}
{{- $_ := set $c "telemetry" (merge (dict "metrics_listen" $listen "scheduler_metrics_listen" $listen) ($c.telemetry | default dict)) }}
{{- $_ := set $c "worker" (merge (dict "spool_dir" "/var/lib/custos/spool" "drain_timeout" (printf "%ds" (int $v.worker.drainTimeoutSeconds))) ($c.worker | default dict)) }}
{{- toYaml $c }}
{{- end }}

{{/* The volumes every Custos pod has: its config, its role's seed, the key file, /tmp. */}}
{{- define "custos.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: nats-seed
  secret:
    secretName: {{ .seed.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .seed.key }}
        path: {{ .seed.key }}
- name: keys
  secret:
    secretName: {{ .root.Values.keys.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .root.Values.keys.key }}
        path: {{ .root.Values.keys.key }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "custos.volumeMounts" -}}
- name: config
  mountPath: /etc/custos/config
  readOnly: true
- name: nats-seed
  mountPath: /etc/custos/nats
  readOnly: true
- name: keys
  mountPath: /etc/custos/keys
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Environment of one container: the shared env plus the component's extra. */}}
{{- define "custos.env" -}}
{{- $env := concat (.root.Values.env | default list) (.extra | default list) }}
{{- with $env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "custos.probes" -}}
readinessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: 30
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}
