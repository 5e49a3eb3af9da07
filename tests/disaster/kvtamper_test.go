package disaster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/worker"
	"github.com/custos-dev/custos/tests/harness"
)

// TestKeyStoreTampered damages single entries of the broker's buckets with a plain NATS client,
// as an operator's mistake or an attacker with access to the broker would, and checks what
// docs/design.md section 11 promises: a missing key is read from the manifests, a forged
// "destroyed" marker is a failure naming the customer and never an erasure, and lost index
// entries come back with custos catalog rebuild. Local disk targets only.
func TestKeyStoreTampered(t *testing.T) {
	bin := workerBinary(t)
	ctx := context.Background()
	dir := t.TempDir()
	stack, err := harness.Start(dir, harness.Options{Targets: 2, AckWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	parts, _, err := stack.Open(ctx) // creates the key file before the worker starts
	if err != nil {
		t.Fatal(err)
	}
	defer parts.Close()
	w, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", readLog(w.Log))
		}
	}()

	customers := []string{"cust-a", "cust-b", "cust-c", "cust-d"}
	wl := newWorkload()
	wl.publishRound(ctx, t, stack, customers)
	wl.publishRound(ctx, t, stack, customers)
	// One more version of one record, alone in the last pack: subtest (d) removes that pack from
	// the index.
	packsBefore, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(stack.JS, "urn:test:disaster")
	if err != nil {
		t.Fatal(err)
	}
	const lastCustomer, lastKey = "cust-a", "orders/2026/1"
	wl.put(ctx, t, p, "ev-last", lastCustomer, lastKey, []byte("the newest version, only in the last pack"))
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	noDeadLetters(ctx, t, stack.JS)
	allPacks, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lastPack string
	for _, pk := range allPacks {
		if !slices.ContainsFunc(packsBefore, func(b catalog.PackRecord) bool { return b.Pack == pk.Pack }) {
			if lastPack != "" {
				t.Fatalf("one event made two packs: %s and %s", lastPack, pk.Pack)
			}
			lastPack = pk.Pack
		}
	}
	if lastPack == "" {
		t.Fatal("the last event made no pack")
	}
	// The broker alone is tampered with from now on: no worker writes.
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not stop cleanly: %v", err)
	}

	keyKV, err := stack.JS.KeyValue(ctx, keys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	indexKV, err := stack.JS.KeyValue(ctx, catalog.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	pseudo := func(c string) string { return parts.KMS.Pseudonym(tenant, c) }
	cfg := stack.Config
	outDir := func(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) }

	// Baseline: the intact broker restores everything.
	out := outDir(t, "baseline")
	custos(t, cfg, "restore", "--all", "--out", out).mustSucceed(t).
		wantCounts(t, "restored", map[string]int{"customers": len(customers), "keys_recovered": 0, "failures": 0})
	checkOut(t, out, wl.latest)

	// (a) A live customer's key entry purged, or deleted: the key is read from the manifests.
	for _, tc := range []struct {
		name     string
		customer string
		remove   func(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	}{
		{"purged-customer-key", "cust-b", keyKV.Purge},
		{"deleted-customer-key", "cust-c", keyKV.Delete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scope := pseudo(tc.customer)
			keep(ctx, t, keyKV, scope)
			if err := tc.remove(ctx, scope); err != nil {
				t.Fatal(err)
			}
			if _, err := keyKV.Get(ctx, scope); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("key entry still readable after the removal: %v", err)
			}
			out := outDir(t, "customer")
			r := custos(t, cfg, "restore", "--tenant", tenant, "--customer", tc.customer, "--out", out).mustSucceed(t)
			r.wantCounts(t, "restored", map[string]int{"customers": 1, "records": len(recordKeys),
				"keys_recovered": 1, "erased_skipped": 0, "failures": 0})
			if warn := r.stderrLines("WARNING:"); len(warn) != 1 || !strings.Contains(warn[0], scope) {
				t.Fatalf("want one WARNING naming %s\n%s", scope, r)
			}
			checkOut(t, out, wl.only(tc.customer))
			t.Logf("restore --customer: %s", strings.TrimSpace(r.stdout+r.stderr))

			out = outDir(t, "all")
			r = custos(t, cfg, "restore", "--all", "--out", out).mustSucceed(t)
			r.wantCounts(t, "restored", map[string]int{"customers": len(customers), "keys_recovered": 1, "failures": 0})
			checkOut(t, out, wl.latest)
		})
	}

	// (b) The catalog key entry purged: restores do not need it, and a rebuild puts the same
	// wrapped key back.
	t.Run("purged-catalog-key", func(t *testing.T) {
		orig := keep(ctx, t, keyKV, pack.CatalogScope)
		if err := keyKV.Purge(ctx, pack.CatalogScope); err != nil {
			t.Fatal(err)
		}
		out := outDir(t, "all")
		custos(t, cfg, "restore", "--all", "--out", out).mustSucceed(t).
			wantCounts(t, "restored", map[string]int{"customers": len(customers), "keys_recovered": 0, "failures": 0})
		checkOut(t, out, wl.latest)
		out = outDir(t, "customer")
		custos(t, cfg, "restore", "--tenant", tenant, "--customer", lastCustomer, "--out", out).mustSucceed(t).
			wantCounts(t, "restored", map[string]int{"customers": 1, "keys_recovered": 0, "failures": 0})
		checkOut(t, out, wl.only(lastCustomer))

		custos(t, cfg, "catalog", "rebuild", "--from", "t0").mustSucceed(t).
			wantCounts(t, "rebuilt", map[string]int{"packs": len(allPacks), "erased": 0, "failures": 0})
		e, err := keyKV.Get(ctx, pack.CatalogScope)
		if err != nil {
			t.Fatalf("catalog key entry after the rebuild: %v", err)
		}
		if got, want := wrapped(t, e.Value()), wrapped(t, orig); !bytes.Equal(got, want) {
			t.Fatalf("rebuild put back another catalog key: %s, want %s", e.Value(), orig)
		}
	})

	// (c) A forged "destroyed" marker for a live customer: no target holds an erasure record,
	// so restore names the customer as failed, restores nothing of it and exits non-zero; it
	// never reports an erasure.
	t.Run("forged-destroyed-marker", func(t *testing.T) {
		const victim = "cust-d"
		scope := pseudo(victim)
		keep(ctx, t, keyKV, scope)
		if _, err := keyKV.Put(ctx, scope, []byte(`{"v":1,"destroyed":"2026-01-01T00:00:00Z"}`)); err != nil {
			t.Fatal(err)
		}
		others := slices.DeleteFunc(slices.Clone(customers), func(c string) bool { return c == victim })

		out := outDir(t, "all")
		r := custos(t, cfg, "restore", "--all", "--out", out)
		if r.code != 2 {
			t.Fatalf("restore with a forged destroyed marker exited %d, want 2\n%s", r.code, r)
		}
		r.wantCounts(t, "restored", map[string]int{"customers": len(others), "erased_skipped": 0, "failures": 1})
		wantFailedNaming(t, r, scope)
		checkOut(t, out, wl.only(others...), victim)
		t.Logf("restore --all: exit %d: %s", r.code, strings.TrimSpace(r.stdout+r.stderr))

		out = outDir(t, "customer")
		r = custos(t, cfg, "restore", "--tenant", tenant, "--customer", victim, "--out", out)
		if r.code != 2 {
			t.Fatalf("restore of the customer with a forged destroyed marker exited %d, want 2\n%s", r.code, r)
		}
		r.wantCounts(t, "restored", map[string]int{"customers": 0, "records": 0, "erased_skipped": 0, "failures": 1})
		wantFailedNaming(t, r, scope)
		checkOut(t, out, nil, victim)
	})

	// (d) The index entries of a pack deleted: a restore misses the record version only that
	// pack holds, until custos catalog rebuild --from t0 writes the entries again.
	t.Run("deleted-index-entries", func(t *testing.T) {
		names := []string{"pack." + lastPack}
		lister, err := indexKV.ListKeysFiltered(ctx, "cust.*."+lastPack)
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			names = append(names, k)
		}
		if len(names) < 2 {
			t.Fatalf("pack %s has no customer entry in the index", lastPack)
		}
		for _, k := range names {
			if err := indexKV.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		out := outDir(t, "damaged")
		custos(t, cfg, "restore", "--tenant", tenant, "--customer", lastCustomer, "--out", out).mustSucceed(t)
		got, err := os.ReadFile(restore.Path(out, tenant, lastCustomer, lastKey))
		if err != nil || bytes.Equal(got, wl.latest[lastCustomer][lastKey]) {
			t.Fatalf("with the index entries deleted, %s/%s restored as the newest version (%v): the damage did not take", lastCustomer, lastKey, err)
		}

		custos(t, cfg, "catalog", "rebuild", "--from", "t0").mustSucceed(t).
			wantCounts(t, "rebuilt", map[string]int{"packs": len(allPacks), "erased": 0, "failures": 0})
		for _, k := range names {
			if _, err := indexKV.Get(ctx, k); err != nil {
				t.Fatalf("index entry %s after the rebuild: %v", k, err)
			}
		}
		rec, err := parts.Index.Pack(ctx, lastPack)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"fs:t0", "fs:t1"}; !slices.Equal(sorted(rec.Targets), want) {
			t.Fatalf("rebuilt index entry of pack %s names targets %v, want %v", lastPack, rec.Targets, want)
		}
		out = outDir(t, "customer")
		custos(t, cfg, "restore", "--tenant", tenant, "--customer", lastCustomer, "--out", out).mustSucceed(t)
		checkOut(t, out, wl.only(lastCustomer))
		out = outDir(t, "all")
		custos(t, cfg, "restore", "--all", "--out", out).mustSucceed(t).
			wantCounts(t, "restored", map[string]int{"customers": len(customers), "keys_recovered": 0, "failures": 0})
		checkOut(t, out, wl.latest)
	})
}

// keep saves a key store entry and puts it back when the (sub)test ends, so the next subtest
// starts from an intact store. It returns the saved value.
func keep(ctx context.Context, t *testing.T, kv jetstream.KeyValue, key string) []byte {
	t.Helper()
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("key store entry %s: %v", key, err)
	}
	val := bytes.Clone(e.Value())
	t.Cleanup(func() {
		if _, err := kv.Put(context.Background(), key, val); err != nil {
			t.Errorf("put back %s: %v", key, err)
		}
	})
	return val
}

// wrapped returns the wrapped DEK of a key store entry.
func wrapped(t *testing.T, v []byte) []byte {
	t.Helper()
	var e keyEntry
	if err := json.Unmarshal(v, &e); err != nil || e.Wrapped == nil {
		t.Fatalf("key store entry %s holds no wrapped key (%v)", v, err)
	}
	return e.Wrapped
}

// wantFailedNaming fails the test unless every FAILED line on stderr names the customer's
// pseudonym as destroyed with no erasure record, and there is at least one.
func wantFailedNaming(t *testing.T, r result, pseudonym string) {
	t.Helper()
	failed := r.stderrLines("FAILED:")
	if len(failed) == 0 {
		t.Fatalf("no FAILED line on stderr\n%s", r)
	}
	for _, f := range failed {
		if !strings.Contains(f, pseudonym) || !strings.Contains(f, "no target holds an erasure record") {
			t.Fatalf("FAILED line does not name %s as destroyed without an erasure record: %q\n%s", pseudonym, f, r)
		}
	}
}
