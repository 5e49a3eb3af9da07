package config_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/registry"
)

// probeKind is registered once for the package's tests: it records the specs it sees and
// opens a memory target named after the spec.
var probeKind = struct {
	once  sync.Once
	mu    sync.Mutex
	specs []registry.Spec
}{}

func registerProbe() {
	probeKind.once.Do(func() {
		registry.Register("probe", registry.Kind{
			Validate: func(s registry.Spec) error {
				if s.Options["region"] == "" {
					return errors.New("options.region is required for kind probe")
				}
				return nil
			},
			Open: func(_ context.Context, s registry.Spec) (target.Target, error) {
				probeKind.mu.Lock()
				probeKind.specs = append(probeKind.specs, s)
				probeKind.mu.Unlock()
				return probeTarget{mem.New(), s.Kind, s.Kind + ":" + s.Name}, nil
			},
		})
	})
}

// probeTarget is a memory target that answers Name and Kind as a registered kind must.
type probeTarget struct {
	*mem.Target
	kind, name string
}

func (p probeTarget) Name() string { return p.name }
func (p probeTarget) Kind() string { return p.kind }

// A registered kind validates its own settings at Load and is opened through the registry
// with the configuration's settings, wrapped like any other target.
func TestRegisteredKind(t *testing.T) {
	t.Parallel()
	registerProbe()
	c, dir := load(t, `
nats: {url: u}
keys: {file: k}
targets:
  - name: remote
    kind: probe
    provider: variant
    path: /srv/custos
    options: {region: north, port: 2222, fast: true, secrets_file: remote.secrets}
classes: {critical: {targets: [remote]}}
`)
	want := map[string]string{"region": "north", "port": "2222", "fast": "true", "secrets_file": "remote.secrets"}
	if got := c.Targets[0].Options.Map(); !mapsEqual(got, want) {
		t.Fatalf("options %v, want %v", got, want)
	}
	if c.Targets[0].Options != config.NewOptions(want) {
		t.Error("options that hold the same settings compare unequal")
	}
	ts, err := c.OpenTargets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, ts)
	if ts[0].Name() != "probe:remote" || ts[0].Kind() != "probe" {
		t.Fatalf("target %s of kind %s", ts[0].Name(), ts[0].Kind())
	}
	probeKind.mu.Lock()
	defer probeKind.mu.Unlock()
	var s registry.Spec
	for _, got := range probeKind.specs {
		if got.Name == "remote" {
			s = got
		}
	}
	if s.Kind != "probe" || s.Provider != "variant" || s.Path != "/srv/custos" || !mapsEqual(s.Options, want) {
		t.Fatalf("spec %+v", s)
	}
	if got := s.ResolvePath("remote.secrets"); got != filepath.Join(dir, "remote.secrets") {
		t.Errorf("ResolvePath = %s, want it next to the configuration file", got)
	}
}

func TestRegisteredKindErrors(t *testing.T) {
	t.Parallel()
	registerProbe()
	const valid = "nats: {url: u}\nkeys: {file: k}\ntargets: [{name: a, kind: probe, options: {region: r}}]\nclasses: {critical: {targets: [a]}}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"kind's own check", strings.Replace(valid, "{region: r}", "{zone: r}", 1), `targets[0] "a": options.region is required for kind probe`},
		{"options not a mapping", strings.Replace(valid, "{region: r}", "[region]", 1), "options: want a mapping"},
		{"nested options", strings.Replace(valid, "{region: r}", "{region: {a: b}}", 1), "options: want a mapping"},
		{"unknown kind names the registered ones", strings.Replace(valid, "kind: probe", "kind: s4", 1), `unknown kind "s4" (supported: fs, s3, gcs, azure, probe, rclone)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(writeConfig(t, tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error holding %q", err, tc.want)
			}
		})
	}
}

// An optional kind that this binary does not link (rclone here: pkg never imports it) loads,
// so that every program can read the same file, but opening it fails at once with a
// permanent error that names the module to import.
func TestOptionalKindNotLinked(t *testing.T) {
	t.Parallel()
	c, _ := load(t, `
nats: {url: u}
keys: {file: k}
targets: [{name: far, kind: rclone, provider: sftp, options: {host: h}}]
classes: {critical: {targets: [far]}}
`)
	ts, err := c.OpenTargets(t.Context())
	if err == nil {
		closeAll(t, ts)
		t.Fatal("OpenTargets opened a kind this binary does not link")
	}
	if !errors.Is(err, target.ErrPermanent) || !strings.Contains(err.Error(), "github.com/custos-dev/custos/pkg/target/rclone") {
		t.Fatalf("OpenTargets = %v, want a permanent error naming the module", err)
	}
}

func TestOptionsYAML(t *testing.T) {
	t.Parallel()
	o := config.NewOptions(map[string]string{"b": "2", "a": "1"})
	out, err := yaml.Marshal(struct {
		Options config.Options `yaml:"options"`
	}{o})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "options:\n    a: \"1\"\n    b: \"2\"\n" {
		t.Errorf("marshalled %q", out)
	}
	if config.NewOptions(nil) != (config.Options{}) || config.NewOptions(nil).Map() != nil {
		t.Error("empty options are not the zero value")
	}
	m := o.Map()
	m["a"] = "changed"
	if o.Map()["a"] != "1" {
		t.Error("Map returned the options' own storage")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
