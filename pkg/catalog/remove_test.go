package catalog_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
)

// Remove deletes one pack's customer entries and pack entry and nothing of any other pack; it
// is idempotent.
func TestRemove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	c1, c2 := b.customer(1), b.customer(2)
	gone := b.manifest("critical", item{c1, 1, t0}, item{c2, 2, t0})
	kept := b.manifest("critical", item{c1, 3, t0.Add(time.Hour)})
	b.commit(t, gone)
	b.commit(t, kept)

	all, err := b.index.CustomerRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantBefore := 3 // one entry per shard of gone, one of kept
	if c1[1:3] == c2[1:3] {
		wantBefore = 2
	}
	if len(all) != wantBefore {
		t.Fatalf("CustomerRecords before = %d records, want %d", len(all), wantBefore)
	}
	for range 2 {
		if err := b.index.Remove(ctx, gone.Pack); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.index.Pack(ctx, gone.Pack); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Pack after Remove = %v, want ErrNotFound", err)
	}
	packs, err := b.index.Packs(ctx)
	if err != nil || len(packs) != 1 || packs[0].Pack != kept.Pack {
		t.Fatalf("Packs after Remove = %+v, %v", packs, err)
	}
	for _, c := range []string{c1, c2} {
		recs, err := b.index.Customer(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Pack == gone.Pack {
				t.Fatalf("customer %s still lists removed pack", c)
			}
		}
	}
	all, err = b.index.CustomerRecords(ctx)
	if err != nil || len(all) != 1 || all[0].Pack != kept.Pack {
		t.Fatalf("CustomerRecords after = %+v, %v", all, err)
	}
	if err := b.index.Remove(ctx, "cust.>"); err == nil {
		t.Fatal("Remove accepted an id that is not a pack id")
	}
}

func TestRemoveTargets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	m := b.manifest("critical", item{b.customer(1), 1, t0})
	b.commit(t, m, "mem:a", "mem:b", "mem:c")
	if err := b.index.RemoveTargets(ctx, m.Pack, "mem:a", "mem:c"); err != nil {
		t.Fatal(err)
	}
	if err := b.index.RemoveTargets(ctx, m.Pack, "mem:a"); err != nil {
		t.Fatal(err)
	}
	rec, err := b.index.Pack(ctx, m.Pack)
	if err != nil || !slices.Equal(rec.Targets, []string{"mem:b"}) {
		t.Fatalf("targets after RemoveTargets = %v, %v", rec.Targets, err)
	}
	if err := b.index.RemoveTargets(ctx, "0123456789abcdef0123456789abcdef", "mem:a"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("RemoveTargets of an unknown pack = %v", err)
	}
}
