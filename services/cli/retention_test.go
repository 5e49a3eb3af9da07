package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/target"
)

// stack is a real embedded nats-server and two fs targets behind a configuration file, as
// the retention and rpo commands see them.
type stack struct {
	dir, cfgPath, policyPath string
	parts                    *config.Parts
	cfg                      *config.Config
}

const cliPolicy = `version: 1
tenant: acme
targets:
  - {name: a, kind: fs}
  - {name: b, kind: s3, offsite: true}
classes:
  critical:
    schedules:
      - {name: daily, cron: "0 2 * * *"}
    retention: {min: 2d, keep_last: 2}
    targets: [a, b]
    rpo: 48h
    rto: 48h
    override_321: "test policy"
  archive:
    schedules:
      - {name: weekly, cron: "0 3 * * 0"}
    retention: {min: 8d, weekly: 4}
    targets: [a, b]
    rpo: 8d
    rto: 72h
    override_321: "test policy"
`

func startStack(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: filepath.Join(dir, "js"), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s := &stack{dir: dir, cfgPath: filepath.Join(dir, "custos.yaml"), policyPath: filepath.Join(dir, "policy.yaml")}
	cfgYAML := fmt.Sprintf(`nats: {url: %q}
keys: {file: custos.key, create: true}
targets:
  - {name: a, kind: fs, path: %q}
  - {name: b, kind: fs, path: %q}
classes:
  critical: {targets: [a, b]}
  archive: {targets: [a, b]}
`, srv.ClientURL(), filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	for name, data := range map[string]string{s.cfgPath: cfgYAML, s.policyPath: cliPolicy} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if s.cfg, err = config.Load(s.cfgPath); err != nil {
		t.Fatal(err)
	}
	if s.parts, err = s.cfg.Open(t.Context(), "test", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.parts.Close() })
	return s
}

// commit writes a one-item pack of customer c-1 with its newest event at `at` to both targets
// and indexes it as committed a minute later.
func (s *stack) commit(t *testing.T, class string, seq uint64, at time.Time) string {
	t.Helper()
	id := fmt.Sprintf("item-%d", seq)
	built := pack.Build(class, []pack.Item{{ID: id, Customer: s.parts.KMS.Pseudonym("acme", "c-1"), Seq: seq,
		EventTime: at, Sealed: []byte(id)}})
	for _, tg := range s.parts.Targets {
		for name, data := range map[string][]byte{pack.ObjectName(built.Manifest.Pack): built.Data,
			pack.ManifestName(built.Manifest.Pack): []byte("manifest")} {
			if err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)),
				target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.parts.Index.Commit(t.Context(), built.Manifest, s.cfg.TargetNames([]string{"a", "b"}), at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return built.Manifest.Pack
}

func (s *stack) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("config", "custos.yaml", "configuration file")
	root.AddCommand(retentionCmd(), rpoCmd(), jobsCmd(), snapshotsCmd(), restoreCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--config", s.cfgPath))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func (s *stack) packs(t *testing.T) int {
	t.Helper()
	ps, err := s.parts.Index.Packs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}

func TestRetentionSweepAndRPO(t *testing.T) {
	s := startStack(t)
	now := time.Now()
	var ids []string
	for i := range 10 { // one pack a day, 10 days old to 1 day old
		ids = append(ids, s.commit(t, "critical", uint64(i+1), now.Add(-time.Duration(10-i)*24*time.Hour)))
	}

	out, err := s.run(t, "retention", "sweep", "--policy", s.policyPath, "--dry-run")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 12 || lines[11] != "packs=10 kept=2 would_delete=8 locked=0 failed=0 dry_run=true" {
		t.Fatalf("dry run output:\n%s", out)
	}
	if !strings.HasPrefix(lines[1], "keep    "+ids[9]+"  critical") || !strings.Contains(lines[1], "newest pack of class critical") ||
		!strings.HasPrefix(lines[3], "delete  "+ids[7]+"  critical") || !strings.Contains(lines[3], "would-delete  no keep rule applies") {
		t.Fatalf("dry run lines:\n%s", out)
	}
	if n := s.packs(t); n != 10 {
		t.Fatalf("dry run left %d packs, want 10", n)
	}

	out, err = s.run(t, "retention", "sweep", "--policy", s.policyPath)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.HasSuffix(out, "packs=10 kept=2 deleted=8 locked=0 failed=0 dry_run=false\n") {
		t.Fatalf("sweep output:\n%s", out)
	}
	if n := s.packs(t); n != 2 {
		t.Fatalf("sweep left %d packs, want 2", n)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "a", filepath.FromSlash(pack.ObjectName(ids[0])))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("expired pack object still on disk: %v", err)
	}

	// critical's newest backup is a day old (RPO 48h); archive has none.
	out, err = s.run(t, "rpo", "--policy", s.policyPath)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("rpo with a breach: err %v\n%s", err, out)
	}
	want := "CLASS     NEWEST BACKUP AGE  RPO  STATUS\n" +
		"critical  23h59m             2d   OK\n" +
		"archive   none               8d   BREACH\n"
	if out != want {
		t.Fatalf("rpo output:\n%s\nwant:\n%s", out, want)
	}

	out, err = s.run(t, "rpo", "--policy", s.policyPath, "--tenant", "acme", "--customer", "c-1")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pseudo := s.parts.KMS.Pseudonym("acme", "c-1")
	if !strings.HasPrefix(out, "customer "+pseudo+"\n") || !strings.Contains(out, "critical  23h59m") || strings.Contains(out, "c-1") {
		t.Fatalf("customer rpo output:\n%s", out)
	}
	if _, err := s.run(t, "retention", "sweep"); err == nil {
		t.Fatal("sweep without --policy ran")
	}
}
