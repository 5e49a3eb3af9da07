package retry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/retry"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock records the waits instead of sleeping.
type fakeClock struct {
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) opts() []retry.Option {
	c.now = time.Unix(0, 0)
	return []retry.Option{
		retry.WithClock(func() time.Time { return c.now }, func(ctx context.Context, d time.Duration) error {
			c.waits = append(c.waits, d)
			c.now = c.now.Add(d)
			return ctx.Err()
		}),
		retry.WithJitter(func(d time.Duration) time.Duration { return d }), // upper bound
	}
}

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target {
		return retry.New(mem.New(), retry.Backoff(time.Millisecond, time.Millisecond))
	})
}

func put(ctx context.Context, tg target.Target, name string, data []byte) error {
	return tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

func TestRetriesTransientWithBackoff(t *testing.T) {
	f := faulty.New(mem.New())
	var clock fakeClock
	r := retry.New(f, append(clock.opts(), retry.MaxAttempts(5), retry.Backoff(100*time.Millisecond, 300*time.Millisecond))...)
	f.FailNextPuts(3)
	data := targettest.Data(1, 5000)
	if err := put(t.Context(), r, "a", data); err != nil {
		t.Fatalf("Put: %v", err)
	}
	targettest.AssertContent(t, r, "a", data)
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	if fmt.Sprint(clock.waits) != fmt.Sprint(want) {
		t.Errorf("waits = %v, want %v", clock.waits, want)
	}
}

// Each attempt must see the whole data even though the failed one consumed part of it.
func TestPutRewindsEachAttempt(t *testing.T) {
	f := faulty.New(mem.New())
	var clock fakeClock
	r := retry.New(f, clock.opts()...)
	data := targettest.Data(2, 1<<20)
	f.FailPutAfterBytes(4096)
	if err := put(t.Context(), r, "a", data); err != nil {
		t.Fatalf("Put: %v", err)
	}
	targettest.AssertContent(t, r, "a", data)
	if len(clock.waits) != 1 {
		t.Errorf("%d retries, want 1", len(clock.waits))
	}
}

func TestGivesUp(t *testing.T) {
	f := faulty.New(mem.New())
	f.Down()
	var clock fakeClock
	r := retry.New(f, append(clock.opts(), retry.MaxAttempts(3))...)
	if _, err := r.Stat(t.Context(), "a"); !errors.Is(err, faulty.ErrUnavailable) || len(clock.waits) != 2 {
		t.Errorf("Stat = %v after %d waits; want ErrUnavailable after 2", err, len(clock.waits))
	}

	clock = fakeClock{}
	r = retry.New(f, append(clock.opts(), retry.MaxAttempts(100), retry.Backoff(time.Second, time.Second), retry.MaxElapsed(5*time.Second))...)
	if _, err := r.Stat(t.Context(), "a"); !errors.Is(err, faulty.ErrUnavailable) || len(clock.waits) != 5 {
		t.Errorf("Stat = %v after %d waits; want ErrUnavailable after 5 (5s budget)", err, len(clock.waits))
	}
}

// counting counts calls to the wrapped target's Put.
type counting struct {
	target.Target
	puts atomic.Int32
}

func (c *counting) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	c.puts.Add(1)
	return c.Target.Put(ctx, name, r, size, opts)
}

func TestNoRetry(t *testing.T) {
	c := &counting{Target: mem.New()}
	var clock fakeClock
	r := retry.New(c, clock.opts()...)
	targettest.Put(t, r, "a", []byte("x"))
	c.puts.Store(0)
	if err := put(t.Context(), r, "a", []byte("x")); !errors.Is(err, target.ErrExists) || c.puts.Load() != 1 {
		t.Errorf("Put existing = %v after %d calls, want ErrExists after 1", err, c.puts.Load())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c.puts.Store(0)
	if err := put(ctx, r, "b", []byte("x")); !errors.Is(err, context.Canceled) || c.puts.Load() != 1 {
		t.Errorf("Put cancelled = %v after %d calls, want context.Canceled after 1", err, c.puts.Load())
	}
	if len(clock.waits) != 0 {
		t.Errorf("waited %v", clock.waits)
	}
}

func TestAttemptTimeout(t *testing.T) {
	f := faulty.New(mem.New())
	targettest.Put(t, f, "a", []byte("hello"))
	f.Delay(time.Hour)
	var retries atomic.Int32
	r := retry.New(f, retry.AttemptTimeout(20*time.Millisecond), retry.MaxAttempts(3), retry.Backoff(time.Millisecond, time.Millisecond),
		retry.OnRetry(func(_ context.Context, op string, attempt int, err error, wait time.Duration) {
			retries.Add(1)
			f.Delay(0) // the next attempt is fast
		}))
	rc, err := r.Get(t.Context(), "a")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	time.Sleep(40 * time.Millisecond) // the timeout must not cut the body
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "hello" || retries.Load() != 1 {
		t.Errorf("Get = %q, %v after %d retries; want hello after 1", b, err, retries.Load())
	}
	f.Delay(time.Hour)
	retries.Store(0)
	if _, err := r.Stat(t.Context(), "a"); err != nil || retries.Load() != 1 {
		t.Errorf("Stat = %v after %d retries; want success after 1", err, retries.Load())
	}
}

// flakyList fails List once after delivering two objects.
type flakyList struct {
	target.Target
	failed bool
}

func (f *flakyList) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	n := 0
	return f.Target.List(ctx, prefix, func(i target.Info) error {
		if n++; n == 3 && !f.failed {
			f.failed = true
			return faulty.ErrUnavailable
		}
		return fn(i)
	})
}

func TestListResumes(t *testing.T) {
	m := mem.New()
	for i := range 5 {
		targettest.Put(t, m, fmt.Sprintf("p/%d", i), nil)
	}
	var clock fakeClock
	r := retry.New(&flakyList{Target: m}, clock.opts()...)
	var got []string
	if err := r.List(t.Context(), "p/", func(i target.Info) error { got = append(got, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[p/0 p/1 p/2 p/3 p/4]" || len(clock.waits) != 1 {
		t.Errorf("List = %v after %d retries", got, len(clock.waits))
	}
	stop := errors.New("stop")
	calls := 0
	err := r.List(t.Context(), "p/", func(target.Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List = %v after %d calls, want fn's error after 1", err, calls)
	}
}
