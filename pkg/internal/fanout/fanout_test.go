package fanout_test

import (
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/internal/fanout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every index is called once, never more than limit at a time, and n = 0 calls nothing.
func TestEach(t *testing.T) {
	for _, tc := range []struct{ n, limit int }{{0, 4}, {1, 0}, {10, 1}, {100, 7}, {5, 50}} {
		calls := make([]atomic.Int32, tc.n)
		var running, peak atomic.Int32
		fanout.Each(tc.n, tc.limit, func(i int) {
			r := running.Add(1)
			for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
			}
			calls[i].Add(1)
			running.Add(-1)
		})
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n=%d limit=%d: index %d called %d times", tc.n, tc.limit, i, c)
			}
		}
		if p := int(peak.Load()); p > max(1, tc.limit) {
			t.Fatalf("n=%d limit=%d: %d calls at once", tc.n, tc.limit, p)
		}
	}
}
