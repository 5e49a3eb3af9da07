package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/repository"
)

// Restores, retention sweeps and key rotations through the CLI are entries of the audit log; a
// restore with no broker says it is not recorded. The log with these entries checkpoints and
// verifies, and an edit of one of them in a target is named.
func TestCLIActionsAudited(t *testing.T) {
	s := startStack(t)
	s.writePack(t, 1)
	pseudo := s.parts.KMS.Pseudonym("acme", "c-1")
	entries := func() []audit.Entry {
		t.Helper()
		nc, js, err := connectNATS(s.cfg, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		es, err := audit.List(t.Context(), js, 0)
		if err != nil {
			t.Fatal(err)
		}
		return es
	}

	out, errOut, code := s.runCaptured(t, restoreCmd(), "restore", "--tenant", "acme", "--customer", "c-1", "--out", filepath.Join(s.dir, "r1"))
	if code != 0 || strings.Contains(errOut, "not recorded") {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = s.runCaptured(t, restoreCmd(), "restore", "--all", "--from-target", "a", "--out", filepath.Join(s.dir, "r2"))
	if code != 0 || !strings.Contains(errOut, "not recorded in the audit log") {
		t.Fatalf("restore --from-target: exit %d\n%s%s", code, out, errOut)
	}
	es := entries()
	if len(es) != 1 {
		t.Fatalf("%d entries after two restores (one offline), want 1: %+v", len(es), es)
	}
	r := es[0]
	if r.Kind != audit.KindRestore || r.Customer != pseudo || r.Count != 1 || len(r.Targets) != 2 || r.Outcome != audit.OutcomePassed ||
		r.Figures == nil || r.Figures.Items != 3 || r.Figures.Bytes != 3*3000 || r.Bytes != 3*3000 || r.Figures.ChecksumFailures != 0 {
		t.Fatalf("restore entry %+v %+v", r, r.Figures)
	}

	// Retention: 4 old packs, of which the sweep expires some.
	now := time.Now()
	for i := range 4 {
		s.commit(t, "critical", uint64(100+i), now.Add(-time.Duration(10-i)*24*time.Hour))
	}
	sweep, err := s.run(t, "retention", "sweep", "--policy", s.policyPath)
	if err != nil {
		t.Fatalf("%v\n%s", err, sweep)
	}
	m := regexp.MustCompile(` deleted=(\d+) `).FindStringSubmatch(sweep)
	if m == nil || m[1] == "0" {
		t.Fatalf("sweep output:\n%s", sweep)
	}
	deleted, _ := strconv.Atoi(m[1])

	// Key rotation and destruction of the retired KEK.
	s.parts.Close() // this process's key store predates the rotation
	out, errOut, code = s.runCaptured(t, keysCmd(), "keys", "rotate")
	if code != 0 {
		t.Fatalf("rotate: exit %d\n%s%s", code, out, errOut)
	}
	active := regexp.MustCompile(`active=(\S+) live=\d+ rewrapped=(\d+)`).FindStringSubmatch(out)
	if active == nil {
		t.Fatalf("rotate output:\n%s", out)
	}
	if out, errOut, code := s.runCaptured(t, keysCmd(), "keys", "destroy-retired"); code != 0 || !strings.Contains(out, "keys destroyed=1") {
		t.Fatalf("destroy-retired: exit %d\n%s%s", code, out, errOut)
	}

	es = entries()
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, e.Kind+"/"+e.Outcome)
	}
	want := []string{"restore/passed", "retention_expiry/expired", "key_rotation/rotated", "key_rotation/retired_destroyed"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("entries %v, want %v", kinds, want)
	}
	if e := es[1]; e.Class != "critical" || e.Count != int64(deleted) {
		t.Fatalf("retention entry %+v, want class critical and count %d", e, deleted)
	}
	if e := es[2]; e.Key != active[1] || strconv.FormatInt(e.Count, 10) != active[2] {
		t.Fatalf("rotation entry %+v, want key %s and %s data keys re-wrapped", e, active[1], active[2])
	}
	if e := es[3]; e.Key != active[1] || e.Count != 1 {
		t.Fatalf("destroy entry %+v", e)
	}

	// The log with these entries checkpoints and verifies; an edited entry in a target is named.
	if out, errOut, code := s.audit(t, "checkpoint"); code != 0 || !strings.Contains(out, "audit checkpoint size=4 ") {
		t.Fatalf("checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"verify"}, {"verify", "--from-target", "b", "--prove", "1"}} {
		if out, errOut, code := s.audit(t, args...); code != 0 || !strings.Contains(out, "audit verify entries=4 checkpoints=1 head=4 OK") {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	p := filepath.Join(s.dir, "b", filepath.FromSlash(repository.AuditEntriesName(0, 3)))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(b, []byte(`"retired_destroyed"`), []byte(`"rotated"`), 1)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := s.audit(t, "verify", "--from-target", "b"); code != 2 || !strings.Contains(out, "FAILED: entry 3: changed") {
		t.Fatalf("verify of the edited target: exit %d\n%s%s", code, out, errOut)
	}
}
