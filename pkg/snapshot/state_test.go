package snapshot_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// known returns n cache entries with refs shaped like pseudonyms (p + 32 hex digits).
func known(n int, digest string) map[string]snapshot.Known {
	m := make(map[string]snapshot.Known, n)
	for i := range n {
		ref := fmt.Sprintf("p%016x%016x", uint64(i)*0x9e3779b97f4a7c15, i)
		m[ref] = snapshot.Known{Digest: digest + strings.Repeat("d", 60), Pack: fmt.Sprintf("%032x", i),
			Item: pack.Entry{ID: fmt.Sprintf("%032x", i+1), Customer: "c", Offset: int64(i), Length: 100}, Job: "j1"}
	}
	return m
}

func keysOf(t *testing.T, kv jetstream.KeyValue, customer string) []string {
	t.Helper()
	l, err := kv.ListKeysFiltered(t.Context(), "*."+customer+".*")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestDedupCacheIsOneEntryPerCustomerAndSplitsWhenLarge: a customer's entries are one key-value
// entry; entries too large for one are spread over the 16 digit keys behind a marker and read
// back whole; shrinking again drops the split without resurrecting its entries; Forget removes
// every key; and a key of the old 16-way layout alone is not read.
func TestDedupCacheIsOneEntryPerCustomerAndSplitsWhenLarge(t *testing.T) {
	ns := natstest.Start(t)
	ctx := t.Context()
	r, err := snapshot.OpenRecords(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := ns.JS.KeyValue(ctx, snapshot.RecordsBucket)
	if err != nil {
		t.Fatal(err)
	}
	const cust = "p0123456789abcdef0123456789abcdef"
	shard := snapshot.CacheKey("critical", cust)

	small := known(20, "a")
	if err := r.Store(ctx, shard, small); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(t, kv, cust); !slices.Equal(got, []string{shard}) {
		t.Fatalf("20 entries are stored under %v; want the one key %s", got, shard)
	}
	if got, err := r.Load(ctx, shard); err != nil || !maps.Equal(got, small) {
		t.Fatalf("Load = %d entries, %v; want the 20 stored", len(got), err)
	}

	large := known(6000, "b") // about 1.4 MB of JSON: over one value's limit
	if err := r.Store(ctx, shard, large); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(t, kv, cust); len(got) != 17 {
		t.Fatalf("6000 entries are stored under %d keys (%v); want the marker and 16 digit keys", len(got), got)
	}
	if got, err := r.Load(ctx, shard); err != nil || !maps.Equal(got, large) {
		t.Fatalf("Load of the split customer = %d entries, %v; want the 6000 stored", len(got), err)
	}

	// A corrupt digit key loses that digit's entries only.
	if _, err := kv.Put(ctx, strings.TrimSuffix(shard, ".all")+".7", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	got, err := r.Load(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for ref := range large {
		if _, ok := got[ref]; !ok {
			if ref[1] != '7' {
				t.Fatalf("entry %s (digit %c) lost with digit 7's key", ref, ref[1])
			}
			lost++
		}
	}
	if lost == 0 || len(got)+lost != len(large) {
		t.Fatalf("after corrupting digit 7: %d loaded, %d lost, of %d", len(got), lost, len(large))
	}

	if err := r.Store(ctx, shard, small); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Load(ctx, shard); err != nil || !maps.Equal(got, small) {
		t.Fatalf("Load after shrinking = %d entries, %v; want only the 20 stored last", len(got), err)
	}

	if err := r.Forget(ctx, cust); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(t, kv, cust); len(got) != 0 {
		t.Fatalf("keys left after Forget: %v", got)
	}

	// The old layout's digit key, without the customer key, reads as nothing cached.
	if _, err := kv.Put(ctx, strings.TrimSuffix(shard, ".all")+".3", []byte(`{"p3":{"d":"x"}}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Load(ctx, shard); err != nil || len(got) != 0 {
		t.Fatalf("Load with an old-layout key only = %v, %v; want nothing", got, err)
	}
}

// A digit key that would itself pass the size limit is stored empty: those records are
// uploaded again, and Load neither fails nor returns entries of an older split.
func TestDedupCacheDigitTooLargeIsStoredEmpty(t *testing.T) {
	ns := natstest.Start(t)
	ctx := t.Context()
	r, err := snapshot.OpenRecords(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	const cust = "p0123456789abcdef0123456789abcdef"
	key := snapshot.CacheKey("critical", cust)
	big := known(6000, "b") // spread over the 16 digits
	if err := r.Store(ctx, key, big); err != nil {
		t.Fatal(err)
	}
	skewed := map[string]snapshot.Known{}
	for ref, k := range known(6000, "c") {
		skewed["p0"+ref[2:]] = k // every ref in digit 0: about 1.4 MB there
	}
	skewed["p1ffff"] = snapshot.Known{Digest: "kept"}
	if err := r.Store(ctx, key, skewed); err != nil {
		t.Fatal(err)
	}
	got, err := r.Load(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["p1ffff"].Digest != "kept" {
		t.Fatalf("Load = %d entries; want only the one outside the oversized digit", len(got))
	}
}
