// Package retry wraps a target.Target and retries operations that failed with errors that
// may be transient, with capped exponential backoff and full jitter.
//
// It never retries errors matching target.ErrPermanent, nor any error once the caller's context
// is done or when an operation returned context.Canceled. A per-attempt timeout counts as
// transient. Put rewinds its reader before each attempt. List resumes after the last object it
// delivered, so fn never sees an object twice; fn's own error stops List without a retry.
// Get and GetRange retry only the opening of the object, not reads from the returned body.
//
// When an earlier Put attempt timed out after the target stored the object, a later attempt
// returns target.ErrExists; callers compare checksums (Stat) as they would for any ErrExists.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// Target retries the operations of the target it wraps.
type Target struct {
	target.Target
	cfg config
}

type config struct {
	attempts          int
	initial, maxDelay time.Duration
	maxElapsed        time.Duration
	attemptTimeout    time.Duration
	now               func() time.Time
	sleep             func(context.Context, time.Duration) error
	jitter            func(time.Duration) time.Duration
	onRetry           func(ctx context.Context, op string, attempt int, err error, wait time.Duration)
}

// Option configures a Target.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// MaxAttempts caps the attempts per operation, the first included (default 5; < 1 means 1).
func MaxAttempts(n int) Option { return optionFunc(func(c *config) { c.attempts = max(n, 1) }) }

// Backoff sets the first retry delay cap and the largest one (defaults 100ms and 10s). The
// cap doubles per attempt; the actual delay is uniform in [0, cap) ("full jitter").
func Backoff(initial, maxDelay time.Duration) Option {
	return optionFunc(func(c *config) { c.initial, c.maxDelay = initial, maxDelay })
}

// MaxElapsed stops retrying when the next attempt would start more than d after the first
// (default 2m; 0 means no limit).
func MaxElapsed(d time.Duration) Option { return optionFunc(func(c *config) { c.maxElapsed = d }) }

// AttemptTimeout bounds each attempt (default none: a large Put may legitimately take long).
// For Get and GetRange it bounds opening the object, not reading it.
func AttemptTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.attemptTimeout = d })
}

// WithClock replaces time.Now and the context-aware sleep between attempts, for tests.
func WithClock(now func() time.Time, sleep func(context.Context, time.Duration) error) Option {
	return optionFunc(func(c *config) { c.now, c.sleep = now, sleep })
}

// WithJitter replaces the random delay drawn in [0, capped), for tests.
func WithJitter(f func(capped time.Duration) time.Duration) Option {
	return optionFunc(func(c *config) { c.jitter = f })
}

// OnRetry is called before each wait, e.g. to log or to add a span event; ctx is the caller's,
// op is "put", "get", "get_range", "stat", "list" or "delete", attempt the one that failed.
func OnRetry(f func(ctx context.Context, op string, attempt int, err error, wait time.Duration)) Option {
	return optionFunc(func(c *config) { c.onRetry = f })
}

// New wraps t.
func New(t target.Target, opts ...Option) *Target {
	c := config{
		attempts: 5, initial: 100 * time.Millisecond, maxDelay: 10 * time.Second, maxElapsed: 2 * time.Minute,
		now: time.Now, sleep: sleep,
		jitter: func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d)
		},
	}
	for _, o := range opts {
		o.apply(&c)
	}
	return &Target{Target: t, cfg: c}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// do runs attempt until it succeeds, fails for good, or the budget is spent. attempt gets a
// context bounded by timeout (none if 0); a stopError ends the loop with the error it holds.
func (t *Target) do(ctx context.Context, op string, timeout time.Duration, attempt func(ctx context.Context) error) error {
	start := t.cfg.now()
	for n := 1; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, timeout)
		}
		err := attempt(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		var stop stopError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &stop):
			return stop.err
		case ctx.Err() != nil, errors.Is(err, target.ErrPermanent), errors.Is(err, context.Canceled) && !timedOut:
			return err
		case n >= t.cfg.attempts:
			return fmt.Errorf("%w (gave up after %d attempts)", err, n)
		}
		wait := t.cfg.jitter(min(t.cfg.maxDelay, t.cfg.initial<<min(n-1, 30)))
		if t.cfg.maxElapsed > 0 && t.cfg.now().Add(wait).Sub(start) > t.cfg.maxElapsed {
			return fmt.Errorf("%w (gave up after %d attempts in %v)", err, n, t.cfg.now().Sub(start))
		}
		if t.cfg.onRetry != nil {
			t.cfg.onRetry(ctx, op, n, err, wait)
		}
		if serr := t.cfg.sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (retry interrupted: %w)", err, serr)
		}
	}
}

// stopError carries an error that must end the retry loop as is (fn's error in List).
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }

// Put implements target.Writer, rewinding r before every attempt.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	return t.do(ctx, "put", t.cfg.attemptTimeout, func(ctx context.Context) error {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return stopError{fmt.Errorf("retry: rewind reader for %s: %w", name, err)}
		}
		return t.Target.Put(ctx, name, r, size, opts)
	})
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.open(ctx, "get", func(ctx context.Context) (io.ReadCloser, error) { return t.Target.Get(ctx, name) })
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	return t.open(ctx, "get_range", func(ctx context.Context) (io.ReadCloser, error) {
		return t.Target.GetRange(ctx, name, offset, length)
	})
}

// open retries opening a body. The attempt timeout must not cut the body short, so the body
// gets a context that the timeout cancels only until open returns, and that Close releases.
func (t *Target) open(ctx context.Context, op string, get func(context.Context) (io.ReadCloser, error)) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := t.do(ctx, op, 0, func(context.Context) error {
		bctx, cancel := context.WithCancel(ctx)
		var timer *time.Timer
		if d := t.cfg.attemptTimeout; d > 0 {
			timer = time.AfterFunc(d, cancel)
		}
		body, err := get(bctx)
		if timer != nil && !timer.Stop() { // fired: bctx is cancelled, body useless
			if err == nil {
				body.Close()
			}
			err = fmt.Errorf("retry: open attempt timed out after %v: %w", t.cfg.attemptTimeout, context.DeadlineExceeded)
		}
		if err != nil {
			cancel()
			return err
		}
		rc = closer{body, cancel}
		return nil
	})
	return rc, err
}

type closer struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c closer) Close() error {
	defer c.cancel()
	return c.ReadCloser.Close()
}

// Stat implements target.Reader.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	var info target.Info
	err := t.do(ctx, "stat", t.cfg.attemptTimeout, func(ctx context.Context) (err error) {
		info, err = t.Target.Stat(ctx, name)
		return err
	})
	return info, err
}

// List implements target.Reader. A retried walk skips objects up to the last one delivered.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	last, started := "", false
	return t.do(ctx, "list", t.cfg.attemptTimeout, func(ctx context.Context) error {
		return t.Target.List(ctx, prefix, func(i target.Info) error {
			if started && i.Name <= last {
				return nil
			}
			if err := fn(i); err != nil {
				return stopError{err}
			}
			last, started = i.Name, true
			return nil
		})
	})
}

// Delete implements target.Writer. A retry that finds the object gone returns ErrNotFound,
// even if an earlier attempt deleted it.
func (t *Target) Delete(ctx context.Context, name string) error {
	return t.do(ctx, "delete", t.cfg.attemptTimeout, func(ctx context.Context) error { return t.Target.Delete(ctx, name) })
}
