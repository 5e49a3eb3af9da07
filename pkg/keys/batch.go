package keys

import (
	"context"
	"errors"
	"sync"
)

// batchParallel bounds the key-store requests DataKeys keeps in flight. A KV round trip is
// mostly waiting, so a few dozen overlap well without flooding the broker.
const batchParallel = 32

// DataKeys returns the data keys of every distinct scope in scopes, creating missing ones, with
// up to batchParallel requests in flight: a pack or a batch of source records whose customers
// are new costs about one key-store round trip instead of two per customer. Creation keeps
// Store's semantics (create-only; concurrent creators, in this process or another, agree on
// one key). A destroyed scope maps to nil; any other error fails the whole call.
func DataKeys(ctx context.Context, s Store, scopes []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(scopes))
	todo := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		if _, ok := out[sc]; !ok {
			out[sc] = nil
			todo = append(todo, sc)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		slots = make(chan struct{}, batchParallel)
	)
	for _, sc := range todo {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			dek, err := s.DataKey(ctx, sc)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				out[sc] = dek
			case errors.Is(err, ErrDestroyed):
			case first == nil:
				first = err
				cancel()
			}
		})
	}
	wg.Wait()
	if first != nil {
		for _, k := range out {
			clear(k)
		}
		return nil, first
	}
	return out, nil
}
