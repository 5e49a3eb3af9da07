package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writeConfig writes a configuration file into a fresh directory and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "custos.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const full = `
nats:
  url: nats://127.0.0.1:4222
  creds_file: secrets/custos.creds
keys:
  file: keys/custos.key
  create: true
targets:
  - name: primary
    kind: fs
    path: data/primary
    concurrency: 4
    attempts: 3
  - name: offsite
    kind: fs
    path: /srv/custos/offsite
classes:
  critical:
    targets: [primary, offsite]
  important:
    targets: [primary]
worker:
  max_in_flight: 512
  pack_max_bytes: 8388608
  pack_max_items: 1000
  pack_max_delay: 250ms
  ack_wait: 30s
  max_deliver: 7
  max_inline_bytes: 262144
  spool_dir: spool
  drain_timeout: 1m30s
telemetry:
  exporter: otlp-grpc
  endpoint: localhost:4317
`

func TestLoad(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, full)
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS != (config.NATS{URL: "nats://127.0.0.1:4222", CredsFile: "secrets/custos.creds"}) {
		t.Errorf("nats %+v", c.NATS)
	}
	if c.Keys != (config.Keys{File: "keys/custos.key", Create: true}) {
		t.Errorf("keys %+v", c.Keys)
	}
	wantTargets := []config.Target{
		{Name: "primary", Kind: "fs", Path: "data/primary", Concurrency: 4, Attempts: 3},
		{Name: "offsite", Kind: "fs", Path: "/srv/custos/offsite"},
	}
	if !slices.Equal(c.Targets, wantTargets) {
		t.Errorf("targets %+v", c.Targets)
	}
	if len(c.Classes) != 2 || !slices.Equal(c.Classes["critical"].Targets, []string{"primary", "offsite"}) ||
		!slices.Equal(c.Classes["important"].Targets, []string{"primary"}) {
		t.Errorf("classes %+v", c.Classes)
	}
	wantWorker := config.Worker{MaxInFlight: 512, PackMaxBytes: 8 << 20, PackMaxItems: 1000, PackMaxDelay: 250 * time.Millisecond,
		AckWait: 30 * time.Second, MaxDeliver: 7, MaxInlineBytes: 256 << 10, SpoolDir: "spool", DrainTimeout: 90 * time.Second}
	if c.Worker != wantWorker {
		t.Errorf("worker %+v", c.Worker)
	}
	if c.Telemetry != (config.Telemetry{Exporter: "otlp-grpc", Endpoint: "localhost:4317"}) {
		t.Errorf("telemetry %+v", c.Telemetry)
	}
	if got := c.TargetNames([]string{"offsite", "primary", "unknown"}); !slices.Equal(got, []string{"fs:offsite", "fs:primary", ""}) {
		t.Errorf("TargetNames = %q", got)
	}
}

// Paths in the file are relative to the file, wherever the program runs.
func TestPathRelativeToConfigFile(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, full)
	dir := filepath.Dir(path)
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{c.Keys.File, filepath.Join(dir, "keys", "custos.key")},
		{c.NATS.CredsFile, filepath.Join(dir, "secrets", "custos.creds")},
		{c.Worker.SpoolDir, filepath.Join(dir, "spool")},
		{"../shared/key", filepath.Join(filepath.Dir(dir), "shared", "key")},
		{"/srv/custos/offsite", "/srv/custos/offsite"},
		{"", ""},
	} {
		if got := c.Path(tc.in); got != tc.want {
			t.Errorf("Path(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A configuration named by a relative path resolves against the working directory once.
func TestPathRelativeConfigName(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "custos.yaml"), []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	c, err := config.Load(filepath.Join("etc", "custos.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Path("keys/custos.key"); got != filepath.Join("etc", "keys", "custos.key") {
		t.Fatalf("Path = %q", got)
	}
}

// Only what is required must be written; everything else keeps its zero value, which the
// worker and OpenTargets turn into their defaults.
func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(writeConfig(t, `
nats: {url: "nats://localhost:4222"}
keys: {file: custos.key}
targets: [{name: a, kind: fs, path: a}]
classes: {critical: {targets: [a]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Keys.Create || c.NATS.CredsFile != "" || c.Worker != (config.Worker{}) || c.Telemetry != (config.Telemetry{}) {
		t.Fatalf("defaults %+v", c)
	}
	if tg := c.Targets[0]; tg.Concurrency != 0 || tg.Attempts != 0 {
		t.Fatalf("target defaults %+v", tg)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	const valid = "nats: {url: u}\nkeys: {file: k}\ntargets: [{name: a, kind: fs, path: p}]\nclasses: {critical: {targets: [a]}}\n"
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings the error must hold
	}{
		{"empty file", "", []string{"nats.url is required", "keys.file is required", "classes: at least one"}},
		{"comments only", "# nothing yet\n", []string{"nats.url is required"}},
		{"not YAML", "nats: [url: \n", []string{"yaml"}},
		{"unknown section", valid + "natss: {url: u}\n", []string{"natss"}},
		{"unknown field", strings.Replace(valid, "path: p", "pth: p", 1), []string{"pth"}},
		{"number expected", valid + "worker: {max_in_flight: many}\n", []string{"line 5", "many"}},
		{"duration expected", valid + "worker: {pack_max_delay: soon}\n", []string{"line 5", "soon"}},
		{"no nats url", strings.Replace(valid, "url: u", "url: ''", 1), []string{"nats.url is required"}},
		{"no key file", strings.Replace(valid, "file: k", "file: ''", 1), []string{"keys.file is required"}},
		{"target without name", strings.Replace(valid, "name: a, ", "", 1), []string{"targets[0]: name is required"}},
		{"duplicate target", strings.Replace(valid, "targets: [{name: a, kind: fs, path: p}]", "targets: [{name: a, kind: fs, path: p}, {name: a, kind: fs, path: q}]", 1),
			[]string{`targets[1]: duplicate name "a"`}},
		{"unknown kind", strings.Replace(valid, "kind: fs", "kind: s4", 1), []string{`targets[0] "a": unknown kind "s4"`}},
		{"fs without path", strings.Replace(valid, ", path: p", "", 1), []string{`targets[0] "a": path is required for kind fs`}},
		{"no classes", strings.Replace(valid, "classes: {critical: {targets: [a]}}", "", 1), []string{"classes: at least one data class is required"}},
		{"class without targets", strings.Replace(valid, "targets: [a]", "targets: []", 1), []string{"classes.critical: no targets"}},
		{"class with unknown target", strings.Replace(valid, "targets: [a]", "targets: [a, z]", 1), []string{`classes.critical: unknown target "z"`}},
		{"every problem at once", "targets: [{kind: s4}]\nclasses: {c: {targets: [x]}}\n",
			[]string{"nats.url is required", "keys.file is required", "targets[0]: name is required", `unknown kind "s4"`, `classes.c: unknown target "x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.yaml)
			c, err := config.Load(path)
			if err == nil {
				t.Fatalf("Load accepted %q: %+v", tc.yaml, c)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestValidateZero(t *testing.T) {
	t.Parallel()
	var c config.Config
	if err := c.Validate(); err == nil {
		t.Fatal("the zero Config is valid")
	}
}
