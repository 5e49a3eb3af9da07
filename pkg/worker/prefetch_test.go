package worker

import (
	"context"
	"testing"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// merge keeps what the task loaded or changed while a prefetch ran, and drops a prefetch begun
// before the cache was written back and emptied: its shards may predate what was written, and
// saving them again would drop the entries the task added in between.
func TestMergePrefetch(t *testing.T) {
	ctx := context.Background()
	fetched := func(evictions int, shards map[string]map[string]snapshot.Known) *prefetch {
		p := &prefetch{done: make(chan struct{}), evictions: evictions, shards: shards,
			deks: map[string][]byte{"cust": []byte("key")}}
		close(p.done)
		return p
	}
	known := func(digest string) map[string]snapshot.Known {
		return map[string]snapshot.Known{"ref": {Digest: digest}}
	}
	run := func() *taskRun {
		return &taskRun{w: &Worker{cfg: Config{testMaxCachedShards: 3}}, deks: map[string][]byte{},
			cache: map[string]map[string]snapshot.Known{}, dirty: map[string]bool{}}
	}

	r := run()
	r.cache["changed"] = known("task")
	if err := r.merge(ctx, fetched(0, map[string]map[string]snapshot.Known{"new": known("kv"), "changed": known("kv")})); err != nil {
		t.Fatal(err)
	}
	if r.cache["new"]["ref"].Digest != "kv" || r.cache["changed"]["ref"].Digest != "task" || string(r.deks["cust"]) != "key" {
		t.Errorf("merge: cache %v, deks %v; want the new shard added, the task's copy kept, the key added", r.cache, r.deks)
	}

	// Begun before an eviction: the keys are kept, the shards are not.
	r = run()
	p := fetched(r.evictions, map[string]map[string]snapshot.Known{"saved": known("before save")})
	if err := r.evict(ctx); err != nil {
		t.Fatal(err)
	}
	r.cache["other"] = known("task")
	if err := r.merge(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.cache["saved"]; ok || string(r.deks["cust"]) != "key" {
		t.Errorf("a prefetch begun before an eviction was merged: cache %v, deks %v", r.cache, r.deks)
	}

	// Shards that would overfill the cache: it is written back and emptied instead.
	r = run()
	r.cache["a"], r.cache["b"] = known("task"), known("task")
	if err := r.merge(ctx, fetched(0, map[string]map[string]snapshot.Known{"c": known("kv"), "d": known("kv")})); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 0 || r.evictions != 1 {
		t.Errorf("overfilling merge: cache %v, evictions %d; want an emptied cache after one eviction", r.cache, r.evictions)
	}

	// Entries that would overfill the cache, in fewer customers than its bound.
	r = run()
	r.w.cfg.testMaxCachedEntries = 3
	r.cache["a"], r.cachedEntries = known("task"), 1
	if err := r.merge(ctx, fetched(0, map[string]map[string]snapshot.Known{"c": {"r1": {}, "r2": {}, "r3": {}}})); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 0 || r.evictions != 1 || r.cachedEntries != 0 {
		t.Errorf("merge over the entry bound: cache %v, %d entries counted, evictions %d; want an emptied cache after one eviction",
			r.cache, r.cachedEntries, r.evictions)
	}
	r = run()
	r.w.cfg.testMaxCachedEntries = 3
	if err := r.merge(ctx, fetched(0, map[string]map[string]snapshot.Known{"c": {"r1": {}, "r2": {}}})); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 1 || r.cachedEntries != 2 {
		t.Errorf("merge within the entry bound: cache %v, %d entries counted; want c kept, 2 counted", r.cache, r.cachedEntries)
	}
}

// A task that holds as many cache entries as it may writes the cache back and empties it before
// it loads another customer's, and the entries it wrote back are what the next load reads.
func TestShardEvictsAtTheEntryBound(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Start(t)
	records, err := snapshot.OpenRecords(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := &taskRun{w: &Worker{deps: Deps{Records: records}, cfg: Config{testMaxCachedEntries: 3}},
		cache: map[string]map[string]snapshot.Known{}, dirty: map[string]bool{}}
	a, b := snapshot.CacheKey("critical", "pa"), snapshot.CacheKey("critical", "pb")
	m, err := r.shard(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"p1", "p2", "p3"} {
		m[ref] = snapshot.Known{Digest: ref}
		r.cachedEntries++
	}
	r.dirty[a] = true
	if _, err := r.shard(ctx, b); err != nil {
		t.Fatal(err)
	}
	if r.evictions != 1 || len(r.cache) != 1 || r.cachedEntries != 0 {
		t.Fatalf("after loading a second customer at the bound: %d evictions, %d customers, %d entries; want 1, 1 (the new one), 0",
			r.evictions, len(r.cache), r.cachedEntries)
	}
	got, err := records.Load(ctx, a)
	if err != nil || len(got) != 3 || got["p2"].Digest != "p2" {
		t.Fatalf("the evicted customer's entries as stored: %v, %v; want the 3 the task held", got, err)
	}
	if m, err = r.shard(ctx, a); err != nil || len(m) != 3 || r.cachedEntries != 3 {
		t.Fatalf("reloaded: %d entries, %d counted, %v; want 3 and 3", len(m), r.cachedEntries, err)
	}
}
