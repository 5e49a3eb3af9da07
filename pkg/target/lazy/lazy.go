// Package lazy stands in for a storage target whose provider could not be built because its
// storage was unreachable (an unmounted or failing filesystem, a service refusing connections),
// so that a worker or the CLI starts while one target is down and the target joins once it
// answers.
//
// Contract:
//
//   - New tries to build the provider once. On success it returns the provider itself, unwrapped.
//     An error that Transient does not accept (a configuration error: unknown provider, bad bucket
//     name, refused credentials) is returned at once. A transient error gives a *Target.
//   - Name and Kind answer from configuration, without the provider.
//   - Every other operation first builds the provider if it is not built yet. Attempts run one at
//     a time and start at most once per Interval (default 5s); an operation that may not start
//     one, or whose attempt fails, fails at once with an error matching ErrUnavailable and
//     wrapping the last cause. It matches target.ErrPermanent only when the cause does, so the
//     retry wrapper and the repairer keep trying.
//   - Once built, the provider serves every operation and is never rebuilt.
//   - An attempt is bounded by AttemptTimeout (default 10s) through its context; operations wait
//     for it no longer than that even when the opener ignores its context (a hung filesystem
//     call): it then carries on alone and its late result is kept.
//   - The opener's context ends with the attempt: a provider must not keep it.
//   - Close closes the provider if built, ends an attempt in flight and closes whatever provider
//     that attempt still returns. Operations after Close fail with ErrClosed.
//
// Lazy is a provider as far as pkg/target/stack is concerned: the stack wraps it like any other.
package lazy

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// Named errors, matched with errors.Is.
var (
	// ErrUnavailable marks an operation that failed because the provider is not built yet.
	ErrUnavailable = errors.New("target unavailable")
	// ErrClosed marks an operation on a closed Target.
	ErrClosed = fmt.Errorf("%w: target closed", target.ErrPermanent)
)

// Opener builds a provider. ctx bounds this attempt only.
type Opener func(ctx context.Context) (target.Target, error)

// Transient reports whether err, returned by an Opener, may go away by itself: a network
// failure (net.Error: refused, reset, timeout, DNS), an error from the operating system
// (syscall.Errno, *fs.PathError: a missing mount, EIO, ESTALE, a path that cannot be created)
// or a deadline. Errors matching target.ErrPermanent and every other error are configuration
// errors.
func Transient(err error) bool {
	if err == nil || errors.Is(err, target.ErrPermanent) {
		return false
	}
	var (
		netErr  net.Error
		errno   syscall.Errno
		pathErr *iofs.PathError
	)
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) ||
		errors.As(err, &errno) || errors.As(err, &pathErr)
}

// Target builds its provider on use. It is safe for concurrent use.
type Target struct {
	kind, name string
	open       Opener
	cfg        config
	base       context.Context // parent of every attempt; Close cancels it
	cancelBase context.CancelFunc

	built atomic.Pointer[built]

	mu      sync.Mutex
	closed  bool
	attempt chan struct{} // non-nil while an attempt runs; closed when it ends
	started time.Time     // start of the last attempt
	cause   error         // error of the last finished attempt
}

type built struct{ t target.Target }

type config struct {
	interval, timeout time.Duration
	now               func() time.Time
}

// Option configures a Target.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Interval is the least time between the starts of two attempts (default 5s).
func Interval(d time.Duration) Option { return optionFunc(func(c *config) { c.interval = d }) }

// AttemptTimeout bounds one attempt (default 10s).
func AttemptTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.timeout = max(d, time.Millisecond) })
}

// WithClock replaces time.Now in deciding when the next attempt may start, for tests.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *config) { c.now = now }) }

// New builds the provider with open, or returns a Target that builds it on use when the
// error is transient (see the package doc). kind and name are what the provider's Kind and
// Name would return, e.g. "fs" and "fs:offsite".
func New(ctx context.Context, kind, name string, open Opener, opts ...Option) (target.Target, error) {
	c := config{interval: 5 * time.Second, timeout: 10 * time.Second, now: time.Now}
	for _, o := range opts {
		o.apply(&c)
	}
	t := &Target{kind: kind, name: name, open: open, cfg: c}
	t.base, t.cancelBase = context.WithCancel(context.WithoutCancel(ctx))
	p, err := t.provider(ctx)
	switch {
	case err == nil:
		t.cancelBase()
		return p, nil
	case ctx.Err() != nil || !Transient(err):
		t.Close()
		return nil, err
	}
	return t, nil
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return t.kind }

// Unwrap returns the provider, or nil while it is not built.
func (t *Target) Unwrap() target.Target {
	if b := t.built.Load(); b != nil {
		return b.t
	}
	return nil
}

// provider returns the built provider, or starts or joins an attempt to build it.
func (t *Target) provider(ctx context.Context) (target.Target, error) {
	if b := t.built.Load(); b != nil {
		return b.t, nil
	}
	t.mu.Lock()
	if b := t.built.Load(); b != nil {
		t.mu.Unlock()
		return b.t, nil
	}
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", t.name, ErrClosed)
	}
	done := t.attempt
	if done == nil {
		if since := t.cfg.now().Sub(t.started); t.cause != nil && since >= 0 && since < t.cfg.interval {
			cause := t.cause
			t.mu.Unlock()
			return nil, t.unavailable(cause)
		}
		done = t.start()
	}
	wait := t.cfg.timeout - t.cfg.now().Sub(t.started)
	t.mu.Unlock()
	if wait <= 0 {
		return nil, t.unavailable(t.hung())
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("open %s: %w", t.name, ctx.Err())
	case <-timer.C:
		return nil, t.unavailable(t.hung())
	}
	if b := t.built.Load(); b != nil {
		return b.t, nil
	}
	t.mu.Lock()
	cause, closed := t.cause, t.closed
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: %w", t.name, ErrClosed)
	}
	return nil, t.unavailable(cause)
}

// start runs one attempt in its own goroutine, so that callers can stop waiting for an opener
// that ignores its context. t.mu is held.
func (t *Target) start() chan struct{} {
	done := make(chan struct{})
	t.attempt, t.started = done, t.cfg.now()
	ctx, cancel := context.WithTimeout(t.base, t.cfg.timeout)
	go func() {
		p, err := t.open(ctx)
		cancel()
		if err == nil && p == nil {
			err = errors.New("opener returned no target")
		}
		t.mu.Lock()
		t.attempt = nil
		switch {
		case err != nil:
			t.cause = err
		case t.closed:
			defer p.Close()
		default:
			t.built.Store(&built{p})
			t.cause = nil
		}
		t.mu.Unlock()
		close(done)
	}()
	return done
}

// hung is the cause given while an attempt runs past its timeout: an opener that ignores its
// context.
func (t *Target) hung() error {
	return fmt.Errorf("opening has not answered in %s: %w", t.cfg.timeout, context.DeadlineExceeded)
}

func (t *Target) unavailable(cause error) error {
	return fmt.Errorf("%s: %w: %w", t.name, ErrUnavailable, cause)
}

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	p, err := t.provider(ctx)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return p.Put(ctx, name, r, size, opts)
}

// Delete implements target.Writer.
func (t *Target) Delete(ctx context.Context, name string) error {
	p, err := t.provider(ctx)
	if err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return p.Delete(ctx, name)
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := t.provider(ctx)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return p.Get(ctx, name)
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	p, err := t.provider(ctx)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return p.GetRange(ctx, name, offset, length)
}

// Stat implements target.Reader.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	p, err := t.provider(ctx)
	if err != nil {
		return target.Info{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return p.Stat(ctx, name)
}

// List implements target.Reader.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	p, err := t.provider(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return p.List(ctx, prefix, fn)
}

// CleanTemp forwards to the provider's CleanTemp (fs staging cleanup), building the provider
// first; it fails with errors.ErrUnsupported when the provider has none.
func (t *Target) CleanTemp(olderThan time.Duration) (int, error) {
	p, err := t.provider(context.Background())
	if err != nil {
		return 0, fmt.Errorf("clean temp: %w", err)
	}
	c, ok := p.(interface {
		CleanTemp(time.Duration) (int, error)
	})
	if !ok {
		return 0, fmt.Errorf("clean temp on %s: %w", t.name, errors.ErrUnsupported)
	}
	return c.CleanTemp(olderThan)
}

// Close implements target.Target. It is safe to call twice.
func (t *Target) Close() error {
	t.mu.Lock()
	t.closed = true
	t.cancelBase()
	b := t.built.Swap(nil)
	t.mu.Unlock()
	if b != nil {
		return b.t.Close()
	}
	return nil
}
