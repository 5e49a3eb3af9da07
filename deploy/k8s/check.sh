#!/usr/bin/env bash
# Validates everything in deploy/ that Kubernetes or Prometheus reads (`make k8s-check`;
# docs/operations.md, "Validation"):
#
#  1. the tool module's gofmt, vet and tests (deploy/k8s/tools: schema generation, the checks
#     below);
#  2. the Prometheus rule file and the Grafana dashboard (deploycheck rules, dashboard);
#  3. the chart: helm lint --strict, then helm template with the defaults and with every
#     deploy/helm/*/ci/*.yaml, for the Kubernetes version of the schemas;
#  4. kubeconform -strict over everything rendered and every Kubernetes manifest under deploy/,
#     against the offline schemas (a kind without a schema is an error, not a skip).
#
# Runs deploy/k8s/install.sh first (a no-op once everything is cached).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

env_lines="$(bash "$here/install.sh")"
eval "$(grep -E '^(HELM|KUBECONFORM|DEPLOYCHECK|SCHEMAS|KUBE_VERSION)=' <<<"$env_lines")"

(
	cd "$here/tools"
	unformatted="$(gofmt -l .)"
	if [[ -n "$unformatted" ]]; then
		echo "gofmt needed in deploy/k8s/tools: $unformatted" >&2
		exit 1
	fi
	GOWORK=off go vet ./...
	GOWORK=off go test -count=1 ./...
)

"$DEPLOYCHECK" rules -root "$root"
"$DEPLOYCHECK" dashboard -root "$root"

out="$root/.cache/k8s/rendered"
rm -rf "$out"
mkdir -p "$out"
rendered=()
for chart in "$root"/deploy/helm/*/; do
	[[ -f "$chart/Chart.yaml" ]] || continue
	name="$(basename "$chart")"
	variants=("") # the defaults, then each ci/ file
	for v in "$chart"ci/*.yaml; do
		[[ -f "$v" ]] && variants+=("$v")
	done
	for v in "${variants[@]}"; do
		args=(--kube-version "$KUBE_VERSION")
		label="$name (defaults)"
		file="$out/$name.yaml"
		if [[ -n "$v" ]]; then
			args+=(-f "$v")
			label="$name with ${v#"$root"/}"
			file="$out/$name-$(basename "$v")"
		fi
		"$HELM" lint --strict --quiet "${args[@]}" "$chart" >/dev/null ||
			{ "$HELM" lint --strict "${args[@]}" "$chart"; echo "helm lint failed: $label" >&2; exit 1; }
		"$HELM" template "$name" "$chart" --namespace custos "${args[@]}" >"$file"
		echo "helm lint and template OK: $label ($(grep -c '^kind:' "$file") objects)"
		rendered+=("$file")
	done
done

mapfile -t manifests < <("$DEPLOYCHECK" manifests -root "$root")
for m in "${manifests[@]}"; do
	rendered+=("$root/$m")
done
echo "plain Kubernetes manifests under deploy/: ${#manifests[@]}"

"$KUBECONFORM" -strict -summary -kubernetes-version "$KUBE_VERSION" \
	-schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "${rendered[@]}"
echo "k8s-check OK"
