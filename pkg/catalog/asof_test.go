package catalog_test

import (
	"testing"
	"time"
)

// TestShardsReadsOnlyTheAcceptedShards: Shards returns the customer entries of the shards it is
// asked for, every class and pack, items in pack order, and nothing of other shards.
func TestShardsReadsOnlyTheAcceptedShards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var a, other string
	for i := 0; a == "" || other == ""; i++ {
		c := b.customer(i)
		switch {
		case a == "":
			a = c
		case c[1:3] != a[1:3]:
			other = c
		}
	}
	m1 := b.manifest("critical", item{a, 1, t0}, item{other, 2, t0}, item{a, 3, t0.Add(time.Second)})
	m2 := b.manifest("important", item{a, 4, t0})
	b.commit(t, m1)
	b.commit(t, m2)
	recs, err := b.index.Shards(t.Context(), func(s string) bool { return s == a[1:3] })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d entries, want one per pack: %+v", len(recs), recs)
	}
	byPack := map[string]int{}
	for i, r := range recs {
		byPack[r.Pack] = i
		for _, e := range r.Items {
			if e.Customer != a {
				t.Errorf("pack %s: item of customer %s from another shard", r.Pack, e.Customer)
			}
		}
	}
	if r := recs[byPack[m1.Pack]]; r.Class != "critical" || !sameEntries(r.Items, entriesOf(m1, a)) {
		t.Errorf("entry of pack %s = %+v, want the items of %s in pack order", m1.Pack, r, a)
	}
	if r := recs[byPack[m2.Pack]]; r.Class != "important" || !sameEntries(r.Items, entriesOf(m2, a)) {
		t.Errorf("entry of pack %s = %+v", m2.Pack, r)
	}
	none, err := b.index.Shards(t.Context(), func(string) bool { return false })
	if err != nil || len(none) != 0 {
		t.Fatalf("no shard accepted: %v, %v", none, err)
	}
}
