package snapshot

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/internal/jsonappend"
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

// CacheKey is the key of a customer's entries in a class: one key-value entry per customer,
// so a snapshot reads and writes each customer's cache once. Earlier layouts spread a customer
// over 16 entries by the first hex digit of the record ref; with 20 records to a customer that
// was about 12 reads and 12 writes each, which the broker's CPU paid for on every snapshot.
// A customer whose entries do not fit one value is still split that way, by Store; Load follows.
func CacheKey(class, customer string) string {
	return hex.EncodeToString([]byte(class)) + "." + customer + ".all"
}

// splitMarker is the value of a customer's key when its entries are spread over its 16 digit
// keys; it is not JSON, so it never reads as entries.
var splitMarker = []byte("split")

// digits are the sub-keys of a split customer: the first hex digit of the ref after its "p".
const digits = "0123456789abcdef"

// digitKey is the sub-key of shard (a CacheKey) holding refs whose digit is d.
func digitKey(shard string, d byte) string {
	return strings.TrimSuffix(shard, ".all") + "." + string(d)
}

// digitOf is ref's digit; a ref that is not a pseudonym (never written by Custos) goes to "0".
func digitOf(ref string) byte {
	if len(ref) > 1 && strings.IndexByte(digits, ref[1]) >= 0 {
		return ref[1]
	}
	return '0'
}

// Load returns a customer's cache entries (empty when absent). A corrupt value is dropped, not
// fatal: those records are uploaded again.
func (r *Records) Load(ctx context.Context, shard string) (map[string]Known, error) {
	b, err := r.get(ctx, shard)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(b, splitMarker) {
		return decodeKnown(b), nil
	}
	m := map[string]Known{}
	for i := range len(digits) {
		b, err := r.get(ctx, digitKey(shard, digits[i]))
		if err != nil {
			return nil, err
		}
		maps.Copy(m, decodeKnown(b))
	}
	return m, nil
}

// get returns a key's value, nil when absent.
func (r *Records) get(ctx context.Context, key string) ([]byte, error) {
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: records %s: %w", key, err)
	}
	return e.Value(), nil
}

func decodeKnown(b []byte) map[string]Known {
	m := map[string]Known{}
	if len(b) > 0 && json.Unmarshal(b, &m) != nil || m == nil { // "null" leaves m nil
		return map[string]Known{}
	}
	return m
}

// Store replaces a customer's entries. Entries too large for one value are split over the 16
// digit keys, which are written before the marker that sends Load to them; a digit key that
// would still be too large is not stored (its records are uploaded again). Concurrent writers
// of one customer (two jobs of a class at once) may lose each other's entries, and a write cut
// short leaves the previous value; either costs uploads, never correctness, because an entry is
// trusted only when its digest and pack check out.
func (r *Records) Store(ctx context.Context, shard string, m map[string]Known) error {
	b, err := marshalKnown(m)
	if err != nil {
		return err
	}
	if len(b) <= maxStateBytes {
		return r.put(ctx, shard, b)
	}
	parts := map[byte]map[string]Known{}
	for ref, k := range m {
		d := digitOf(ref)
		if parts[d] == nil {
			parts[d] = map[string]Known{}
		}
		parts[d][ref] = k
	}
	for i := range len(digits) {
		// Every digit key is written, empty ones too, so none keeps entries from an older split.
		part := parts[digits[i]]
		if part == nil {
			part = map[string]Known{}
		}
		b, err := marshalKnown(part)
		if err != nil {
			return err
		}
		if len(b) > maxStateBytes {
			b = []byte("{}")
		}
		if err := r.put(ctx, digitKey(shard, digits[i]), b); err != nil {
			return err
		}
	}
	return r.put(ctx, shard, splitMarker)
}

func (r *Records) put(ctx context.Context, key string, b []byte) error {
	if _, err := r.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("snapshot: records %s: %w", key, err)
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

// marshalKnown is json.Marshal(m), written by hand (internal/jsonappend): keys sorted, as
// encoding/json sorts them.
func marshalKnown(m map[string]Known) ([]byte, error) {
	if m == nil {
		return []byte("null"), nil
	}
	a := jsonappend.New(2 + len(m)*knownSize)
	a.Raw("{")
	for i, ref := range slices.Sorted(maps.Keys(m)) {
		k := m[ref]
		if i > 0 {
			a.Raw(",")
		}
		a.Str(ref)
		a.Raw(`:{"d":`)
		a.Str(k.Digest)
		a.Raw(`,"p":`)
		a.Str(k.Pack)
		a.Raw(`,"i":`)
		pack.AppendEntry(a, &k.Item)
		if k.Job != "" { // omitempty
			a.Raw(`,"j":`)
			a.Str(k.Job)
		}
		a.Raw("}")
	}
	a.Raw("}")
	return a.Bytes(m)
}

// knownSize is a generous guess of one cache entry's encoded size.
const knownSize = 384
