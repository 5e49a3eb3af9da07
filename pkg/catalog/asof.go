package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Shards returns every customer entry (every pack, every class) of the shards keep accepts,
// ordered by shard and then pack id; each entry's items keep the pack's order. It lists the
// customer keys once and reads only the entries of the accepted shards: a point-in-time snapshot
// task reads its range of customers this way.
func (ix *Index) Shards(ctx context.Context, keep func(shardID string) bool) ([]CustomerRecord, error) {
	keys, err := ix.keys(ctx, "cust.>")
	if err != nil {
		return nil, err
	}
	var out []CustomerRecord
	for _, k := range keys {
		sh, packID, ok := strings.Cut(strings.TrimPrefix(k, "cust."), ".")
		if !ok || !keep(sh) {
			continue
		}
		e, err := ix.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: read %s: %w", k, err)
		}
		var rec CustomerRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("catalog: decode %s: %w", k, err)
		}
		if rec.Pack == "" {
			rec.Pack = packID
		}
		out = append(out, rec)
	}
	return out, nil
}
