package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

const (
	pseudo = "p0123456789abcdef0123456789abcdef"
	packA  = "0123456789abcdef0123456789abcdef"
)

func TestAppendList(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	if got, err := audit.List(ctx, ns.JS, 0); err != nil || len(got) != 0 {
		t.Fatalf("List before the stream exists = %v, %v", got, err)
	}
	log, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	entries := []audit.Entry{
		{Time: now, Kind: audit.KindManual, EventID: "m-1", Class: "critical", Reason: "before migration",
			RequestedBy: "ops@example.com", Outcome: audit.OutcomeNoRecords},
		{Time: now, Kind: audit.KindSuspicious, EventID: "s-1", Class: "critical", Customer: pseudo,
			Reason: "mass deletion", DetectedBy: "guard", Severity: "high", Outcome: audit.OutcomeBackedUp, Packs: []string{packA}},
	}
	for _, e := range entries {
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// A redelivered event's entry is stored once, even through another Log (another worker).
	other, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Append(ctx, entries[1]); err != nil {
		t.Fatal(err)
	}
	got, err := audit.List(ctx, ns.JS, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("List = %d entries, %v; want 2", len(got), err)
	}
	if got[1].Customer != pseudo || got[1].Packs[0] != packA || got[0].RequestedBy != "ops@example.com" ||
		got[0].Index != 0 || got[1].Index != 1 || got[1].V != audit.Version {
		t.Fatalf("entries %+v", got)
	}
	if last, _ := audit.List(ctx, ns.JS, 1); len(last) != 1 || last[0].EventID != "s-1" {
		t.Fatalf("List limit 1 = %+v", last)
	}
	// Another step of the same event, with another outcome, is stored.
	e := entries[1]
	e.Outcome = audit.OutcomeDeadLettered
	if err := other.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	raw, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil || len(raw) != 3 {
		t.Fatalf("ReadEntries = %d, %v", len(raw), err)
	}
	if rep, err := audit.Verify(raw, nil, nil); err != nil || rep.Entries != 3 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestAppendRefusesInvalidEntries(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	log, err := audit.Open(context.Background(), ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	base := audit.Entry{Time: time.Now(), Kind: audit.KindSuspicious, EventID: "s-1", Class: "critical",
		Reason: "r", DetectedBy: "d", Outcome: audit.OutcomeBackedUp}
	for name, mod := range map[string]func(*audit.Entry){
		"raw customer id":            func(e *audit.Entry) { e.Customer = "cust-0042" },
		"unknown kind":               func(e *audit.Entry) { e.Kind = "post_transaction" },
		"no event id":                func(e *audit.Entry) { e.EventID = "" },
		"no outcome":                 func(e *audit.Entry) { e.Outcome = "" },
		"raw id as a pack":           func(e *audit.Entry) { e.Packs = []string{"cust-0042"} },
		"raw id as a snapshot":       func(e *audit.Entry) { e.Snapshot = "cust-0042" },
		"erasure without customer":   func(e *audit.Entry) { e.Kind, e.Certificate = audit.KindErasure, "er-1" },
		"erasure without cert":       func(e *audit.Entry) { e.Kind, e.Customer = audit.KindErasure, pseudo },
		"erasure of a raw id":        func(e *audit.Entry) { e.Kind, e.Customer, e.Certificate = audit.KindErasure, "c-1", "er-1" },
		"commit without packs":       func(e *audit.Entry) { e.Kind = audit.KindBackupCommit },
		"expiry without class":       func(e *audit.Entry) { e.Kind, e.Class = audit.KindRetentionExpiry, "" },
		"target name with spaces":    func(e *audit.Entry) { e.Kind, e.Targets = audit.KindRestore, []string{"my target"} },
		"negative count":             func(e *audit.Entry) { e.Kind, e.Count = audit.KindRestore, -1 },
		"certificate with a slash":   func(e *audit.Entry) { e.Kind, e.Customer, e.Certificate = audit.KindErasure, pseudo, "a/b" },
		"key rotation without time":  func(e *audit.Entry) { e.Kind, e.Time = audit.KindKeyRotation, time.Time{} },
		"policy change, no outcome":  func(e *audit.Entry) { e.Kind, e.Outcome = audit.KindPolicyChange, "" },
		"drill with a raw customer":  func(e *audit.Entry) { e.Kind, e.Customer = audit.KindDrill, "alice" },
		"drill without figures":      func(e *audit.Entry) { e.Kind, e.Class, e.Targets = audit.KindDrill, "critical", []string{"fs"} },
		"policy change, no digest":   func(e *audit.Entry) { e.Kind, e.Policy = audit.KindPolicyChange, "" },
		"policy change, bad digest":  func(e *audit.Entry) { e.Kind, e.Policy = audit.KindPolicyChange, "sha256:zz" },
		"negative bytes":             func(e *audit.Entry) { e.Kind, e.Bytes = audit.KindRestore, -1 },
		"restore with a raw in list": func(e *audit.Entry) { e.Kind, e.Packs = audit.KindRestore, []string{packA, "c-9"} },
	} {
		e := base
		mod(&e)
		err := log.Append(context.Background(), e)
		if !errors.Is(err, audit.ErrInvalidEntry) {
			t.Errorf("%s: Append = %v, want ErrInvalidEntry", name, err)
		}
		if err != nil && e.Customer != "" && strings.Contains(err.Error(), e.Customer) {
			t.Errorf("%s: error %q repeats the customer value", name, err)
		}
	}
	for _, e := range []audit.Entry{
		{Kind: audit.KindBackupCommit, Class: "critical", Packs: []string{packA}, Count: 12},
		{Kind: audit.KindRestore, Customer: pseudo, Targets: []string{"fs:a"}, Count: 1},
		{Kind: audit.KindDrill, Class: "critical", Targets: []string{"s3:offsite"},
			Figures: &audit.Figures{Items: 3, Bytes: 300, Seconds: 0.5, ClassBytes: 3000, EstimatedSeconds: 5, RTOSeconds: 172800}},
		{Kind: audit.KindErasure, Customer: pseudo, Certificate: "er-0a1b2c"},
		{Kind: audit.KindRetentionExpiry, Class: "critical", Count: 3},
		{Kind: audit.KindKeyRotation, Key: "local-1a2b3c4d"},
		{Kind: audit.KindPolicyChange, RequestedBy: "alice@ops", Policy: "sha256:" + strings.Repeat("ab", 32)},
	} {
		e.Time, e.Outcome = time.Now(), "done"
		if err := log.Append(context.Background(), e); err != nil {
			t.Errorf("%s: %v", e.Kind, err)
		}
	}
}

// Many workers append at once, each through its own Log from several goroutines: every entry
// is stored once, at its own position, and the whole log verifies.
func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	const workers, goroutines, each = 3, 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*goroutines*each)
	for w := range workers {
		log, err := audit.Open(ctx, ns.JS)
		if err != nil {
			t.Fatal(err)
		}
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					errs <- log.Append(ctx, audit.Entry{Time: time.Now(), Kind: audit.KindManual,
						EventID: fmt.Sprintf("w%d-g%d-%d", w, g, i), Class: "critical", Reason: "load", Outcome: audit.OutcomeNoRecords})
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	raw, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != workers*goroutines*each {
		t.Fatalf("%d entries, want %d", len(raw), workers*goroutines*each)
	}
	seen := map[string]bool{}
	for i, b := range raw {
		var e audit.Entry
		if err := json.Unmarshal(b, &e); err != nil || e.Index != int64(i) || seen[e.EventID] {
			t.Fatalf("entry %d: %+v, %v", i, e, err)
		}
		seen[e.EventID] = true
	}
	k := newKey(t, 1)
	if rep, err := audit.Verify(raw, [][]byte{k.checkpoint(t, raw)}, k.verifier); err != nil || rep.Head != int64(len(raw)) {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// Checkpoint signs the head of the whole stream; without a signer it refuses.
func TestLogCheckpoint(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	k := newKey(t, 1)
	log, err := audit.Open(ctx, ns.JS, audit.WithSigner(k.signer))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, log, 0, 5)
	signed, err := log.Checkpoint(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(raw, [][]byte{signed}, k.verifier); err != nil || rep.Head != 5 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	unsigned, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unsigned.Checkpoint(ctx, time.Now()); !errors.Is(err, audit.ErrNoSigner) {
		t.Fatalf("Checkpoint without a signer = %v", err)
	}
}

func appendN(t *testing.T, log *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		err := log.Append(context.Background(), audit.Entry{Time: time.Date(2026, 11, 23, 12, 0, i, 0, time.UTC),
			Kind: audit.KindManual, EventID: fmt.Sprintf("m-%d", i), Class: "critical", Reason: "test", Outcome: audit.OutcomeNoRecords})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The stream refuses deletes and purges, so tampering with it means recreating it: an entry
// edited, deleted (a message removed through the stream API) or two reordered in a rewritten
// stream are each found by Verify against the checkpoint, and the first bad entry named. An
// untouched stream verifies.
func TestStreamTampering(t *testing.T) {
	t.Parallel()
	k := newKey(t, 1)
	for _, tc := range []struct {
		name    string
		rewrite func(t *testing.T, js jetstream.JetStream, s jetstream.Stream, orig [][]byte)
		bad     int64
	}{
		{"untouched", nil, -1},
		{"edit entry 4", func(t *testing.T, js jetstream.JetStream, _ jetstream.Stream, orig [][]byte) {
			orig[4] = edit(t, orig[4], func(e *audit.Entry) { e.Reason = "nothing to see" })
			publish(t, js, orig)
		}, 4},
		{"delete entry 4", func(t *testing.T, js jetstream.JetStream, s jetstream.Stream, orig [][]byte) {
			publish(t, js, orig)
			if err := s.DeleteMsg(context.Background(), 5); err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"delete entry 4 and republish the rest", func(t *testing.T, js jetstream.JetStream, _ jetstream.Stream, orig [][]byte) {
			publish(t, js, append(orig[:4:4], orig[5:]...))
		}, 4},
		{"reorder 2 and 6", func(t *testing.T, js jetstream.JetStream, _ jetstream.Stream, orig [][]byte) {
			orig[2], orig[6] = orig[6], orig[2]
			publish(t, js, orig)
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			ctx := context.Background()
			log, err := audit.Open(ctx, ns.JS, audit.WithSigner(k.signer))
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, log, 0, 10)
			cp, err := log.Checkpoint(ctx, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			s, err := ns.JS.Stream(ctx, audit.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteMsg(ctx, 3); err == nil {
				t.Fatal("the audit stream let a message be deleted")
			}
			if err := s.Purge(ctx); err == nil {
				t.Fatal("the audit stream let itself be purged")
			}
			if tc.rewrite != nil {
				orig, err := audit.ReadEntries(ctx, ns.JS)
				if err != nil {
					t.Fatal(err)
				}
				if err := ns.JS.DeleteStream(ctx, audit.StreamName); err != nil {
					t.Fatal(err)
				}
				// The server removes a deleted stream's files after answering; creating the
				// stream again at once can meet them (err_code 10049) on a loaded machine.
				var s jetstream.Stream
				for try := 0; ; try++ {
					s, err = ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: audit.StreamName, Subjects: []string{audit.SubjectPrefix + ">"}})
					var apiErr *jetstream.APIError
					if err == nil || try == 50 || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10049 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err != nil {
					t.Fatal(err)
				}
				tc.rewrite(t, ns.JS, s, orig)
			}
			raw, err := audit.ReadEntries(ctx, ns.JS)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := audit.Verify(raw, [][]byte{cp}, k.verifier)
			if rep.FirstBad != tc.bad || (tc.bad < 0) != (err == nil) {
				t.Fatalf("Verify = %+v, %v; want first bad entry %d", rep, err, tc.bad)
			}
			if tc.bad >= 0 && !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("Verify error %v", err)
			}
			// The log goes on after tampering: a new entry chains to the newest one there.
			log2, err := audit.Open(ctx, ns.JS)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, log2, 100, 1)
			raw, err = audit.ReadEntries(ctx, ns.JS)
			if err != nil {
				t.Fatal(err)
			}
			if rep, _ := audit.Verify(raw, [][]byte{cp}, k.verifier); rep.FirstBad != tc.bad {
				t.Fatalf("after one more append: %+v; want first bad entry %d", rep, tc.bad)
			}
		})
	}
}

func publish(t *testing.T, js jetstream.JetStream, entries [][]byte) {
	t.Helper()
	for _, b := range entries {
		if _, err := js.Publish(context.Background(), audit.SubjectPrefix+audit.KindManual, b); err != nil {
			t.Fatal(err)
		}
	}
}

// ListKind reads the entries of one kind only, in log order, and nothing (at once) for a kind
// the log does not hold.
func TestListKind(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	log, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var drills int
	for i := range 700 { // more than one read batch of drills
		e := audit.Entry{Time: now, Kind: audit.KindRestore, Outcome: "passed"}
		if i%3 != 0 {
			drills++
			e = audit.Entry{Time: now, Kind: audit.KindDrill, Class: fmt.Sprint("c", i), Targets: []string{"fs:a"}, Outcome: "passed",
				Figures: &audit.Figures{Items: 1}}
		}
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := audit.ListKind(ctx, ns.JS, audit.KindDrill)
	if err != nil || len(got) != drills {
		t.Fatalf("ListKind(drill) = %d entries, %v; want %d", len(got), err, drills)
	}
	for i, e := range got {
		if e.Kind != audit.KindDrill || (i > 0 && e.Index <= got[i-1].Index) {
			t.Fatalf("entry %d: %+v, want drills in log order", i, e)
		}
	}
	if got, err := audit.ListKind(ctx, ns.JS, audit.KindErasure); err != nil || len(got) != 0 {
		t.Fatalf("ListKind(erasure) = %v, %v; want none", got, err)
	}
}
