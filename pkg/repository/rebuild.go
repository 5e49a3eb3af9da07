package repository

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Sink receives what Rebuild reads from a target. Implementations must be safe for concurrent
// use and idempotent: a rebuild may run twice, or over a store that already holds entries.
type Sink interface {
	// Erase records that a customer was erased; its key must never be imported afterwards.
	Erase(ctx context.Context, pseudonym string) error
	// ImportKey stores a wrapped data key unless the store already has the scope.
	ImportKey(ctx context.Context, scope string, e keys.Envelope) error
	// IndexPack records a pack and the targets holding both it and its manifest.
	IndexPack(ctx context.Context, m pack.Manifest, targets []string) error
	// PutSnapshot records a committed snapshot and moves its class's head if it is newer.
	PutSnapshot(ctx context.Context, sn snapshot.Snapshot) error
}

// RebuildReport says what a rebuild read.
type RebuildReport struct {
	Packs     int
	Keys      int // distinct data keys imported (the catalog key included)
	Erased    int
	Snapshots int
	// Unreachable names other targets whose erasure records could not be read: an erasure
	// recorded only there is not known to this rebuild.
	Unreachable []string
	// Failures are objects that could not be read or authenticated in any target.
	Failures []string
}

// OK reports whether every object was read.
func (r RebuildReport) OK() bool { return len(r.Failures) == 0 }

// RebuildProgress is passed to the progress callback after each manifest.
type RebuildProgress struct{ Done, Total int }

// RebuildOptions tune a rebuild.
type RebuildOptions struct {
	// Concurrency is the number of manifests read at once (default 8).
	Concurrency int
	// Progress, when set, is called after each manifest (from several goroutines, serialised).
	Progress func(RebuildProgress)
}

// Rebuild reads the record of one target, from, and feeds the key store, the index and the
// snapshot list through sink, in the order of docs/design.md section 11: erasure records (from
// from and every target in others that answers), then manifests with their keys, then snapshot
// records. A pack is indexed with the targets (from and others) whose listings hold both its pack
// and its manifest; an unreadable copy in from is read from the others.
func Rebuild(ctx context.Context, from target.Reader, others []target.Reader, o *Opener, sink Sink, opts RebuildOptions) (RebuildReport, error) {
	var rep RebuildReport
	all := append([]target.Reader{from}, others...)

	// 1. Erasures, from every target that answers.
	erased := map[string]bool{}
	for i, t := range all {
		found, err := erasures(ctx, t, o)
		if err != nil {
			if i == 0 && !isKeyError(err) {
				return rep, fmt.Errorf("list erasures in %s: %w", t.Name(), err)
			}
			if isKeyError(err) {
				return rep, err
			}
			rep.Unreachable = append(rep.Unreachable, t.Name())
			continue
		}
		for _, p := range found {
			erased[p] = true
		}
	}
	for _, p := range sortedKeys(erased) {
		if err := sink.Erase(ctx, p); err != nil {
			return rep, err
		}
	}
	rep.Erased = len(erased)

	// 2. Which targets hold what.
	listings := make([]map[string]bool, len(all))
	for i, t := range all {
		names := map[string]bool{}
		err := t.List(ctx, PackPrefix, func(in target.Info) error { names[in.Name] = true; return nil })
		if err == nil {
			err = t.List(ctx, ManifestPrefix, func(in target.Info) error { names[in.Name] = true; return nil })
		}
		if err != nil {
			if i == 0 {
				return rep, fmt.Errorf("list %s: %w", t.Name(), err)
			}
			continue // unreachable: it is not named as a holder
		}
		listings[i] = names
	}
	var ids []string
	for name := range listings[0] {
		if id, ok := parseLeaf(name, ManifestPrefix); ok && pack.ValidID(id) && name == ManifestName(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)

	// 3. Manifests and keys.
	reader := NewReader(o, all...)
	var (
		mu       sync.Mutex
		imported = map[string]bool{}
		done     int
		firstErr error
	)
	importKey := func(scope string, env keys.Envelope) error {
		mu.Lock()
		skip := imported[scope] || erased[scope]
		if !skip { // an erased scope is never imported, so never counted in rep.Keys
			imported[scope] = true
		}
		mu.Unlock()
		if skip {
			return nil
		}
		// A key wrapped by a KEK destroyed after a rotation is imported from its envelope
		// under the active KEK instead.
		if !keys.Holds(o.KMS(), env.KEK) {
			cur, ok, err := o.Envelope(ctx, scope)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("data key of %s is wrapped by KEK %s, which is not held, and no target holds its envelope under the active KEK: %w",
					scope, env.KEK, keys.ErrUnwrap)
			}
			env = cur
		}
		return sink.ImportKey(ctx, scope, env)
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 8
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				err := rebuildPack(ctx, reader, all, listings, id, importKey, sink)
				mu.Lock()
				switch {
				case isKeyError(err) || errors.Is(err, context.Canceled):
					if firstErr == nil {
						firstErr = err
					}
				case err != nil:
					rep.Failures = append(rep.Failures, fmt.Sprintf("pack %s: %v", id, err))
				default:
					rep.Packs++
				}
				done++
				if opts.Progress != nil {
					opts.Progress(RebuildProgress{Done: done, Total: len(ids)})
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return rep, firstErr
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	rep.Keys = len(imported)

	// 4. Snapshot records.
	var jobs []string
	err := from.List(ctx, SnapshotPrefix, func(in target.Info) error {
		if job, ok := parseSnapshotRecord(in.Name); ok {
			jobs = append(jobs, job)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("list snapshots in %s: %w", from.Name(), err)
	}
	for _, job := range jobs {
		sn, err := first(ctx, reader, SnapshotRecordName(job), func(b []byte) (snapshot.Snapshot, error) {
			return o.SnapshotRecord(ctx, job, b)
		})
		if err != nil {
			if isKeyError(err) {
				return rep, err
			}
			rep.Failures = append(rep.Failures, fmt.Sprintf("snapshot %s: %v", job, err))
			continue
		}
		if err := sink.PutSnapshot(ctx, sn); err != nil {
			return rep, err
		}
		rep.Snapshots++
	}
	sort.Strings(rep.Failures)
	return rep, nil
}

func rebuildPack(ctx context.Context, r *Reader, all []target.Reader, listings []map[string]bool, id string,
	importKey func(string, keys.Envelope) error, sink Sink) error {
	type opened struct {
		m   pack.Manifest
		env keys.Envelope
	}
	got, err := first(ctx, r, ManifestName(id), func(b []byte) (opened, error) {
		env, err := r.Opener.CatalogEnvelope(ctx, b)
		if err != nil {
			return opened{}, err
		}
		m, err := r.Opener.Manifest(ctx, id, b)
		return opened{m, env}, err
	})
	if err != nil {
		return err
	}
	m := got.m
	if err := importKey(pack.CatalogScope, got.env); err != nil {
		return err
	}
	for _, c := range m.Customers() {
		k, ok := m.Keys[c]
		if !ok {
			return fmt.Errorf("manifest lacks the data key of %s", c)
		}
		if err := importKey(c, keys.Envelope{KEK: k.KEK, DEK: k.DEK}); err != nil {
			return err
		}
	}
	var holders []string
	for i, t := range all {
		if listings[i] != nil && listings[i][PackName(id)] && listings[i][ManifestName(id)] {
			holders = append(holders, t.Name())
		}
	}
	if len(holders) == 0 {
		return fmt.Errorf("no target holds both the pack and its manifest")
	}
	return sink.IndexPack(ctx, m, holders)
}

// erasures lists and authenticates the erasure records of one target.
func erasures(ctx context.Context, t target.Reader, o *Opener) ([]string, error) {
	var names []string
	err := t.List(ctx, ErasurePrefix, func(in target.Info) error {
		if p, ok := parseLeaf(in.Name, ErasurePrefix); ok && ValidPseudonym(p) && in.Name == ErasureName(p) {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range names {
		b, err := ReadAll(ctx, t, ErasureName(p), maxHeader+4096)
		if err != nil {
			return nil, err
		}
		if _, err := o.Erasure(ctx, p, b); err != nil {
			if isKeyError(err) {
				return nil, err
			}
			continue // forged or damaged: not an erasure; another target may hold a good copy
		}
		out = append(out, p)
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
