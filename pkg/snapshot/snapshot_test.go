package snapshot_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreTopFunction("github.com/klauspost/compress/zstd.(*blockDec).startDecoder"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"))
}

func TestManifestSealOpen(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	m := snapshot.Manifest{V: 1, Snapshot: "ab" + "0123456789abcdef0123456789abcd", Class: "critical", Task: 2, Method: "full",
		Entries: []snapshot.Entry{{Customer: "p2", Ref: "r1", Digest: "d", Pack: "pk", Item: pack.Entry{ID: "i", Length: 3}},
			{Customer: "p1", Ref: "r9", Deleted: true}}}
	a, err := snapshot.Seal(key, m)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := snapshot.Seal(key, m)
	if !bytes.Equal(a, b) {
		t.Fatal("sealing the same manifest twice gave different bytes")
	}
	got, err := snapshot.OpenManifest(key, m.Snapshot, 2, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Entries) != 2 || got.Entries[0].Customer != "p1" || got.Entries[1].Item.Length != 3 {
		t.Fatalf("round trip: %+v", got.Entries)
	}
	// Bound to its snapshot and task, and authenticated.
	if _, err := snapshot.OpenManifest(key, m.Snapshot, 3, a); err == nil {
		t.Fatal("manifest of task 2 opened as task 3")
	}
	a[len(a)/2] ^= 1
	if _, err := snapshot.OpenManifest(key, m.Snapshot, 2, a); err == nil {
		t.Fatal("tampered manifest opened")
	}
}

func TestResolve(t *testing.T) {
	e := func(c, r, p string) snapshot.Entry { return snapshot.Entry{Customer: c, Ref: r, Pack: p} }
	del := func(c, r string) snapshot.Entry { return snapshot.Entry{Customer: c, Ref: r, Deleted: true} }
	full := []snapshot.Manifest{{Entries: []snapshot.Entry{e("a", "1", "f"), e("a", "2", "f")}}, {Entries: []snapshot.Entry{e("b", "1", "f")}}}
	inc := []snapshot.Manifest{{Entries: []snapshot.Entry{e("a", "1", "i"), del("a", "2"), e("c", "1", "i")}}}
	got := snapshot.Resolve([][]snapshot.Manifest{full, inc})
	want := []snapshot.Entry{e("a", "1", "i"), e("b", "1", "f"), e("c", "1", "i")}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].Customer != want[i].Customer || got[i].Ref != want[i].Ref || got[i].Pack != want[i].Pack {
			t.Fatalf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStoreCommitAndChain(t *testing.T) {
	ns := natstest.Start(t)
	ctx := t.Context()
	s, err := snapshot.Open(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2027, 1, 1, 2, 0, 0, 0, time.UTC)
	full := snapshot.Job{ID: snapshot.JobID("t1"), Class: "critical", Method: source.Full, Time: t0, Created: t0,
		NextCursor: []byte("c1"), Tasks: source.Ranges([]string{"m"})}
	if _, created, err := s.Plan(ctx, full); err != nil || !created {
		t.Fatalf("plan: %v %v", created, err)
	}
	other := full
	other.Method = source.Incremental
	if got, created, err := s.Plan(ctx, other); err != nil || created || got.Method != source.Full {
		t.Fatalf("second plan with the same id: created=%v method=%s err=%v; want the first plan", created, got.Method, err)
	}
	if err := s.Done(ctx, snapshot.TaskResult{Job: full.ID, Task: 0, Records: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, full.ID, t0); !errors.Is(err, snapshot.ErrIncomplete) {
		t.Fatalf("commit with 1 of 2 tasks: %v", err)
	}
	if err := s.Done(ctx, snapshot.TaskResult{Job: full.ID, Task: 1, Records: 4}); err != nil {
		t.Fatal(err)
	}
	// A second result for a task does not replace the first.
	if err := s.Done(ctx, snapshot.TaskResult{Job: full.ID, Task: 1, Records: 99}); err != nil {
		t.Fatal(err)
	}
	sn, err := s.Commit(ctx, full.ID, t0)
	if err != nil || sn.Records != 7 {
		t.Fatalf("commit: %+v %v", sn, err)
	}
	again, err := s.Commit(ctx, full.ID, t0.Add(time.Hour))
	if err != nil || !again.Committed.Equal(sn.Committed) {
		t.Fatalf("second commit: %v %v", again.Committed, err)
	}
	inc := snapshot.Job{ID: snapshot.JobID("t2"), Class: "critical", Method: source.Incremental, Base: full.ID,
		BaseCursor: []byte("c1"), NextCursor: []byte("c2"), Time: t0.Add(time.Hour), Created: t0, Tasks: source.Ranges(nil)}
	// An older job that commits later must not move the head back.
	old := snapshot.Job{ID: snapshot.JobID("t0"), Class: "critical", Method: source.Full, Time: t0.Add(-time.Hour), Created: t0,
		NextCursor: []byte("c0"), Tasks: source.Ranges(nil)}
	for _, j := range []snapshot.Job{inc, old} {
		if _, _, err := s.Plan(ctx, j); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx, snapshot.TaskResult{Job: j.ID, Task: 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Commit(ctx, j.ID, t0); err != nil {
			t.Fatal(err)
		}
	}
	head, err := s.Head(ctx, "critical")
	if err != nil || head.ID != inc.ID {
		t.Fatalf("head %s (%v), want the incremental %s", head.ID, err, inc.ID)
	}
	chain, err := s.Chain(ctx, inc.ID)
	if err != nil || len(chain) != 2 || chain[0].ID != full.ID || chain[1].ID != inc.ID {
		t.Fatalf("chain: %v %v", chain, err)
	}
	failed := snapshot.Job{ID: snapshot.JobID("t3"), Class: "critical", Method: source.Full, Time: t0, Created: t0, Tasks: source.Ranges(nil)}
	if _, _, err := s.Plan(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, failed.ID, "source down"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, failed.ID, t0); !errors.Is(err, snapshot.ErrFailed) {
		t.Fatalf("commit of a failed job: %v", err)
	}
	if list, err := s.List(ctx, "critical"); err != nil || len(list) != 3 || list[0].ID != old.ID {
		t.Fatalf("list: %d %v", len(list), err)
	}
}
