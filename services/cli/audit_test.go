package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/repository"
)

func (s *stack) appendAudit(t *testing.T, from, n int) {
	t.Helper()
	log, err := audit.Open(t.Context(), s.parts.JS)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		err := log.Append(t.Context(), audit.Entry{Time: time.Date(2026, 11, 23, 12, 0, i, 0, time.UTC), Kind: audit.KindManual,
			EventID: fmt.Sprintf("m-%d", i), Class: "critical", Reason: "drill", RequestedBy: "alice@ops", Outcome: audit.OutcomeNoRecords})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (s *stack) audit(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return s.runCaptured(t, auditCmd(), append([]string{"audit"}, args...)...)
}

// custos audit checkpoint writes the entries and a signed checkpoint to every target; custos
// audit verify checks the log from the stream or from one target, proves entries, and names
// the first entry edited in a target or in the stream, exiting 2.
func TestAuditCheckpointAndVerify(t *testing.T) {
	s := startStack(t)
	if out, errOut, code := s.audit(t, "checkpoint"); code != 0 || !strings.Contains(out, "the log is empty") {
		t.Fatalf("checkpoint of an empty log: exit %d\n%s%s", code, out, errOut)
	}
	s.appendAudit(t, 0, 6)
	out, errOut, code := s.audit(t, "verify")
	if code != 0 || !strings.Contains(out, "audit verify entries=6 checkpoints=0 head=0 OK") || !strings.Contains(errOut, "no target holds a checkpoint") {
		t.Fatalf("verify before any checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = s.audit(t, "checkpoint")
	if code != 0 || !strings.Contains(out, "audit checkpoint size=6 ") || !strings.Contains(out, "targets=2 failures=0") {
		t.Fatalf("checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	vkey := regexp.MustCompile(`verifier key: (\S+)`).FindStringSubmatch(out)
	if vkey == nil {
		t.Fatalf("no verifier key in\n%s", out)
	}
	s.appendAudit(t, 6, 2)
	if out, errOut, code := s.audit(t, "checkpoint"); code != 0 || !strings.Contains(out, "audit checkpoint size=8 ") {
		t.Fatalf("second checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{
		{"verify"},
		{"verify", "--from-target", "b", "--prove", "0", "--prove", "7"},
		{"verify", "--from-target", "a", "--verifier-key", vkey[1], "--prove", "3"},
	} {
		out, errOut, code := s.audit(t, args...)
		if code != 0 || !strings.Contains(out, "audit verify entries=8 checkpoints=2 head=8 OK") {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		for i, a := range args {
			if a == "--prove" && !strings.Contains(out, "proof entry="+args[i+1]+" OK") {
				t.Fatalf("%v: no proof of entry %s\n%s", args, args[i+1], out)
			}
		}
	}
	// Another key's verifier rejects the checkpoints.
	otherKey, err := audit.VerifierKey(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := s.audit(t, "verify", "--verifier-key", otherKey); code != 2 || !strings.Contains(out, "FAILED: checkpoint fs:") {
		t.Fatalf("verify with another key: exit %d\n%s%s", code, out, errOut)
	}

	// Edit entry 3 in target a's export: verifying from a names it; the stream and b still verify.
	p := filepath.Join(s.dir, "a", filepath.FromSlash(repository.AuditEntriesName(0, 5)))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ls := bytes.Split(b, []byte("\n"))
	ls[3] = bytes.Replace(ls[3], []byte(`"drill"`), []byte(`"dril!"`), 1)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Join(ls, []byte("\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := s.audit(t, "verify", "--from-target", "a"); code != 2 || !strings.Contains(out, "FAILED: entry 3: changed") {
		t.Fatalf("verify from the edited target: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"verify"}, {"verify", "--from-target", "b"}} {
		if out, errOut, code := s.audit(t, args...); code != 0 {
			t.Fatalf("%v after editing target a: exit %d\n%s%s", args, code, out, errOut)
		}
	}

	// Rewrite the stream with entry 6 edited: verify names it, and no checkpoint is signed.
	ctx := context.Background()
	orig, err := audit.ReadEntries(ctx, s.parts.JS)
	if err != nil {
		t.Fatal(err)
	}
	orig[6] = bytes.Replace(orig[6], []byte(`"alice@ops"`), []byte(`"mallory@ops"`), 1)
	if err := s.parts.JS.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := s.parts.JS.CreateStream(ctx, jetstream.StreamConfig{Name: audit.StreamName, Subjects: []string{audit.SubjectPrefix + ">"}}); err != nil {
		t.Fatal(err)
	}
	for _, e := range orig {
		if _, err := s.parts.JS.Publish(ctx, audit.SubjectPrefix+audit.KindManual, e); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := s.audit(t, "verify"); code != 2 || !strings.Contains(out, "FAILED: entry 6: changed") {
		t.Fatalf("verify of the rewritten stream: exit %d\n%s%s", code, out, errOut)
	}
	before := readTree(t, filepath.Join(s.dir, "b"))
	if out, errOut, code := s.audit(t, "checkpoint"); code != 2 || !strings.Contains(out, "FAILED: entry 6") {
		t.Fatalf("checkpoint of the rewritten stream: exit %d\n%s%s", code, out, errOut)
	}
	if after := readTree(t, filepath.Join(s.dir, "b")); len(after) != len(before) {
		t.Fatalf("checkpoint of a log that does not verify wrote %d objects", len(after)-len(before))
	}
}
