// Package catalog is the query index of what Custos has stored: which packs exist, where they
// were written and which items of which customer (by pseudonym) they hold. The index lives in a
// NATS KV bucket; the manifests stored in every target are the truth it can be rebuilt from.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/pack"
)

// DefaultBucket is the KV bucket of the index.
const DefaultBucket = "CUSTOS_CATALOG"

// ErrNotFound means the index has no such pack.
var ErrNotFound = errors.New("catalog: not found")

// PackRecord is the index entry of a committed pack.
type PackRecord struct {
	Pack        string    `json:"pack"`
	Class       string    `json:"class"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Items       int       `json:"items"`
	Targets     []string  `json:"targets"`
	NewestEvent time.Time `json:"newest_event"`
	Committed   time.Time `json:"committed"`
}

// CustomerRecord lists the items of one pack that belong to customers of one shard (see
// shard). Customer filters them to one customer.
type CustomerRecord struct {
	Pack  string       `json:"pack"`
	Class string       `json:"class"`
	Items []pack.Entry `json:"items"`
}

// Index reads and writes the catalog bucket.
type Index struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	// requestTimeout bounds each wait for the broker in Commit (broker.Bounded); 0 is
	// broker.RequestTimeout. Tests shorten it.
	requestTimeout time.Duration
}

// Open creates the bucket if needed and returns the index.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Index, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: DefaultBucket, Description: "Custos catalog index", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: open bucket %s: %w", DefaultBucket, err)
	}
	return &Index{js: js, kv: kv, bucket: DefaultBucket}, nil
}

func packKey(id string) string { return "pack." + id }

// shard groups customers by the first two hex digits of their pseudonym, so a pack needs at
// most 256 index entries however many customers it holds; a lookup reads one shard.
func shard(pseudo string) string {
	if len(pseudo) < 3 {
		return "00"
	}
	return pseudo[1:3]
}

func custKey(shardID, packID string) string { return "cust." + shardID + "." + packID }

// Commit records a pack written to targets. It writes every customer entry, then the pack
// entry, and returns only when all are durable; it is idempotent.
func (ix *Index) Commit(ctx context.Context, m pack.Manifest, targets []string, now time.Time) error {
	byShard := map[string][]pack.Entry{}
	for _, e := range m.Items {
		byShard[shard(e.Customer)] = append(byShard[shard(e.Customer)], e)
	}
	futures := make([]jetstream.PubAckFuture, 0, len(byShard)+1)
	put := func(key string, b []byte) error {
		f, err := ix.js.PublishAsync("$KV."+ix.bucket+"."+key, b)
		if err != nil {
			return fmt.Errorf("catalog: index %s: %w", key, err)
		}
		futures = append(futures, f)
		return nil
	}
	for sh, items := range byShard {
		b, err := pack.MarshalEntriesRecord(m.Pack, m.Class, items) // a CustomerRecord
		if err == nil {
			err = put(custKey(sh, m.Pack), b)
		}
		if err != nil {
			return err
		}
	}
	wctx, cancel := broker.Bounded(ctx, ix.requestTimeout)
	defer cancel()
	if err := wait(wctx, futures); err != nil {
		return err
	}
	rec := PackRecord{Pack: m.Pack, Class: m.Class, Size: m.Size, SHA256: m.SHA256, Items: len(m.Items),
		Targets: targets, NewestEvent: m.NewestEvent, Committed: now.UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	pctx, cancel := broker.Bounded(ctx, ix.requestTimeout)
	defer cancel()
	if _, err := ix.kv.Put(pctx, packKey(m.Pack), b); err != nil {
		return fmt.Errorf("catalog: index pack %s: %w", m.Pack, err)
	}
	return nil
}

func wait(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("catalog: index write: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Pack returns the index entry of a pack.
func (ix *Index) Pack(ctx context.Context, id string) (PackRecord, error) {
	e, err := ix.kv.Get(ctx, packKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PackRecord{}, fmt.Errorf("%w: pack %s", ErrNotFound, id)
	}
	if err != nil {
		return PackRecord{}, fmt.Errorf("catalog: read pack %s: %w", id, err)
	}
	var rec PackRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return PackRecord{}, fmt.Errorf("catalog: decode pack %s: %w", id, err)
	}
	return rec, nil
}

// Customer returns every indexed item of one customer, grouped by pack, in pack-id order.
func (ix *Index) Customer(ctx context.Context, pseudonym string) ([]CustomerRecord, error) {
	keys, err := ix.keys(ctx, "cust."+shard(pseudonym)+".*")
	if err != nil {
		return nil, err
	}
	out := make([]CustomerRecord, 0, len(keys))
	for _, k := range keys {
		e, err := ix.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: read %s: %w", k, err)
		}
		var rec CustomerRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("catalog: decode %s: %w", k, err)
		}
		mine := rec.Items[:0]
		for _, it := range rec.Items {
			if it.Customer == pseudonym {
				mine = append(mine, it)
			}
		}
		if len(mine) > 0 {
			rec.Items = mine
			out = append(out, rec)
		}
	}
	return out, nil
}

// Packs returns every committed pack, ordered by pack id.
func (ix *Index) Packs(ctx context.Context) ([]PackRecord, error) {
	keys, err := ix.keys(ctx, "pack.*")
	if err != nil {
		return nil, err
	}
	out := make([]PackRecord, 0, len(keys))
	for _, k := range keys {
		rec, err := ix.Pack(ctx, k[len("pack."):])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

func (ix *Index) keys(ctx context.Context, filter string) ([]string, error) {
	l, err := ix.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: list %s: %w", filter, err)
	}
	var keys []string
	// The channel closes when every key has been read; the lister then needs no Stop.
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// AddTarget records that a pack is now durable in one more target (after a repair). It is
// idempotent and safe against concurrent updates.
func (ix *Index) AddTarget(ctx context.Context, id, targetName string) error {
	return ix.updatePack(ctx, id, func(rec *PackRecord) bool {
		if slices.Contains(rec.Targets, targetName) {
			return false
		}
		rec.Targets = append(rec.Targets, targetName)
		sort.Strings(rec.Targets)
		return true
	})
}

// updatePack applies change to a pack's entry with compare-and-set on the entry's revision,
// reading again when another writer got there first. change returns false to leave the entry
// as it is.
func (ix *Index) updatePack(ctx context.Context, id string, change func(*PackRecord) bool) error {
	for {
		e, err := ix.kv.Get(ctx, packKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: pack %s", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("catalog: read pack %s: %w", id, err)
		}
		var rec PackRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return fmt.Errorf("catalog: decode pack %s: %w", id, err)
		}
		if !change(&rec) {
			return nil
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = ix.kv.Update(ctx, packKey(id), b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed since we read it: read again
		}
		if err != nil {
			return fmt.Errorf("catalog: update pack %s: %w", id, err)
		}
		return nil
	}
}
