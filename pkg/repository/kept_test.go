package repository_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

// indexedTargets records the targets a repair adds to the index.
type indexedTargets struct {
	mu    sync.Mutex
	added []string
}

func (x *indexedTargets) AddTarget(_ context.Context, pack, targetName string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.added = append(x.added, pack+"@"+targetName)
	return nil
}

// Two KEK rotations, each after a worker died mid-write, leave two targets holding different
// manifests of one pack, each differing from the one sealed now only in key wrapping. Both
// stand; the target that missed the manifest is repaired with the copy of the first holder,
// only from a replica holding those very bytes: the other holder's equivalent copy is skipped,
// never copied under a record that names other bytes.
func TestKeptCopiesThatDisagreeAreRepairedFromOne(t *testing.T) {
	b := setupWriter(t)
	a, bb, c := b.faults[0], b.faults[1], b.faults[2]
	built := b.build(t, "c-1", "c-2")
	name := repository.ManifestName(built.Manifest.Pack)
	writer := func() *repository.Writer {
		w, err := repository.NewWriter(t.Context(), repository.WriterConfig{Keys: rewrapped{b.keys, b.kms}, Fingerprint: b.kms.Fingerprint(),
			Index: memIndex{b.index}, Repairs: b.queue, Grace: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	write := func(w *repository.Writer, targets []target.Target, min int) repository.Written {
		t.Helper()
		pl := repository.Placement{Class: "critical", Targets: targets, MinReplicas: min}
		wr, err := w.WritePack(t.Context(), pl, built.Manifest, built.Sum, replica.BytesSource(built.Data))
		if err != nil {
			t.Fatal(err)
		}
		return wr
	}
	read := func(tg target.Target) []byte {
		t.Helper()
		m, err := repository.ReadAll(t.Context(), tg, name, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	write(b.w, []target.Target{a}, 1)       // the first attempt reached a alone
	write(writer(), []target.Target{bb}, 1) // after a rotation, the second reached b alone
	first, second := read(a), read(bb)
	if bytes.Equal(first, second) {
		t.Fatal("the two attempts sealed the same manifest; the test needs two wrappings")
	}
	c.Down()
	wr := write(writer(), b.targets, 2) // after another rotation, with c down
	if wr.Missed != 1 || len(wr.Targets) != 2 {
		t.Fatalf("third attempt = %+v, want a and b holding it and c missed", wr)
	}
	if !bytes.Equal(read(a), first) || !bytes.Equal(read(bb), second) {
		t.Fatal("a kept manifest was replaced")
	}

	index := &indexedTargets{}
	r, err := repair.New(repair.Config{Queue: b.queue, Targets: b.targets, Index: index, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c.Up()
	a.Down() // the holder whose copy the repair names is away: b's equivalent copy is not taken
	res, err := r.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Repaired != 0 || res.Pending != 1 {
		t.Fatalf("pass with only the other copy reachable = %+v, want the repair pending", res)
	}
	if _, err := c.Stat(t.Context(), name); err == nil {
		t.Fatal("c was given a manifest though the copy named for repair was unreachable")
	}

	a.Up()
	if res, err = r.RunOnce(t.Context()); err != nil || res.Repaired != 1 || res.Pending != 0 {
		t.Fatalf("pass with a back = %+v, %v; want the repair done", res, err)
	}
	if !bytes.Equal(read(c), first) {
		t.Fatal("c's manifest is not the copy of the first holder")
	}
	if len(index.added) != 1 || index.added[0] != built.Manifest.Pack+"@"+c.Name() {
		t.Fatalf("index additions %v, want the pack on %s", index.added, c.Name())
	}
	for _, tg := range b.targets {
		rd := repository.NewReader(repository.NewOpener(b.kms, b.kms.Fingerprint()), tg)
		if m, err := rd.Manifest(t.Context(), built.Manifest.Pack); err != nil || len(m.Keys) != 2 || len(m.Items) != 2 {
			t.Errorf("%s: manifest %+v, %v", tg.Name(), m, err)
		}
	}
}
