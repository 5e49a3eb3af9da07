// Package faulty wraps a target.Target with faults that tests switch on and off while it is
// in use (all methods are safe for concurrent use), to prove that callers survive outages,
// failed uploads and corrupted reads. Injected errors are never permanent, like real outages.
package faulty

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// Injected errors; neither matches target.ErrPermanent.
var (
	ErrUnavailable = errors.New("faulty: target unavailable")
	ErrInjected    = errors.New("faulty: injected failure")
)

// Target injects faults into the target it wraps.
type Target struct {
	target.Target

	mu        sync.Mutex
	down      bool
	failPuts  int
	failAfter int64 // < 0: off
	corrupt   map[string]bool
	delay     time.Duration
	hold      bool
	held      []heldPut
}

// heldPut is the data of a Put that HoldPuts kept past its return.
type heldPut struct {
	name string
	r    io.Reader
	sum  [32]byte
}

// New wraps t with every fault off.
func New(t target.Target) *Target {
	return &Target{Target: t, failAfter: -1, corrupt: map[string]bool{}}
}

// Down makes every operation fail with ErrUnavailable until Up.
func (t *Target) Down() { t.set(func() { t.down = true }) }

// Up ends Down; other faults stay.
func (t *Target) Up() { t.set(func() { t.down = false }) }

// FailNextPuts makes the next n Puts fail with ErrInjected before touching the target.
func (t *Target) FailNextPuts(n int) { t.set(func() { t.failPuts = n }) }

// FailPutAfterBytes makes the next Put fail with ErrInjected after the wrapped target has read
// n bytes of its data, like a connection dropped mid-upload.
func (t *Target) FailPutAfterBytes(n int64) { t.set(func() { t.failAfter = n }) }

// Corrupt makes Get and GetRange of name return data with its first byte flipped, as if the
// stored copy had rotted. Stat and List are unaffected.
func (t *Target) Corrupt(name string) { t.set(func() { t.corrupt[name] = true }) }

// Delay makes every operation wait d (or until its context ends) before it starts.
func (t *Target) Delay(d time.Duration) { t.set(func() { t.delay = d }) }

// HoldPuts makes every Put hang until its context ends, then fail, keeping the data it was
// given, as an HTTP transport may still be sending a cancelled request's body after the call
// returned. ReadHeld reads that data later.
func (t *Target) HoldPuts() { t.set(func() { t.hold = true }) }

// ReadHeld reads the data of every Put held since HoldPuts to its end and returns the names
// whose bytes no longer match the SHA-256 their Put was given: memory the caller reused while
// a transport could still read it.
func (t *Target) ReadHeld() (changed []string, err error) {
	t.mu.Lock()
	held := t.held
	t.held = nil
	t.mu.Unlock()
	for _, h := range held {
		d := sha256.New()
		if _, err := io.Copy(d, h.r); err != nil {
			return nil, fmt.Errorf("read held %s: %w", h.name, err)
		}
		if [32]byte(d.Sum(nil)) != h.sum {
			changed = append(changed, h.name)
		}
	}
	return changed, nil
}

// Reset switches every fault off (held Puts stay for ReadHeld).
func (t *Target) Reset() {
	t.set(func() {
		t.down, t.failPuts, t.failAfter, t.corrupt, t.delay, t.hold = false, 0, -1, map[string]bool{}, 0, false
	})
}

func (t *Target) set(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f()
}

// enter applies Delay and Down to an operation.
func (t *Target) enter(ctx context.Context) error {
	t.mu.Lock()
	d := t.delay
	t.mu.Unlock()
	if d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down {
		return ErrUnavailable
	}
	return nil
}

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.enter(ctx); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	t.mu.Lock()
	fail := t.failPuts > 0
	if fail {
		t.failPuts--
	}
	after := t.failAfter
	t.failAfter = -1
	hold := t.hold
	if hold {
		t.held = append(t.held, heldPut{name: name, r: r, sum: opts.SHA256})
	}
	t.mu.Unlock()
	if fail {
		return fmt.Errorf("put %s: %w", name, ErrInjected)
	}
	if hold {
		<-ctx.Done()
		return fmt.Errorf("put %s: %w: %w", name, ErrInjected, ctx.Err())
	}
	if after >= 0 {
		r = &failingReader{r: r, left: after}
	}
	return t.Target.Put(ctx, name, r, size, opts)
}

// failingReader fails with ErrInjected once left bytes are read since the last rewind.
type failingReader struct {
	r    io.ReadSeeker
	left int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, ErrInjected
	}
	n, err := f.r.Read(p[:min(int64(len(p)), f.left)])
	f.left -= int64(n)
	return n, err
}

func (f *failingReader) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.open(ctx, name, func() (io.ReadCloser, error) { return t.Target.Get(ctx, name) })
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	return t.open(ctx, name, func() (io.ReadCloser, error) { return t.Target.GetRange(ctx, name, offset, length) })
}

func (t *Target) open(ctx context.Context, name string, get func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	if err := t.enter(ctx); err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	rc, err := get()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	corrupt := t.corrupt[name]
	t.mu.Unlock()
	if corrupt {
		return &flipReader{ReadCloser: rc}, nil
	}
	return rc, nil
}

// flipReader flips the first byte it returns.
type flipReader struct {
	io.ReadCloser
	done bool
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// Stat implements target.Reader.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := t.enter(ctx); err != nil {
		return target.Info{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return t.Target.Stat(ctx, name)
}

// List implements target.Reader.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := t.enter(ctx); err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return t.Target.List(ctx, prefix, fn)
}

// Delete implements target.Writer.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := t.enter(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return t.Target.Delete(ctx, name)
}
