// Command schemagen writes the JSON schemas kubeconform validates Kubernetes objects against, from
// sources the Go module proxy serves, so `make k8s-check` needs no network but the proxy.
//
// kubeconform normally downloads its schemas from GitHub (yannh/kubernetes-json-schema). This
// builds the same "standalone-strict" flavour locally:
//
//   - built-in kinds from the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json of
//     the k8s.io/kubernetes module): one file per group-version-kind, holding the kind's
//     definition with every definition it reaches under "definitions" (local $refs, so recursive
//     types cost nothing);
//   - custom resources from CustomResourceDefinition YAML files (KEDA, prometheus-operator): one
//     file per served version, from its openAPIV3Schema.
//
// As in openapi2jsonschema --strict, every object schema that lists properties gets
// additionalProperties: false (a misspelt field fails), IntOrString and Quantity accept a
// string or a number, and an optional field with a scalar type also accepts null. Descriptions
// are dropped: they are most of the size and kubeconform does not print them.
//
// Files are named as kubeconform's default layout expects, inside -out:
// {kind}-{first label of the group}-{version}.json, lower case (deployment-apps-v1.json,
// service-v1.json, scaledobject-keda-v1alpha1.json); run kubeconform with
// -schema-location OUT/{{ .ResourceKind }}{{ .KindSuffix }}.json -strict.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

func main() {
	swagger := flag.String("swagger", "", "the Kubernetes OpenAPI v2 document (swagger.json)")
	out := flag.String("out", "", "folder to write the schemas into (created)")
	flag.Parse()
	if *swagger == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: schemagen -swagger swagger.json -out DIR [CRD.yaml ...]")
		os.Exit(2)
	}
	n, err := run(*swagger, flag.Args(), *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "schemagen: wrote %d schemas to %s\n", n, *out)
}

// ErrNoSchemas means an input held nothing to make a schema of.
var ErrNoSchemas = errors.New("no schemas found")

func run(swaggerPath string, crdPaths []string, out string) (int, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(swaggerPath)
	if err != nil {
		return 0, err
	}
	files, err := fromSwagger(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", swaggerPath, err)
	}
	for _, p := range crdPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		crds, err := fromCRDs(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
		for name, s := range crds {
			files[name] = s
		}
	}
	for name, s := range files {
		js, err := json.Marshal(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(out, name), js, 0o644); err != nil {
			return 0, err
		}
	}
	return len(files), nil
}

// fileName is kubeconform's default name for a kind's schema (registry.schemaPath):
// "{kind}-{group's first label}-{version}.json", or "{kind}-{version}.json" for the core group.
func fileName(group, version, kind string) string {
	suffix := "-" + version
	if group != "" {
		suffix = "-" + strings.Split(group, ".")[0] + "-" + version
	}
	return strings.ToLower(kind + suffix + ".json")
}

const defPrefix = "#/definitions/"

// Definitions that are not what their OpenAPI type says on the wire.
var special = map[string]map[string]any{
	"io.k8s.apimachinery.pkg.util.intstr.IntOrString": intOrString(),
	"io.k8s.apimachinery.pkg.api.resource.Quantity":   {"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}},
}

func intOrString() map[string]any {
	return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
}

// fromSwagger makes one schema per group-version-kind of the OpenAPI v2 document. List kinds are
// left out: nobody writes them in a manifest.
func fromSwagger(b []byte) (map[string]map[string]any, error) {
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	defs := map[string]map[string]any{}
	for name, d := range doc.Definitions {
		if s, ok := special[name]; ok {
			defs[name] = s
			continue
		}
		defs[name] = strictify(d).(map[string]any)
	}
	files := map[string]map[string]any{}
	for name, d := range doc.Definitions {
		gvks, _ := d["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) != 1 { // several: DeleteOptions, WatchEvent and the like, never a manifest
			continue
		}
		gvk, _ := gvks[0].(map[string]any)
		group, _ := gvk["group"].(string)
		version, _ := gvk["version"].(string)
		kind, _ := gvk["kind"].(string)
		if kind == "" || version == "" || strings.HasSuffix(kind, "List") {
			continue
		}
		apiVersion := version
		if group != "" {
			apiVersion = group + "/" + version
		}
		root := clone(defs[name])
		props, _ := root["properties"].(map[string]any)
		if props == nil {
			continue
		}
		// The kind and apiVersion are what chose this file; say so, so a wrong one reads clearly.
		props["kind"] = map[string]any{"type": "string", "enum": []any{kind}}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
		reach := map[string]map[string]any{}
		collect(root, defs, reach)
		if len(reach) > 0 {
			defsOut := make(map[string]any, len(reach))
			for n, d := range reach {
				defsOut[n] = d
			}
			root["definitions"] = defsOut
		}
		root["$schema"] = "http://json-schema.org/draft-04/schema#"
		files[fileName(group, version, kind)] = root
	}
	if len(files) == 0 {
		return nil, ErrNoSchemas
	}
	return files, nil
}

// collect adds to reach every definition v refers to, transitively.
func collect(v any, defs, reach map[string]map[string]any) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if k != "$ref" {
				collect(x, defs, reach)
				continue
			}
			ref, _ := x.(string)
			name, ok := strings.CutPrefix(ref, defPrefix)
			if !ok || reach[name] != nil {
				continue
			}
			d, ok := defs[name]
			if !ok {
				continue // the compiler reports the dangling reference
			}
			reach[name] = d
			collect(d, defs, reach)
		}
	case []any:
		for _, x := range t {
			collect(x, defs, reach)
		}
	}
}

// fromCRDs makes one schema per version of every CustomResourceDefinition in a YAML stream.
func fromCRDs(b []byte) (map[string]map[string]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	files := map[string]map[string]any{}
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if doc["kind"] != "CustomResourceDefinition" {
			continue
		}
		var crd struct {
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Schema struct {
						OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		js, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(js, &crd); err != nil {
			return nil, err
		}
		for _, v := range crd.Spec.Versions {
			if v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			s := strictify(v.Schema.OpenAPIV3Schema).(map[string]any)
			if props, _ := s["properties"].(map[string]any); props != nil {
				props["kind"] = map[string]any{"type": "string", "enum": []any{crd.Spec.Names.Kind}}
				props["apiVersion"] = map[string]any{"type": "string", "enum": []any{crd.Spec.Group + "/" + v.Name}}
			}
			s["$schema"] = "http://json-schema.org/draft-04/schema#"
			files[fileName(crd.Spec.Group, v.Name, crd.Spec.Names.Kind)] = s
		}
	}
	if len(files) == 0 {
		return nil, ErrNoSchemas
	}
	return files, nil
}

// strictify returns a copy of an OpenAPI schema node as a draft-4 JSON schema for strict
// validation.
func strictify(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if ref, ok := t["$ref"]; ok { // draft 4 ignores a $ref's siblings: keep only the reference
			return map[string]any{"$ref": ref}
		}
		if t["format"] == "int-or-string" || t["x-kubernetes-int-or-string"] == true {
			return intOrString()
		}
		out := map[string]any{}
		for k, x := range t {
			switch {
			case k == "description", strings.HasPrefix(k, "x-kubernetes-"), k == "nullable":
				continue
			case k == "default", k == "example", k == "enum": // data, not schemas
				out[k] = x
			case k == "properties":
				props := map[string]any{}
				for name, p := range x.(map[string]any) {
					props[name] = strictify(p)
				}
				out[k] = props
			default:
				out[k] = strictify(x)
			}
		}
		if t["nullable"] == true {
			allowNull(out)
		}
		if props, ok := out["properties"].(map[string]any); ok {
			if _, set := t["additionalProperties"]; !set && t["x-kubernetes-preserve-unknown-fields"] != true {
				out["additionalProperties"] = false
			}
			required := map[string]bool{}
			if rs, ok := t["required"].([]any); ok {
				for _, r := range rs {
					if s, ok := r.(string); ok {
						required[s] = true
					}
				}
			}
			for name, p := range props {
				if pm, ok := p.(map[string]any); ok && !required[name] {
					allowNull(pm)
				}
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = strictify(x)
		}
		return out
	default:
		return v
	}
}

// allowNull widens a scalar "type" to also accept null: the API server takes null for an unset
// optional field, and kubeconform's published schemas do the same.
func allowNull(s map[string]any) {
	typ, ok := s["type"].(string)
	if !ok || typ == "null" {
		return
	}
	s["type"] = []any{typ, "null"}
	if enum, ok := s["enum"].([]any); ok {
		s["enum"] = append(append([]any{}, enum...), nil)
	}
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// names lists the files fromSwagger or fromCRDs made, sorted (for tests and messages).
func names(files map[string]map[string]any) []string {
	out := make([]string, 0, len(files))
	for n := range files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
