package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// findManifests returns, relative to root, every YAML file under deploy/ with at least one
// document that has a string apiVersion and kind: a Kubernetes object for kubeconform. Folders
// holding a Chart.yaml are skipped (the chart is rendered and validated as a whole), and so are
// node_modules. A file that does not parse as YAML is an error: nothing may slip past unchecked.
func findManifests(root string) ([]string, error) {
	var out []string
	base := filepath.Join(root, "deploy")
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "node_modules" || d.Name() == ".git" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "Chart.yaml")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		k8s, err := holdsObject(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if k8s {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

func holdsObject(b []byte) (bool, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	found := false
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return found, nil
		}
		if err != nil {
			return false, err
		}
		m, ok := doc.(map[string]any)
		if !ok {
			continue
		}
		api, _ := m["apiVersion"].(string)
		kind, _ := m["kind"].(string)
		if strings.TrimSpace(api) != "" && strings.TrimSpace(kind) != "" {
			found = true
		}
	}
}
