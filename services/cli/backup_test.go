package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
)

func TestBackupNowRefusesIncompleteRequests(t *testing.T) {
	base := []string{"backup", "now", "--config", "does-not-matter.yaml", "--class", "critical", "--tenant", "t1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--requested-by", "alice@ops"}, "--reason is required"},
		{[]string{"--reason", "   ", "--requested-by", "alice@ops"}, "--reason is required"},
		{[]string{"--reason", "drill"}, "--requested-by is required"},
		{[]string{"--reason", "drill", "--requested-by", "alice@ops", "--file", "k=./x"}, "--file needs --customer"},
		{[]string{"--reason", "drill", "--requested-by", "alice@ops", "--customer", "c", "--file", "noequals"}, "give KEY=PATH"},
	} {
		out, err := execute(t, append(base, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
		if out != "" && !strings.Contains(out, "Usage") {
			t.Errorf("%v: printed %q, want no event id", tc.args, out)
		}
	}
}

// startNATS runs an embedded JetStream server for one test.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv.ClientURL()
}

// writeConfig writes a configuration with two local targets and one class.
func writeConfig(t *testing.T, url string) string {
	t.Helper()
	dir := t.TempDir()
	src := fmt.Sprintf(`nats:
  url: %s
keys:
  file: custos.key
  create: true
targets:
  - {name: a, kind: fs, path: %s}
  - {name: b, kind: fs, path: %s}
classes:
  critical: {targets: [a, b]}
worker:
  pack_max_delay: 20ms
`, url, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	path := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// workerStack runs a broker and a worker of class critical on two fs targets, and returns the
// config path, the parts the test reads through and the worker.
func workerStack(t *testing.T, ackWait time.Duration) (string, *config.Parts, *worker.Worker) {
	t.Helper()
	url := startNATS(t)
	cfgPath := writeConfig(t, url)
	ctx := context.Background()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := cfg.Open(ctx, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parts.Close() })
	w, err := worker.New(worker.Deps{JS: parts.JS, Keys: parts.Keys, Pseudonyms: parts.KMS, Index: parts.Index, Repairs: parts.Repairs},
		worker.Config{Classes: map[string]worker.Class{"critical": {Targets: cfg.TargetNames([]string{"a", "b"})}}, Targets: parts.Targets,
			PackMaxDelay: 20 * time.Millisecond, SpoolDir: t.TempDir(), AckWait: ackWait,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	return cfgPath, parts, w
}

// The command publishes a ManualRequest the worker accepts: the worker backs its files up (a
// small one inline, a large one through the object store) and writes one audit entry per
// request, naming the customer by pseudonym only; "custos audit" lists them.
func TestBackupNowBackedUpAndAudited(t *testing.T) {
	cfgPath, parts, w := workerStack(t, 2*time.Second)
	ctx := context.Background()

	files := t.TempDir()
	small := []byte(`{"plan":"gold"}`)
	large := bytes.Repeat([]byte("large export line\n"), 1000) // 18 kB, over --inline-limit
	for name, data := range map[string][]byte{"small.json": small, "large.txt": large} {
		if err := os.WriteFile(filepath.Join(files, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"backup", "now", "--config", cfgPath, "--class", "critical", "--tenant", "t1", "--customer", "c-0042",
		"--requested-by", "alice@ops"}
	out1, err := execute(t, append(common, "--reason", "restore drill", "--file", "profile="+filepath.Join(files, "small.json"))...)
	if err != nil {
		t.Fatal(err)
	}
	out2, err := execute(t, append(common, "--reason", "before export", "--inline-limit", "1024",
		"--file", "export="+filepath.Join(files, "large.txt"))...)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{strings.TrimSpace(out1), strings.TrimSpace(out2)}
	for _, id := range ids {
		if len(id) != 36 || strings.Count(id, "-") != 4 {
			t.Fatalf("printed %q, want an event id", id)
		}
	}

	var entries []audit.Entry
	deadline := time.Now().Add(30 * time.Second)
	for len(entries) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("audit holds %d entries, want 2; worker stats %+v", len(entries), w.Stats())
		}
		time.Sleep(50 * time.Millisecond)
		if entries, err = audit.List(ctx, parts.JS, 0); err != nil {
			t.Fatal(err)
		}
	}
	pseudo := parts.KMS.Pseudonym("t1", "c-0042")
	reasons := map[string]string{ids[0]: "restore drill", ids[1]: "before export"}
	for i, e := range entries { // in the order the worker finished them
		if e.Kind != audit.KindManual || e.Reason != reasons[e.EventID] || e.Customer != pseudo || e.RequestedBy != "alice@ops" ||
			e.Outcome != audit.OutcomeBackedUp || len(e.Packs) != 1 {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if st := w.Stats(); st.DeadLettered != 0 || st.Events != 2 {
		t.Fatalf("worker stats %+v", st)
	}

	readers := target.Readers(parts.Targets)
	r := &restore.Restorer{Index: parts.Index, Targets: readers, Keys: parts.Keys, Pseudonyms: parts.KMS}
	dir := t.TempDir()
	if rep, err := r.Customer(ctx, "t1", "c-0042", restore.Options{Out: dir}); err != nil || !rep.OK() || rep.Records != 2 {
		t.Fatalf("restore: %+v %v", rep, err)
	}
	for key, want := range map[string][]byte{"profile": small, "export": large} {
		if got, err := os.ReadFile(restore.Path(dir, "t1", "c-0042", key)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restored %s: %d bytes (%v), want %d", key, len(got), err, len(want))
		}
	}

	listing, err := execute(t, "audit", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(listing), "\n")
	if len(lines) != 3 || !strings.Contains(listing, pseudo) || !strings.Contains(listing, `"restore drill"`) ||
		!strings.Contains(listing, ids[1]) || strings.Contains(listing, "c-0042") {
		t.Fatalf("custos audit:\n%s", listing)
	}
}
