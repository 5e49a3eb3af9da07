// Package fanout runs independent calls a bounded number at a time: key-store lookups, cache
// shards, sealing. Callers keep results in slices indexed like the calls, so no locking is
// needed and the order of results is the order of the inputs.
package fanout

import "sync"

// Each calls fn(0) to fn(n-1), at most limit at a time (at least one), and returns when every
// call has returned.
func Each(n, limit int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(limit, n)) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
