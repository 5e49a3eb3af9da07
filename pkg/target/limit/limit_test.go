package limit_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/limit"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target { return limit.New(mem.New(), 2, 2) })
}

// gauge records the highest number of Puts in flight in the wrapped target.
type gauge struct {
	target.Target
	cur, peak atomic.Int32
}

func (g *gauge) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	n := g.cur.Add(1)
	defer g.cur.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	time.Sleep(5 * time.Millisecond)
	return g.Target.Put(ctx, name, r, size, opts)
}

func TestPutLimit(t *testing.T) {
	g := &gauge{Target: mem.New()}
	l := limit.New(g, 3, 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { targettest.Put(t, l, string(rune('a'+i)), []byte{byte(i)}) })
	}
	wg.Wait()
	if p := g.peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak concurrent Puts = %d, want 3 (at least 2)", p)
	}
}

func TestGetHoldsSlotUntilClose(t *testing.T) {
	m := mem.New()
	targettest.Put(t, m, "a", []byte("x"))
	l := limit.New(m, 0, 1)
	rc, err := l.Get(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.GetRange(ctx, "a", 0, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Get with the slot taken = %v, want the context's deadline", err)
	}
	rc.Close()
	rc.Close() // a second Close must not free a slot it does not hold
	targettest.AssertContent(t, l, "a", []byte("x"))
	// A failed Get gives its slot back.
	f := faulty.New(m)
	f.Down()
	l = limit.New(f, 0, 1)
	for range 3 {
		if _, err := l.Get(t.Context(), "a"); !errors.Is(err, faulty.ErrUnavailable) {
			t.Fatalf("Get = %v", err)
		}
	}
}
