package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/internal/fanout"
)

// Found is one scope's answer to a bulk lookup: its key, or the error Lookup gives for it
// (ErrNotFound, ErrDestroyed, a KMS or transport error).
type Found struct {
	Key []byte
	Err error
}

// BulkLookup is a Store that answers many lookups at once: a restore of every customer needs
// thousands of keys, and one round trip each would dominate it.
type BulkLookup interface {
	// LookupMany answers Lookup for every scope, in order. The error is for the store as a
	// whole (it could not be read); the answers are then not valid.
	LookupMany(ctx context.Context, scopes []string) ([]Found, error)
}

// LookupMany looks scopes up in store: at once when it is a BulkLookup, otherwise with at most
// parallel Lookup calls in flight. It never creates a key.
func LookupMany(ctx context.Context, store Store, scopes []string, parallel int) ([]Found, error) {
	if b, ok := store.(BulkLookup); ok {
		return b.LookupMany(ctx, scopes)
	}
	return lookupEach(ctx, scopes, parallel, store.Lookup), nil
}

// lookupEach calls lookup for every scope, at most parallel at a time.
func lookupEach(ctx context.Context, scopes []string, parallel int, lookup func(context.Context, string) ([]byte, error)) []Found {
	out := make([]Found, len(scopes))
	fanout.Each(len(scopes), parallel, func(i int) { out[i].Key, out[i].Err = lookup(ctx, scopes[i]) })
	return out
}

// kvBulkMin is the number of scopes from which LookupMany reads the whole bucket (one stream
// of every entry) instead of one Get per scope.
const kvBulkMin = 64

// kvUnwrapParallel bounds the unwraps in flight: a remote KMS answers each in a round trip.
const kvUnwrapParallel = 16

var _ BulkLookup = (*KVStore)(nil)

// LookupMany answers Lookup for every scope. For many scopes it reads the current value of
// every key in the bucket in one stream (a watch that ends after the initial values) rather
// than one Get each; each wanted key is then unwrapped as Lookup does. The answers are not
// cached: a restore keeps its own.
func (s *KVStore) LookupMany(ctx context.Context, scopes []string) ([]Found, error) {
	if len(scopes) < kvBulkMin {
		return lookupEach(ctx, scopes, kvUnwrapParallel, s.Lookup), nil
	}
	out := make([]Found, len(scopes))
	want := make(map[string][]int, len(scopes))
	for i, sc := range scopes {
		if err := ValidateScope(sc); err != nil {
			out[i].Err = err
			continue
		}
		want[sc] = append(want[sc], i)
	}
	recs, err := s.readAll(ctx, want)
	if err != nil {
		return nil, err
	}
	type job struct {
		scope string
		rec   record
	}
	var jobs []job
	for sc, idx := range want {
		r, ok := recs[sc]
		var f Found
		switch {
		case !ok:
			f.Err = ErrNotFound
		case r.V != 1:
			f.Err = fmt.Errorf("%w: %s", ErrCorrupt, sc)
		case r.Destroyed != "":
			f.Err = ErrDestroyed
		default:
			jobs = append(jobs, job{sc, r})
			continue
		}
		for _, i := range idx {
			out[i] = f
		}
	}
	res := make([]Found, len(jobs))
	fanout.Each(len(jobs), kvUnwrapParallel, func(i int) {
		j := jobs[i]
		res[i].Key, res[i].Err = Envelope{KEK: j.rec.KMSKeyID, DEK: j.rec.Wrapped}.Open(ctx, s.kms, j.scope)
	})
	for n, j := range jobs {
		for k, i := range want[j.scope] {
			out[i] = res[n]
			if k > 0 && res[n].Key != nil { // every caller gets its own copy, as from Lookup
				out[i].Key = append([]byte(nil), res[n].Key...)
			}
		}
	}
	return out, nil
}

// readAll returns the current record of every wanted scope the bucket holds. A deleted or
// purged scope is absent, as Get reports it.
func (s *KVStore) readAll(ctx context.Context, want map[string][]int) (map[string]record, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("keys: read bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	recs := make(map[string]record, len(want))
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("keys: read bucket: the watch ended before the last value")
			}
			if e == nil { // every current value has been delivered
				return recs, nil
			}
			if _, ok := want[e.Key()]; !ok {
				continue
			}
			var r record
			if json.Unmarshal(e.Value(), &r) != nil {
				r.V = 0 // reported as corrupt, as read does
			}
			recs[e.Key()] = r
		}
	}
}
