package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
)

// testPolicy is a small valid policy: critical is locked in compliance mode on two S3 copies
// (one off-site) beside a local disk, 3-2-1; scratch keeps one unlocked copy by override.
const testPolicy = `version: 1
tenant: acme
targets:
  - name: primary
    kind: fs
  - name: secondary
    kind: s3
  - name: offsite
    kind: s3
    offsite: true
classes:
  critical:
    schedules:
      - name: daily
        cron: "0 2 * * *"
        method: incremental
    retention:
      min: 30d
      daily: 30
    targets: [primary, secondary, offsite]
    replicas: 2
    immutability:
      mode: compliance
      retain_days: 30
    rpo: 48h
    rto: 48h
  scratch:
    schedules:
      - name: daily
        cron: "0 3 * * *"
        method: full
    retention:
      min: 7d
      daily: 7
    targets: [primary]
    override_321: "recreated from the source at will"
    rpo: 48h
    rto: 96h
`

// runtimeTargets wires the policy's targets: a disk and two locking S3 buckets.
const runtimeTargets = `
nats: {url: "nats://127.0.0.1:4222"}
keys: {file: custos.key}
policy: policy.yaml
targets:
  - {name: primary, kind: fs, path: data}
  - {name: secondary, kind: s3, bucket: b1, lock_mode: COMPLIANCE}
  - {name: offsite, kind: s3, bucket: b2, lock_mode: COMPLIANCE}
`

// loadWithPolicy writes the policy and the configuration side by side and loads the latter.
func loadWithPolicy(t *testing.T, pol, cfg string) (*config.Config, error) {
	t.Helper()
	path := writeConfig(t, cfg)
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "policy.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(path)
}

// The policy defines the classes: a runtime configuration that only wires targets gets every
// class with the policy's targets, replicas and lock time.
func TestPolicyDefinesClasses(t *testing.T) {
	c, err := loadWithPolicy(t, testPolicy, runtimeTargets)
	if err != nil {
		t.Fatal(err)
	}
	if !c.PolicyFromFile() || c.Policy().Class("critical") == nil {
		t.Fatal("the policy file is not the policy in force")
	}
	crit := c.Classes["critical"]
	if !slices.Equal(crit.Targets, []string{"primary", "secondary", "offsite"}) || crit.MinReplicas != 2 || crit.Retain != 30*24*time.Hour {
		t.Errorf("critical = %+v, want the policy's targets, 2 replicas and 30 days locked", crit)
	}
	if s := c.Classes["scratch"]; !slices.Equal(s.Targets, []string{"primary"}) || s.Retain != 0 || s.MinReplicas != 1 {
		t.Errorf("scratch = %+v, want one unlocked target", s)
	}
}

// Wiring that would run a class against its policy is refused, and the error names the policy
// file and line of what it breaks.
func TestPolicyRefusesViolatingWiring(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  string
		want []string
	}{
		"fewer targets than the policy's 3-2-1": {
			cfg:  runtimeTargets + "classes:\n  critical:\n    targets: [primary, secondary]\n",
			want: []string{"policy.yaml:12:", `class "critical"`, "[primary, secondary]", "[primary, secondary, offsite]"},
		},
		"a policy target not wired": {
			cfg:  strings.Replace(runtimeTargets, "  - {name: offsite, kind: s3, bucket: b2, lock_mode: COMPLIANCE}\n", "", 1),
			want: []string{"policy.yaml:12:", `needs target "offsite" (policy line 8)`},
		},
		"missing immutability": {
			cfg:  strings.Replace(runtimeTargets, "bucket: b2, lock_mode: COMPLIANCE", "bucket: b2", 1),
			want: []string{"policy.yaml:12:", "compliance immutability", `target "offsite" (s3) has no lock_mode`},
		},
		"governance lock where compliance is required": {
			cfg:  strings.Replace(runtimeTargets, "bucket: b1, lock_mode: COMPLIANCE", "bucket: b1, lock_mode: GOVERNANCE", 1),
			want: []string{"policy.yaml:12:", `target "secondary" locks in GOVERNANCE mode`},
		},
		"another kind of storage": {
			cfg:  strings.Replace(runtimeTargets, "{name: secondary, kind: s3, bucket: b1, lock_mode: COMPLIANCE}", "{name: secondary, kind: fs, path: d2}", 1),
			want: []string{"policy.yaml:6:", `target "secondary" is of kind s3 in the policy but fs`},
		},
		"fewer replicas": {
			cfg:  runtimeTargets + "classes:\n  critical:\n    min_replicas: 1\n",
			want: []string{"policy.yaml:12:", "min_replicas 1", "replicas 2"},
		},
		"shorter lock": {
			cfg:  runtimeTargets + "classes:\n  critical:\n    retain: 24h\n",
			want: []string{"policy.yaml:12:", "retain 24h0m0s", "retain_days 30"},
		},
		"a class the policy does not define": {
			cfg:  runtimeTargets + "classes:\n  extra:\n    targets: [primary]\n",
			want: []string{"classes.extra", `policy.yaml has no class "extra"`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadWithPolicy(t, testPolicy, tc.cfg)
			if err == nil {
				t.Fatal("Load accepted wiring that breaks the policy")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// Values the runtime configuration repeats or strengthens are accepted: a source and more
// replicas or a longer lock than the policy asks for.
func TestPolicyAcceptsStrongerWiring(t *testing.T) {
	c, err := loadWithPolicy(t, testPolicy, runtimeTargets+
		"classes:\n  critical:\n    targets: [offsite, primary, secondary]\n    min_replicas: 3\n    retain: 1000h\n")
	if err != nil {
		t.Fatal(err)
	}
	if cl := c.Classes["critical"]; cl.MinReplicas != 3 || cl.Retain != 1000*time.Hour {
		t.Errorf("critical = %+v, want min_replicas 3 and retain 1000h kept", cl)
	}
}

// A policy file that does not parse stops the load with the policy's own error.
func TestPolicyFileErrors(t *testing.T) {
	_, err := loadWithPolicy(t, "version: 2\n", runtimeTargets)
	if err == nil || !strings.Contains(err.Error(), "policy.yaml:1") {
		t.Errorf("Load = %v, want the policy's error with its line", err)
	}
	_, err = config.Load(writeConfig(t, runtimeTargets))
	if err == nil || !strings.Contains(err.Error(), "policy") {
		t.Errorf("Load with a missing policy file = %v, want an error naming it", err)
	}
}
