package snapshot_test

import (
	"maps"
	"testing"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// TestItemRefsKeptPerClassAndForgottenOnErasure: the item-ref cache is per class and customer,
// does not disturb the dedup cache beside it, and an erasure's Forget drops it.
func TestItemRefsKeptPerClassAndForgottenOnErasure(t *testing.T) {
	ns := natstest.Start(t)
	r, err := snapshot.OpenRecords(t.Context(), ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	const cust, other = "p0123456789abcdef0123456789abcdef", "pfedcba9876543210fedcba9876543210"
	refs := snapshot.ItemRefs{"item-1": "pref1", "item-2": "pref2"}
	if err := r.StoreRefs(t.Context(), "critical", cust, refs); err != nil {
		t.Fatal(err)
	}
	if err := r.StoreRefs(t.Context(), "critical", other, snapshot.ItemRefs{"item-9": "pref9"}); err != nil {
		t.Fatal(err)
	}
	shard := snapshot.CacheKey("critical", cust)
	if err := r.Store(t.Context(), shard, map[string]snapshot.Known{"pref1": {Digest: "d"}}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.LoadRefs(t.Context(), "critical", cust); err != nil || !maps.Equal(got, refs) {
		t.Fatalf("LoadRefs = %v, %v; want %v", got, err, refs)
	}
	if got, err := r.LoadRefs(t.Context(), "important", cust); err != nil || len(got) != 0 {
		t.Fatalf("another class's refs = %v, %v; want none", got, err)
	}
	if got, err := r.Load(t.Context(), shard); err != nil || len(got) != 1 || got["pref1"].Digest != "d" {
		t.Fatalf("dedup shard beside the refs = %v, %v", got, err)
	}
	if err := r.Forget(t.Context(), cust); err != nil {
		t.Fatal(err)
	}
	if got, err := r.LoadRefs(t.Context(), "critical", cust); err != nil || len(got) != 0 {
		t.Fatalf("refs after Forget = %v, %v; want none", got, err)
	}
	if got, err := r.LoadRefs(t.Context(), "critical", other); err != nil || len(got) != 1 {
		t.Fatalf("another customer's refs after Forget = %v, %v", got, err)
	}
}
