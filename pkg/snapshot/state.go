package snapshot

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/pack"
)

// RecordsBucket holds the dedup cache.
const RecordsBucket = "CUSTOS_RECORDS"

// maxStateBytes keeps a cache entry under NATS's default message size; a shard that would grow
// past it is not cached (its records are uploaded again, which is correct, only slower).
const maxStateBytes = 900 << 10

// Known is what the cache remembers of a record: the digest of its newest stored bytes and
// where that item is.
type Known struct {
	Digest string     `json:"d"`
	Pack   string     `json:"p"`
	Item   pack.Entry `json:"i"`
	// Job is the job that stored the item. A task never reuses its own job's items: a worker
	// that died after saving part of the cache must not make the re-run skip records, or the
	// re-run would build other packs than the first run and leave the first run's items unlisted.
	Job string `json:"j,omitempty"`
}

// Records is the dedup cache: for each (class, customer, record) the newest item stored. It is
// only a cache: an entry is trusted only when its digest equals the record's and its pack is
// still in the index, and a lost entry only costs an upload. Keys hold pseudonyms only; a
// customer's entries are spread over 16 keys "<class hex>.<pseudonym>.<first hex digit of ref>".
type Records struct {
	kv jetstream.KeyValue
}

// OpenRecords creates the bucket if needed.
func OpenRecords(ctx context.Context, js jetstream.JetStream, replicas int) (*Records, error) {
	kv, err := broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: RecordsBucket, Description: "Custos dedup cache: newest stored item per record", History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: records bucket: %w", err)
	}
	return &Records{kv: kv}, nil
}

// Shard is the cache key holding ref.
func Shard(class, customer, ref string) string {
	d := "0"
	if len(ref) > 1 {
		d = ref[1:2]
	}
	return hex.EncodeToString([]byte(class)) + "." + customer + "." + d
}

// Load returns one shard of the cache (empty when absent).
func (r *Records) Load(ctx context.Context, shard string) (map[string]Known, error) {
	e, err := r.kv.Get(ctx, shard)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return map[string]Known{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: records %s: %w", shard, err)
	}
	m := map[string]Known{}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		// A corrupt cache entry is dropped, not fatal: the records are uploaded again.
		return map[string]Known{}, nil
	}
	return m, nil
}

// Store replaces one shard. Concurrent writers of one shard (two jobs of a class at once) may
// lose each other's entries; that costs uploads, never correctness.
func (r *Records) Store(ctx context.Context, shard string, m map[string]Known) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxStateBytes {
		return nil
	}
	if _, err := r.kv.Put(ctx, shard, b); err != nil {
		return fmt.Errorf("snapshot: records %s: %w", shard, err)
	}
	return nil
}

// Forget drops every cache entry of a customer (erasure).
func (r *Records) Forget(ctx context.Context, customer string) error {
	lister, err := r.kv.ListKeysFiltered(ctx, "*."+customer+".*")
	if err != nil {
		return fmt.Errorf("snapshot: records of %s: %w", customer, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := r.kv.Purge(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("snapshot: forget %s: %w", k, err)
		}
	}
	return nil
}
