package rclone_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

// The SFTP server of the dev stack (the demo's SFTP replica) and the target lines it gives work
// through the runtime configuration: objects land in its data directory.
func TestDevstackSFTP(t *testing.T) {
	dir := t.TempDir()
	c, err := devstack.StartSFTP(t.Context(), filepath.Join(dir, "sftp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	yaml := "nats: {url: nats://127.0.0.1:4222}\nkeys: {file: k}\ntargets:\n  - name: sftp\n" + c.Target +
		"classes: {critical: {targets: [sftp]}}\n"
	path := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	ts, err := cfg.OpenTargets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ts[0].Close()
	data := targettest.Data(5, 10000)
	targettest.Put(t, ts[0], "packs/00/p", data)
	got, err := os.ReadFile(filepath.Join(dir, "sftp", "data", "packs", "00", "p"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object on the server's disk: %d bytes, %v", len(got), err)
	}
}
