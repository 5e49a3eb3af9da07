package main

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/pkg/erasure"
)

// An identity made by "erase identity new" is trusted by pasting the printed entry into the
// erasure policy, and its requests then authenticate; the file is private and never overwritten.
func TestEraseIdentityNew(t *testing.T) {
	s := &stack{cfgPath: filepath.Join(t.TempDir(), "unused.yaml")}
	file := filepath.Join(t.TempDir(), "dpo.key")
	out, _, code := s.runCaptured(t, eraseCmd(), "erase", "identity", "new", "--name", "dpo", "--out", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, mode %v; want 0600", err, fi.Mode())
	}
	var p erasure.Policy
	entry := out[strings.Index(out, "- name:"):]
	if err := yaml.Unmarshal([]byte("requesters:\n"+entry), &p); err != nil || p.Validate() != nil || len(p.Requesters) != 1 {
		t.Fatalf("printed entry %q does not make a valid policy: %v", entry, err)
	}
	key, err := readIdentity(file)
	if err != nil {
		t.Fatal(err)
	}
	f := erasure.RequestFields{EventID: "e1", Tenant: "acme", CustomerID: "c-1", RequestedBy: "dpo", Time: time.Now()}
	hdr := nats.Header{}
	erasure.SignRequest(hdr, f, "dpo", key)
	if ok, err := p.Authenticate(hdr, f); err != nil || !ok {
		t.Fatalf("a request signed by the new identity: %v, %v", ok, err)
	}
	f.CustomerID = "c-2" // the signature covers the customer
	if _, err := p.Authenticate(hdr, f); err == nil {
		t.Fatal("a signature for another customer authenticated")
	}
	_, other, _ := ed25519.GenerateKey(nil)
	erasure.SignRequest(hdr, f, "dpo", other)
	if _, err := p.Authenticate(hdr, f); err == nil {
		t.Fatal("a signature by another key authenticated")
	}
	if _, _, err := func() (string, string, error) {
		root := eraseCmd()
		root.SetArgs([]string{"identity", "new", "--name", "dpo", "--out", file})
		root.SilenceErrors, root.SilenceUsage = true, true
		return "", "", root.Execute()
	}(); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("second identity into the same file: %v", err)
	}
}
