package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/policy"
)

// The demo's configuration and policy load together: the policy's classes and targets are
// what the workers run, both on local disks (3-2-1 accepted by override) and with the clouds
// (3-2-1 met).
func TestDemoPolicyMatchesItsWiring(t *testing.T) {
	clouds := []*devstack.Cloud{
		{Kind: "s3", Target: "    kind: s3\n    bucket: b\n    endpoint: http://127.0.0.1:1\n"},
		{Kind: "gcs", Target: "    kind: gcs\n    bucket: b\n    endpoint: http://127.0.0.1:2\n"},
		{Kind: "azure", Target: "    kind: azure\n    container: c\n    endpoint: http://127.0.0.1:3/a\n"},
		{Kind: "sftp", Target: "    kind: rclone\n    provider: sftp\n    path: /data\n    options:\n      host: 127.0.0.1\n      port: 4\n      user: u\n      key_file: /k\n      known_hosts_file: /h\n"},
	}
	for name, cs := range map[string][]*devstack.Cloud{"local": nil, "clouds": clouds} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			text, replicas := demoConfig("nats://127.0.0.1:4222", cs)
			if err := os.WriteFile(filepath.Join(dir, "custos.yaml"), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(demoPolicy(cs)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(filepath.Join(dir, "custos.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.Policy()
			if !slices.Equal(p.ClassNames(), []string{"critical", "important", "non_essential"}) {
				t.Errorf("classes %v", p.ClassNames())
			}
			if got := len(cfg.Classes["critical"].Targets); got != replicas {
				t.Errorf("critical has %d targets, want %d", got, replicas)
			}
			broken := false
			for _, w := range p.Warnings {
				broken = broken || w.Rule == policy.Rule321
			}
			if broken != (cs == nil) {
				t.Errorf("3-2-1 overridden = %v with clouds %v", broken, cs != nil)
			}
		})
	}
}
