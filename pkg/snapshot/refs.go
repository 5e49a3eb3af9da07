package snapshot

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// The item-ref cache of point-in-time snapshots (docs/design.md section 10). The index knows an
// event-fed item's customer but not its record: the record key is only inside the encrypted
// item. A point-in-time snapshot opens an item's meta once to learn its record ref and keeps it
// here, so later snapshots of the class only open items stored since. It lives in the dedup
// cache's bucket under "<hex class>.<customer pseudonym>.refs" (a key no dedup shard takes,
// shards end in one hex digit), so Forget drops it with the rest of an erased customer. Like the
// dedup cache it is only a cache: a lost entry costs reading the metas again.

// ItemRefs maps item ids to record refs, for one customer in one class.
type ItemRefs map[string]string

func refsKey(class, customer string) string {
	return hex.EncodeToString([]byte(class)) + "." + customer + ".refs"
}

// LoadRefs returns the item refs known for a customer in a class (empty when none).
func (r *Records) LoadRefs(ctx context.Context, class, customer string) (ItemRefs, error) {
	e, err := r.kv.Get(ctx, refsKey(class, customer))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ItemRefs{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: item refs: %w", err)
	}
	m := ItemRefs{}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return ItemRefs{}, nil // a corrupt entry is dropped: the metas are read again
	}
	return m, nil
}

// StoreRefs replaces a customer's item refs. An entry too large for a KV message is not stored
// (its items' metas are read again next time, which is correct, only slower).
func (r *Records) StoreRefs(ctx context.Context, class, customer string, m ItemRefs) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxStateBytes {
		return nil
	}
	if _, err := r.kv.Put(ctx, refsKey(class, customer), b); err != nil {
		return fmt.Errorf("snapshot: item refs: %w", err)
	}
	return nil
}
