package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/pack"
)

// Remove deletes a pack from the index: every customer entry of the pack first, then the pack
// entry. The order is the reverse of a reader's guarantee on purpose: while the pack entry
// exists the pack is still listed by Packs, so a remover that dies half way is found again by
// the next retention sweep and finishes the job; the other order could leave customer entries
// that no pack entry leads to. Callers delete the pack's objects from the targets before
// calling Remove. Remove is idempotent: removing a pack that is not indexed returns nil.
func (ix *Index) Remove(ctx context.Context, id string) error {
	if !pack.ValidID(id) { // the id becomes part of a key filter: no wildcards or dots
		return fmt.Errorf("catalog: remove: invalid pack id %q", id)
	}
	keys, err := ix.keys(ctx, "cust.*."+id)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := ix.kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("catalog: remove %s: %w", k, err)
		}
	}
	if err := ix.kv.Delete(ctx, packKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("catalog: remove pack %s: %w", id, err)
	}
	return nil
}

// RemoveTargets records that a pack is no longer held by the named targets (a retention sweep
// deleted it there but another target refused). The pack stays indexed with the targets that
// still hold it. Safe against concurrent updates.
func (ix *Index) RemoveTargets(ctx context.Context, id string, targetNames ...string) error {
	return ix.updatePack(ctx, id, func(rec *PackRecord) bool {
		kept := slices.DeleteFunc(slices.Clone(rec.Targets), func(t string) bool { return slices.Contains(targetNames, t) })
		if len(kept) == len(rec.Targets) {
			return false
		}
		rec.Targets = kept
		return true
	})
}

// CustomerRecords returns every customer entry of the index (all shards, all packs), ordered
// by key. Retention reads them to find, for each customer, the pack holding its latest item.
// It reads the whole customer side of the index: one entry per pack and shard.
func (ix *Index) CustomerRecords(ctx context.Context) ([]CustomerRecord, error) {
	keys, err := ix.keys(ctx, "cust.>")
	if err != nil {
		return nil, err
	}
	out := make([]CustomerRecord, 0, len(keys))
	for _, k := range keys {
		e, err := ix.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: read %s: %w", k, err)
		}
		var rec CustomerRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("catalog: decode %s: %w", k, err)
		}
		if rec.Pack == "" { // older entries always carry it; fall back to the key
			rec.Pack = k[strings.LastIndexByte(k, '.')+1:]
		}
		out = append(out, rec)
	}
	return out, nil
}
