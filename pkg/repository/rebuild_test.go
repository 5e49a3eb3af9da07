package repository_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/target/faulty"
)

// estate is the record a rebuild reads in these tests, on three targets (a, b, c; a is the one
// rebuilt from):
//
//	pack A  alice, bob    on a, b, c; the manifest's copy on a is corrupt
//	pack B  carol         on a, b
//	pack C  alice         manifest on a, b, c; the pack itself not on b
//	pack D  dave, erin    on a, b, c
//	pack E  frank         on a, b, c
//	dave    erased: record on b only (a was down when he was erased)
//	erin    erased: record on a (corrupt copy) and c
//	frank   a forged record on a (erin's record under his name): not erased
//	snapshots of class critical: full S1, incremental S2 on S1, partial S3 (newest);
//	          of class important: full S4 without a cursor
type estate struct {
	*world
	packs                                map[string]pack.Manifest // by letter
	alice, bob, carol, dave, erin, frank string
	s1, s2, s3, s4                       snapshot.Snapshot
}

func newEstate(t *testing.T) *estate {
	t.Helper()
	w := newWorld(t, 3)
	e := &estate{world: w, packs: map[string]pack.Manifest{}}
	e.alice, e.bob, e.carol, e.dave, e.erin, e.frank = w.customer("alice"), w.customer("bob"), w.customer("carol"),
		w.customer("dave"), w.customer("erin"), w.customer("frank")

	e.packs["A"] = w.addPack(t, nil, "alice", "bob")
	w.faults[0].Corrupt(repository.ManifestName(e.packs["A"].Pack))
	e.packs["B"] = w.addPack(t, []int{0, 1}, "carol")
	b, sealed := w.build(t, "critical", "alice")
	w.write(t, repository.PackName(b.Manifest.Pack), b.Data, 0, 2)
	w.write(t, repository.ManifestName(b.Manifest.Pack), sealed)
	e.packs["C"] = b.Manifest
	e.packs["D"] = w.addPack(t, nil, "dave", "erin")
	e.packs["E"] = w.addPack(t, nil, "frank")

	w.erase(t, "dave", 1)
	w.erase(t, "erin", 0, 2)
	w.faults[0].Corrupt(repository.ErasureName(e.erin))
	forged, err := w.sealer.Erasure(e.erin, at0)
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.ErasureName(e.frank), forged, 0)

	e.s1 = snapshot.Snapshot{ID: jobID(1), Class: "critical", Method: source.Full, Time: at0, Cursor: []byte("c1")}
	e.s2 = snapshot.Snapshot{ID: jobID(2), Class: "critical", Method: source.Incremental, Base: e.s1.ID, Time: at0.Add(time.Hour), Cursor: []byte("c2")}
	e.s3 = snapshot.Snapshot{ID: jobID(3), Class: "critical", Method: source.Full, Time: at0.Add(2 * time.Hour), Cursor: []byte("c3"), Partial: true}
	e.s4 = snapshot.Snapshot{ID: jobID(4), Class: "important", Method: source.Full, Time: at0}
	for _, sn := range []snapshot.Snapshot{e.s1, e.s2, e.s3, e.s4} {
		w.addSnapshot(t, sn)
	}
	return e
}

func (e *estate) rebuild(t *testing.T, sink repository.Sink, opts repository.RebuildOptions) (repository.RebuildReport, error) {
	t.Helper()
	return repository.Rebuild(t.Context(), e.targets[0], e.targets[1:], e.opener, sink, opts)
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	ctx := t.Context()
	m := repository.NewMemory(e.kms)
	var progress []repository.RebuildProgress
	rep, err := e.rebuild(t, m, repository.RebuildOptions{Concurrency: 2, Progress: func(p repository.RebuildProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	// Keys: the catalog key, alice, bob, carol and frank; never dave's or erin's.
	if !rep.OK() || rep.Packs != 5 || rep.Keys != 5 || rep.Erased != 2 || rep.Snapshots != 4 || len(rep.Unreachable) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if len(progress) != 5 || progress[4] != (repository.RebuildProgress{Done: 5, Total: 5}) {
		t.Errorf("progress %v", progress)
	}
	checkEstate(t, e, m)

	// A second rebuild into the same store changes nothing.
	rep, err = e.rebuild(t, m, repository.RebuildOptions{})
	if err != nil || !rep.OK() || rep.Packs != 5 {
		t.Fatalf("second rebuild: %+v, %v", rep, err)
	}
	checkEstate(t, e, m)

	// Unknown scopes: the store never creates keys.
	if _, err := m.Lookup(ctx, e.customer("nobody")); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Lookup(nobody) = %v, want keys.ErrNotFound", err)
	}
	if _, err := m.DataKey(ctx, e.customer("nobody")); !errors.Is(err, repository.ErrReadOnly) {
		t.Errorf("DataKey(nobody) = %v, want ErrReadOnly", err)
	}
	if _, err := m.DataKey(ctx, e.dave); !errors.Is(err, keys.ErrDestroyed) {
		t.Errorf("DataKey(dave) = %v, want keys.ErrDestroyed", err)
	}
}

// checkEstate checks what a rebuild of the estate put in m.
func checkEstate(t *testing.T, e *estate, m *repository.Memory) {
	t.Helper()
	ctx := t.Context()
	abc, ab, ac := []string{"mem:a", "mem:b", "mem:c"}, []string{"mem:a", "mem:b"}, []string{"mem:a", "mem:c"}
	wantHolders := map[string][]string{e.packs["A"].Pack: abc, e.packs["B"].Pack: ab, e.packs["C"].Pack: ac, e.packs["D"].Pack: abc, e.packs["E"].Pack: abc}
	packs, err := m.Packs(ctx)
	if err != nil || len(packs) != 5 {
		t.Fatalf("Packs = %v, %v", packs, err)
	}
	if !sort.SliceIsSorted(packs, func(i, j int) bool { return packs[i].Pack < packs[j].Pack }) {
		t.Errorf("packs not in id order")
	}
	for _, p := range packs {
		if !slices.Equal(p.Targets, wantHolders[p.Pack]) {
			t.Errorf("pack %s indexed with %v, want %v", p.Pack, p.Targets, wantHolders[p.Pack])
		}
	}
	for _, l := range []string{"A", "B", "C", "D", "E"} {
		want := e.packs[l]
		i := slices.IndexFunc(packs, func(p catalog.PackRecord) bool { return p.Pack == want.Pack })
		if i < 0 {
			t.Errorf("pack %s not indexed", l)
			continue
		}
		if p := packs[i]; p.Size != want.Size || p.SHA256 != want.SHA256 || p.Items != len(want.Items) || p.Class != want.Class || !p.NewestEvent.Equal(want.NewestEvent) {
			t.Errorf("pack %s indexed as %+v", l, p)
		}
	}

	recs, err := m.Customer(ctx, e.alice)
	wantPacks := []string{e.packs["A"].Pack, e.packs["C"].Pack}
	slices.Sort(wantPacks)
	if err != nil || len(recs) != 2 || recs[0].Pack != wantPacks[0] || recs[1].Pack != wantPacks[1] || len(recs[0].Items) != 1 {
		t.Errorf("Customer(alice) = %+v, %v", recs, err)
	}

	for _, c := range []string{pack.CatalogScope, e.alice, e.bob, e.carol, e.frank} {
		want, err := e.store.Lookup(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := m.Lookup(ctx, c); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Lookup(%s) = %x, %v; want the store's key", c, got, err)
		}
	}
	for _, c := range []string{e.dave, e.erin} {
		if _, err := m.Lookup(ctx, c); !errors.Is(err, keys.ErrDestroyed) {
			t.Errorf("Lookup of an erased customer = %v, want keys.ErrDestroyed", err)
		}
	}
	wantErased := []string{e.dave, e.erin}
	slices.Sort(wantErased)
	if got := m.Erased(); !slices.Equal(got, wantErased) {
		t.Errorf("Erased = %v, want %v", got, wantErased)
	}

	// Snapshots: the head is the newest complete one with a cursor; chains resolve to the full.
	if head, err := m.Head("critical"); err != nil || head.ID != e.s2.ID {
		t.Errorf("Head(critical) = %s, %v; want S2 (S3 is partial)", head.ID, err)
	}
	if _, err := m.Head("important"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Head(important) = %v, want snapshot.ErrNotFound (S4 has no cursor)", err)
	}
	if _, err := m.Head("other"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Head(other) = %v, want snapshot.ErrNotFound", err)
	}
	chain, err := m.Chain(e.s2.ID)
	if err != nil || len(chain) != 2 || chain[0].ID != e.s1.ID || chain[1].ID != e.s2.ID {
		t.Errorf("Chain(S2) = %v, %v", chain, err)
	}
	if sn, err := m.Snapshot(e.s4.ID); err != nil || mustJSON(t, sn) != mustJSON(t, e.s4) {
		t.Errorf("Snapshot(S4) = %+v, %v", sn, err)
	}
	if _, err := m.Snapshot(jobID(99)); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Snapshot(unknown) = %v, want snapshot.ErrNotFound", err)
	}
}

// A target that is down is named in the report, is not named as a holder, and the erasures
// only it holds are not known; the target rebuilt from must answer.
func TestRebuildUnreachable(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	e.faults[1].Down()
	m := repository.NewMemory(e.kms)
	rep, err := e.rebuild(t, m, repository.RebuildOptions{})
	if err != nil || !slices.Equal(rep.Unreachable, []string{"mem:b"}) || rep.Erased != 1 {
		t.Fatalf("rebuild with b down: %+v, %v", rep, err)
	}
	packs, err := m.Packs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		if slices.Contains(p.Targets, "mem:b") {
			t.Errorf("pack %s indexed on the unreachable target: %v", p.Pack, p.Targets)
		}
	}
	// dave's record is on b only: this rebuild cannot know it, and says why (Unreachable).
	if got := m.Erased(); !slices.Equal(got, []string{e.erin}) {
		t.Errorf("Erased = %v", got)
	}

	e.faults[1].Up()
	e.faults[0].Down()
	if _, err := e.rebuild(t, repository.NewMemory(e.kms), repository.RebuildOptions{}); !errors.Is(err, faulty.ErrUnavailable) {
		t.Errorf("rebuild from a target that is down = %v, want its error", err)
	}
}

// A manifest that no target holds intact is a failure; the rest is rebuilt.
func TestRebuildUnreadableManifest(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	name := repository.ManifestName(e.packs["E"].Pack)
	for _, f := range e.faults {
		f.Corrupt(name)
	}
	m := repository.NewMemory(e.kms)
	rep, err := e.rebuild(t, m, repository.RebuildOptions{})
	if err != nil || rep.OK() || rep.Packs != 4 || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], e.packs["E"].Pack) {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if _, err := m.Lookup(t.Context(), e.frank); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Lookup(frank) = %v, want keys.ErrNotFound (his only manifest is unreadable)", err)
	}
}

// A rebuild with another key file stops with ErrKeyMismatch, and with another KEK with
// keys.ErrUnwrap: nothing is imported either way.
func TestRebuildAnotherKeyFile(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	kms := localKMS(t, worldKEK, bytes.Repeat([]byte{9}, 32))
	m := repository.NewMemory(kms)
	_, err := repository.Rebuild(t.Context(), e.targets[0], e.targets[1:], repository.NewOpener(kms, kms.Fingerprint()), m, repository.RebuildOptions{})
	if !errors.Is(err, repository.ErrKeyMismatch) {
		t.Fatalf("Rebuild = %v, want ErrKeyMismatch", err)
	}

	kms = localKMS(t, bytes.Repeat([]byte{9}, 32), worldPseudonymKey)
	m = repository.NewMemory(kms)
	_, err = repository.Rebuild(t.Context(), e.targets[0], e.targets[1:], repository.NewOpener(kms, kms.Fingerprint()), m, repository.RebuildOptions{})
	if !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Rebuild with another KEK = %v, want keys.ErrUnwrap", err)
	}
	if packs, _ := m.Packs(t.Context()); len(packs) != 0 {
		t.Errorf("packs indexed: %v", packs)
	}
}

// A cancelled rebuild stops early with the context's error and leaves no goroutine behind.
func TestRebuildCancelled(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m := repository.NewMemory(e.kms)
	rep, err := repository.Rebuild(ctx, e.targets[0], e.targets[1:], e.opener, m, repository.RebuildOptions{
		Concurrency: 1,
		Progress:    func(repository.RebuildProgress) { cancel() },
	})
	if !errors.Is(err, context.Canceled) || rep.Packs >= 5 || rep.Snapshots != 0 {
		t.Fatalf("cancelled rebuild: %+v, %v", rep, err)
	}
}

// Rebuild into the broker's buckets: the key store gets the wrapped keys (a key it already
// holds is kept) and the destroyed markers, the index the packs, the snapshot list its heads.
func TestRebuildIntoKV(t *testing.T) {
	t.Parallel()
	e := newEstate(t)
	ctx := t.Context()
	ns := natstest.Start(t)
	ks, err := keys.NewKVStore(ctx, ns.JS, e.kms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ks.Close() })
	index, err := catalog.Open(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	// carol's key was created by a worker after the record was read elsewhere: it stays.
	carolKV, err := ks.DataKey(ctx, e.carol)
	if err != nil {
		t.Fatal(err)
	}
	// Pack B is still indexed, on one target only: it keeps its commit time and gains the
	// targets the rebuild finds; the packs the index lost get no commit time.
	if err := index.Commit(ctx, e.packs["B"], []string{"mem:b"}, at0); err != nil {
		t.Fatal(err)
	}
	sink := repository.KVSink{Keys: ks, Index: index, Snapshots: snaps}
	for range 2 { // idempotent
		rep, err := e.rebuild(t, sink, repository.RebuildOptions{})
		if err != nil || !rep.OK() || rep.Packs != 5 || rep.Erased != 2 {
			t.Fatalf("report %+v, %v", rep, err)
		}
	}
	for _, c := range []string{pack.CatalogScope, e.alice, e.bob, e.frank} {
		want, err := e.store.Lookup(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ks.Lookup(ctx, c); err != nil || !bytes.Equal(got, want) {
			t.Errorf("KV Lookup(%s) = %v, want the store's key", c, err)
		}
	}
	if got, err := ks.Lookup(ctx, e.carol); err != nil || !bytes.Equal(got, carolKV) {
		t.Errorf("KV Lookup(carol) = %v: the key already in the store must be kept", err)
	}
	for _, c := range []string{e.dave, e.erin} {
		if _, err := ks.Lookup(ctx, c); !errors.Is(err, keys.ErrDestroyed) {
			t.Errorf("KV Lookup of an erased customer = %v, want keys.ErrDestroyed", err)
		}
	}
	packs, err := index.Packs(ctx)
	if err != nil || len(packs) != 5 {
		t.Fatalf("index Packs = %d, %v", len(packs), err)
	}
	for _, p := range packs {
		if p.Pack == e.packs["C"].Pack && !slices.Equal(p.Targets, []string{"mem:a", "mem:c"}) {
			t.Errorf("pack C indexed with %v", p.Targets)
		}
		if p.Pack == e.packs["B"].Pack {
			if !p.Committed.Equal(at0) || !slices.Equal(p.Targets, []string{"mem:a", "mem:b"}) {
				t.Errorf("pack B = %v on %v, want its commit time %v kept, on mem:a and mem:b", p.Committed, p.Targets, at0)
			}
		} else if !p.Committed.IsZero() {
			t.Errorf("pack %s rebuilt with commit time %v, want none", p.Pack, p.Committed)
		}
	}
	if head, err := snaps.Head(ctx, "critical"); err != nil || head.ID != e.s2.ID {
		t.Errorf("KV Head(critical) = %s, %v; want S2", head.ID, err)
	}
	if chain, err := snaps.Chain(ctx, e.s2.ID); err != nil || len(chain) != 2 {
		t.Errorf("KV Chain(S2) = %v, %v", chain, err)
	}
}
