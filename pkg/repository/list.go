package repository

import (
	"context"
	"errors"
	"fmt"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/target"
)

// PackIDs lists the ids of the pack manifests held by any of the reader's targets that answer.
// A restore of everything compares it with the index, so an index entry deleted or lost never
// silently drops a pack. It fails only when no target answers.
func (r *Reader) PackIDs(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var errs []error
	answered := false
	for _, t := range r.Targets {
		err := t.List(ctx, ManifestPrefix, func(in target.Info) error {
			if id, ok := parseLeaf(in.Name, ManifestPrefix); ok && pack.ValidID(id) && in.Name == ManifestName(id) {
				seen[id] = true
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
			continue
		}
		answered = true
	}
	if !answered && len(r.Targets) > 0 {
		return nil, fmt.Errorf("list manifests: %w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return sortedKeys(seen), nil
}

// Unindexed is a pack the targets hold but the index does not name.
type Unindexed struct {
	Pack    string
	Targets []string // targets holding both the pack and its manifest
	Indexed bool     // set when Reindex put it back in the index
	Err     error    // why it was not indexed
}

// Reindex compares the manifests the reader's targets hold with the index, and indexes (through
// sink, unless dryRun) every pack the index lacks whose manifest authenticates, with the targets
// holding both it and its manifest. A lost index entry thus never hides a backup from a restore
// of one customer.
func Reindex(ctx context.Context, r *Reader, index interface {
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
}, sink Sink, dryRun bool) ([]Unindexed, error) {
	recs, err := index.Packs(ctx)
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool, len(recs))
	for _, rec := range recs {
		known[rec.Pack] = true
	}
	ids, err := r.PackIDs(ctx)
	if err != nil {
		return nil, err
	}
	var out []Unindexed
	for _, id := range ids {
		if known[id] {
			continue
		}
		u := Unindexed{Pack: id}
		for _, t := range r.Targets {
			_, perr := t.Stat(ctx, PackName(id))
			_, merr := t.Stat(ctx, ManifestName(id))
			if perr == nil && merr == nil {
				u.Targets = append(u.Targets, t.Name())
			}
		}
		m, err := r.Manifest(ctx, id)
		switch {
		case err != nil:
			u.Err = err
		case len(u.Targets) == 0:
			u.Err = errors.New("no target holds both the pack and its manifest")
		case !dryRun:
			if u.Err = sink.IndexPack(ctx, m, u.Targets); u.Err == nil {
				u.Indexed = true
			}
		}
		if isKeyError(u.Err) {
			return out, u.Err
		}
		out = append(out, u)
	}
	return out, nil
}
