package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// A cut-down OpenAPI v2 document: a kind, a referenced spec, IntOrString, Quantity, a List
// kind and a definition of several kinds.
const swagger = `{"definitions": {
  "io.k8s.api.apps.v1.Deployment": {
    "description": "long text",
    "type": "object",
    "required": ["spec"],
    "properties": {
      "apiVersion": {"type": "string"},
      "kind": {"type": "string"},
      "metadata": {"$ref": "#/definitions/meta.ObjectMeta", "description": "sibling ignored"},
      "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}
    },
    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}]
  },
  "io.k8s.api.apps.v1.DeploymentSpec": {
    "type": "object",
    "required": ["replicas"],
    "properties": {
      "replicas": {"type": "integer"},
      "paused": {"type": "boolean"},
      "maxSurge": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
      "memory": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}}
    }
  },
  "meta.ObjectMeta": {"type": "object", "properties": {"name": {"type": "string"}}},
  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
  "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
  "io.k8s.api.apps.v1.DeploymentList": {
    "type": "object", "properties": {"items": {"type": "array"}},
    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "DeploymentList", "version": "v1"}]
  },
  "io.k8s.api.core.v1.Service": {
    "type": "object", "properties": {"kind": {"type": "string"}},
    "x-kubernetes-group-version-kind": [{"group": "", "kind": "Service", "version": "v1"}]
  },
  "meta.DeleteOptions": {
    "type": "object", "properties": {"kind": {"type": "string"}},
    "x-kubernetes-group-version-kind": [{"group": "", "kind": "DeleteOptions", "version": "v1"}, {"group": "apps", "kind": "DeleteOptions", "version": "v1"}]
  }
}}`

const crd = `
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-crd}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: scaledobjects.keda.sh}
spec:
  group: keda.sh
  names: {kind: ScaledObject}
  versions:
    - name: v1alpha1
      schema:
        openAPIV3Schema:
          type: object
          description: dropped
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [scaleTargetRef]
              properties:
                scaleTargetRef:
                  type: object
                  properties: {name: {type: string}}
                port:
                  x-kubernetes-int-or-string: true
                free:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
                  properties: {known: {type: string}}
                mode:
                  type: string
                  enum: [a, b]
                  default: a
`

func TestFileNamesFollowKubeconformLayout(t *testing.T) {
	for _, c := range []struct{ group, version, kind, want string }{
		{"apps", "v1", "Deployment", "deployment-apps-v1.json"},
		{"", "v1", "Service", "service-v1.json"},
		{"keda.sh", "v1alpha1", "ScaledObject", "scaledobject-keda-v1alpha1.json"},
		{"monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrule-monitoring-v1.json"},
		{"policy", "v1", "PodDisruptionBudget", "poddisruptionbudget-policy-v1.json"},
	} {
		if got := fileName(c.group, c.version, c.kind); got != c.want {
			t.Errorf("fileName(%q, %q, %q) = %q, want %q", c.group, c.version, c.kind, got, c.want)
		}
	}
}

func TestFromSwaggerMakesOneStandaloneSchemaPerKind(t *testing.T) {
	files, err := fromSwagger([]byte(swagger))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(files), []string{"deployment-apps-v1.json", "service-v1.json"}; !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v (no List kinds, no multi-kind definitions)", got, want)
	}
	d := files["deployment-apps-v1.json"]
	defs, _ := d["definitions"].(map[string]any)
	for _, want := range []string{"io.k8s.api.apps.v1.DeploymentSpec", "meta.ObjectMeta", "io.k8s.apimachinery.pkg.util.intstr.IntOrString"} {
		if defs[want] == nil {
			t.Errorf("definitions lack %s: %v", want, keys(defs))
		}
	}
	if defs["io.k8s.api.core.v1.Service"] != nil {
		t.Error("an unreferenced definition was embedded")
	}
	if d["additionalProperties"] != false {
		t.Error("root: additionalProperties not false")
	}
	if strings.Contains(mustJSON(t, d), "long text") || strings.Contains(mustJSON(t, d), "sibling ignored") {
		t.Error("descriptions kept")
	}
}

func TestGeneratedSchemasValidateLikeKubeconform(t *testing.T) {
	files, err := fromSwagger([]byte(swagger))
	if err != nil {
		t.Fatal(err)
	}
	crds, err := fromCRDs([]byte(crd))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(crds); !slices.Equal(got, []string{"scaledobject-keda-v1alpha1.json"}) {
		t.Fatalf("CRD files %v", got)
	}
	deploy := compile(t, files["deployment-apps-v1.json"])
	scaled := compile(t, crds["scaledobject-keda-v1alpha1.json"])
	for _, c := range []struct {
		name   string
		schema *jsonschema.Schema
		doc    string
		ok     bool
	}{
		{"valid", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":1,"maxSurge":"25%","memory":"1Gi","labels":{"a":"b"}}}`, true},
		{"int-or-string as int, quantity as number", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":1,"maxSurge":1,"memory":2}}`, true},
		{"optional field null", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":1,"paused":null}}`, true},
		{"misspelt field", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":1,"replica":2}}`, false},
		{"misspelt field in a referenced definition", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"nam":"x"},"spec":{"replicas":1}}`, false},
		{"missing required", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{}}`, false},
		{"required field null", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":null}}`, false},
		{"wrong type", deploy, `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":"one"}}`, false},
		{"wrong kind", deploy, `{"apiVersion":"apps/v1","kind":"StatefulSet","spec":{"replicas":1}}`, false},
		{"wrong apiVersion", deploy, `{"apiVersion":"apps/v1beta1","kind":"Deployment","spec":{"replicas":1}}`, false},
		{"CR valid", scaled, `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"s"},"spec":{"scaleTargetRef":{"name":"w"},"port":8222,"free":{"anything":1},"mode":"b"}}`, true},
		{"CR int-or-string as string", scaled, `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","spec":{"scaleTargetRef":{},"port":"http"}}`, true},
		{"CR misspelt field", scaled, `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","spec":{"scaleTargetRef":{"nmae":"w"}}}`, false},
		{"CR enum", scaled, `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","spec":{"scaleTargetRef":{},"mode":"c"}}`, false},
		{"CR unknown top-level field", scaled, `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","spec":{"scaleTargetRef":{}},"extra":1}`, false},
	} {
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		err = c.schema.Validate(doc)
		if (err == nil) != c.ok {
			t.Errorf("%s: valid=%v, want %v (%v)", c.name, err == nil, c.ok, err)
		}
	}
}

func TestRunWritesFilesAndRefusesEmptyInput(t *testing.T) {
	dir := t.TempDir()
	sw := filepath.Join(dir, "swagger.json")
	cr := filepath.Join(dir, "crd.yaml")
	if err := os.WriteFile(sw, []byte(swagger), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cr, []byte(crd), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	n, err := run(sw, []string{cr}, out)
	if err != nil || n != 3 {
		t.Fatalf("run: %d files, %v; want 3", n, err)
	}
	b, err := os.ReadFile(filepath.Join(out, "scaledobject-keda-v1alpha1.json"))
	if err != nil || !json.Valid(b) {
		t.Fatalf("written schema: %v", err)
	}
	if _, err := fromCRDs([]byte("kind: ConfigMap\n")); !errors.Is(err, ErrNoSchemas) {
		t.Errorf("no CRD: %v, want ErrNoSchemas", err)
	}
	if _, err := fromSwagger([]byte(`{"definitions":{}}`)); !errors.Is(err, ErrNoSchemas) {
		t.Errorf("no kinds: %v, want ErrNoSchemas", err)
	}
	if _, err := fromCRDs([]byte("a: [\n")); err == nil {
		t.Error("malformed YAML accepted")
	}
}

// compile compiles a schema as kubeconform does (draft 4 by default).
func compile(t *testing.T, s map[string]any) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(mustJSON(t, s)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource("file:///schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("file:///schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
