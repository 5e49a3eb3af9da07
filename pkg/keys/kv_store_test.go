package keys_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
)

// Two workers (stores) with four goroutines each race to create one scope's key.
func TestKVStoreConcurrentInstances(t *testing.T) {
	t.Parallel()
	srv, kms := natstest.Start(t), testKMS(t)
	stores := []*keys.KVStore{newKVStore(t, srv, kms), newKVStore(t, srv, kms)}
	const n = 8
	got := make([][]byte, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = stores[i%2].DataKey(context.Background(), "p0a")
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("goroutine %d: err = %v, same key = %v", i, errs[i], bytes.Equal(got[i], got[0]))
		}
	}
}

// A destroy through one instance reaches another instance's cache within a second.
func TestKVStoreDestroyPropagates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, kms := natstest.Start(t), testKMS(t)
	a, b := newKVStore(t, srv, kms), newKVStore(t, srv, kms)
	ka, err := a.DataKey(ctx, "p0b")
	if err != nil {
		t.Fatal(err)
	}
	if kb, err := b.DataKey(ctx, "p0b"); err != nil || !bytes.Equal(ka, kb) { // b caches it
		t.Fatalf("b: err = %v, same key = %v", err, bytes.Equal(ka, kb))
	}
	if err := a.Destroy(ctx, "p0b"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		_, err := b.DataKey(ctx, "p0b")
		if errors.Is(err, keys.ErrDestroyed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b still answers %v a second after the destroy", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := b.Lookup(ctx, "p0b"); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("b.Lookup: %v", err)
	}
}

// The bucket holds exactly the documented records, and a destroy leaves no wrapped key.
func TestKVStoreRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, kms := natstest.Start(t), testKMS(t)
	now := time.Date(2031, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	s := newKVStore(t, srv, kms, keys.WithBucket("KEYS_TEST"), keys.WithClock(func() time.Time { return now }))
	dek, err := s.DataKey(ctx, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := srv.JS.KeyValue(ctx, "KEYS_TEST")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := kv.Status(ctx)
	if status.History() != 1 || status.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage != jetstream.FileStorage {
		t.Fatalf("bucket: history %d", status.History())
	}
	e, err := kv.Get(ctx, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r) != 4 || r["v"] != 1.0 || r["kms_key_id"] != kms.KeyID() || r["created"] != "2031-01-02T02:04:05Z" {
		t.Fatalf("record = %s", e.Value())
	}
	var rec struct{ Wrapped []byte }
	_ = json.Unmarshal(e.Value(), &rec)
	if got, err := kms.Unwrap(ctx, rec.Wrapped, []byte("catalog")); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("wrapped key does not unwrap with aad = scope: %v", err)
	}

	if err := s.Destroy(ctx, "catalog"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour) // a second destroy keeps the first marker
	if err := s.Destroy(ctx, "catalog"); err != nil {
		t.Fatal(err)
	}
	hist, err := kv.History(ctx, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || string(hist[0].Value()) != `{"v":1,"destroyed":"2031-01-02T02:04:05Z"}` {
		t.Fatalf("after destroy: %d revisions, latest %s", len(hist), hist[len(hist)-1].Value())
	}
}

func TestKVStoreWrongKMS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	if _, err := newKVStore(t, srv, testKMS(t)).DataKey(ctx, "p0c"); err != nil {
		t.Fatal(err)
	}
	other := newKVStore(t, srv, testKMS(t))
	for _, call := range []func(context.Context, string) ([]byte, error){other.Lookup, other.DataKey} {
		if _, err := call(ctx, "p0c"); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("err = %v, want ErrUnwrap", err)
		}
	}
}

func TestKVStoreCorruptRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	s := newKVStore(t, srv, testKMS(t))
	kv, _ := srv.JS.KeyValue(ctx, keys.DefaultBucket)
	for i, val := range []string{`garbage`, `{"v":2}`, `{"v":1,"kms_key_id":"x"}`} {
		scope := fmt.Sprintf("p%d", i)
		if _, err := kv.Put(ctx, scope, []byte(val)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DataKey(ctx, scope); err == nil {
			t.Fatalf("%s: DataKey accepted a corrupt record", val)
		}
		// A record that cannot be read can still be destroyed.
		if err := s.Destroy(ctx, scope); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, scope); !errors.Is(err, keys.ErrDestroyed) {
			t.Fatalf("%s: after Destroy: %v", val, err)
		}
	}
	if _, err := kv.Put(ctx, "p9", []byte(`nope`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "p9"); !errors.Is(err, keys.ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

// A purge by an operator drops cached keys too, so no instance serves a key the bucket lost.
func TestKVStorePurgeInvalidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	s := newKVStore(t, srv, testKMS(t))
	if _, err := s.DataKey(ctx, "p0d"); err != nil {
		t.Fatal(err)
	}
	kv, _ := srv.JS.KeyValue(ctx, keys.DefaultBucket)
	if err := kv.Purge(ctx, "p0d"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for _, err := s.Lookup(ctx, "p0d"); !errors.Is(err, keys.ErrNotFound); _, err = s.Lookup(ctx, "p0d") {
		if time.Now().After(deadline) {
			t.Fatalf("Lookup after purge: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKVStoreBucketWithHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Start(t)
	if _, err := srv.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: keys.DefaultBucket, History: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.NewKVStore(ctx, srv.JS, testKMS(t)); !errors.Is(err, keys.ErrBucketConfig) {
		t.Fatalf("err = %v, want ErrBucketConfig", err)
	}
}

func TestKVStoreCloseAndSmallCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newKVStore(t, natstest.Start(t), testKMS(t), keys.WithCacheSize(2))
	first := make(map[string][]byte)
	for i := range 5 {
		scope := fmt.Sprintf("p%d", i)
		dek, err := s.DataKey(ctx, scope)
		if err != nil {
			t.Fatal(err)
		}
		first[scope] = dek
	}
	for _, closed := range []bool{false, true} {
		if closed {
			for range 2 {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for scope, dek := range first {
			if got, err := s.Lookup(ctx, scope); err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("closed=%v %s: err = %v, same key = %v", closed, scope, err, bytes.Equal(got, dek))
			}
		}
	}
	if err := s.Destroy(ctx, "p0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DataKey(ctx, "p0"); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("after Close and Destroy: %v", err)
	}
}
