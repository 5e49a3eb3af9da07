package repository

import (
	"context"
	"errors"
	"fmt"

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
