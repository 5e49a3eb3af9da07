package lazy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/lazy"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/stack"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blocked returns a root below a regular file, so that creating it fails with ENOTDIR, and
// the function that removes the file so that it can be created.
func blocked(t *testing.T) (root string, unblock func()) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "mount")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(file, "custos"), func() {
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
	}
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// counted opens an fs target at root, counting attempts.
func counted(root string, n *atomic.Int64) lazy.Opener {
	return func(context.Context) (target.Target, error) {
		n.Add(1)
		return fs.New(root, fs.WithLabel("offsite"))
	}
}

// The whole target contract holds through a lazy target whose provider was built on first use.
func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target {
		root, unblock := blocked(t)
		var n atomic.Int64
		tg, err := lazy.New(t.Context(), "fs", "fs:offsite", counted(root, &n), lazy.Interval(0))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tg.(*lazy.Target); !ok {
			t.Fatalf("New returned %T for an unreachable root, want *lazy.Target", tg)
		}
		unblock()
		return tg
	})
}

// An fs root that cannot be created gives a lazy target: it has its name and kind, its
// operations fail with ErrUnavailable wrapping the cause (retryable), attempts are spaced by
// the interval, and once the root can be created the target works.
func TestUnreachableThenReachable(t *testing.T) {
	t.Parallel()
	root, unblock := blocked(t)
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	var attempts atomic.Int64
	tg, err := lazy.New(t.Context(), "fs", "fs:offsite", counted(root, &attempts), lazy.WithClock(clk.Now))
	if err != nil {
		t.Fatalf("New: %v, want a lazy target", err)
	}
	defer tg.Close()
	lz := tg.(*lazy.Target)
	if tg.Name() != "fs:offsite" || tg.Kind() != "fs" || lz.Unwrap() != nil {
		t.Fatalf("Name %q, Kind %q, Unwrap %v", tg.Name(), tg.Kind(), lz.Unwrap())
	}
	ctx := t.Context()
	data := []byte("pack bytes")
	put := func() error {
		return tg.Put(ctx, "packs/a", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	}
	err = put()
	switch {
	case !errors.Is(err, lazy.ErrUnavailable), !errors.Is(err, syscall.ENOTDIR), errors.Is(err, target.ErrPermanent):
		t.Fatalf("Put on an unreachable target = %v, want ErrUnavailable wrapping ENOTDIR, not permanent", err)
	}
	if _, err := tg.Stat(ctx, "packs/a"); !errors.Is(err, lazy.ErrUnavailable) {
		t.Fatalf("Stat = %v, want ErrUnavailable", err)
	}
	unblock()
	if err := put(); !errors.Is(err, lazy.ErrUnavailable) {
		t.Fatalf("Put within the interval = %v, want ErrUnavailable without a new attempt", err)
	}
	if n := attempts.Load(); n != 1 {
		t.Fatalf("%d attempts within the interval, want 1 (the one in New)", n)
	}
	clk.Add(5 * time.Second)
	if err := put(); err != nil {
		t.Fatalf("Put once the root can be created: %v", err)
	}
	rc, err := tg.Get(ctx, "packs/a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if _, ok := lz.Unwrap().(*fs.Target); !ok || attempts.Load() != 2 {
		t.Fatalf("Unwrap = %T after %d attempts, want the fs provider after 2", lz.Unwrap(), attempts.Load())
	}
	if _, err := os.Stat(filepath.Join(root, "packs", "a")); err != nil {
		t.Fatalf("object not under the root: %v", err)
	}
}

// A provider that opens at once is returned as it is; configuration errors fail New.
func TestNew(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := mem.New()
	tg, err := lazy.New(ctx, "mem", "mem:x", func(context.Context) (target.Target, error) { return m, nil })
	if err != nil || tg != target.Target(m) {
		t.Fatalf("New = %T, %v, want the provider itself", tg, err)
	}
	for _, cause := range []error{
		errors.New("s3: config: bucket is required"),
		fmt.Errorf("azure: container c: %w", target.ErrPermanent),
		fmt.Errorf("a file error that is also permanent: %w: %w", &os.PathError{Op: "open", Path: "p", Err: syscall.EIO}, target.ErrPermanent),
	} {
		var n atomic.Int64
		tg, err := lazy.New(ctx, "s3", "s3:x", func(context.Context) (target.Target, error) {
			n.Add(1)
			return nil, cause
		})
		if !errors.Is(err, cause) || tg != nil || n.Load() != 1 {
			t.Errorf("New with %v = %v, %v after %d attempts, want that error at once", cause, tg, err, n.Load())
		}
	}
}

func TestTransient(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("fs: root r: %w", &os.PathError{Op: "mkdir", Path: "r", Err: syscall.ENOTDIR}), true},
		{fmt.Errorf("fs: root r: %w", &os.PathError{Op: "mkdir", Path: "r", Err: syscall.EACCES}), true},
		{fmt.Errorf("azure: %w", refused), true},
		{syscall.ESTALE, true},
		{&net.DNSError{Err: "no such host", Name: "h", IsNotFound: true}, true},
		{fmt.Errorf("open: %w", context.DeadlineExceeded), true},
		{errors.New("s3: config: no region configured"), false},
		{fmt.Errorf("%w: %w", target.ErrPermanent, refused), false},
		{context.Canceled, false},
		{nil, false},
	} {
		if got := lazy.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// An opener that ignores its context (a hung mount) holds callers no longer than the attempt
// timeout; its late result is kept; no second attempt starts while it runs.
func TestHungOpener(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var attempts atomic.Int64
	m := mem.New()
	start := time.Now()
	tg, err := lazy.New(t.Context(), "mem", "mem:slow", func(context.Context) (target.Target, error) {
		attempts.Add(1)
		<-release
		return m, nil
	}, lazy.AttemptTimeout(50*time.Millisecond), lazy.Interval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("New waited %s for a hung opener", d)
	}
	if _, err := tg.Stat(t.Context(), "a"); !errors.Is(err, lazy.ErrUnavailable) {
		t.Fatalf("Stat while the opener hangs = %v, want ErrUnavailable", err)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for tg.(*lazy.Target).Unwrap() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := tg.Stat(t.Context(), "a"); !errors.Is(err, target.ErrNotFound) {
		t.Fatalf("Stat after the opener answered = %v, want the provider's ErrNotFound", err)
	}
	if n := attempts.Load(); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

// closeCounter counts Close calls of a provider.
type closeCounter struct {
	*mem.Target
	closes atomic.Int64
}

func (c *closeCounter) Close() error { c.closes.Add(1); return nil }

// Close is safe twice and before the provider is built; later operations fail with ErrClosed
// (permanent); a provider that an attempt in flight returns after Close is closed.
func TestClose(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	done := make(chan struct{})
	p := &closeCounter{Target: mem.New()}
	tg, err := lazy.New(t.Context(), "mem", "mem:x", func(context.Context) (target.Target, error) {
		defer close(done)
		<-release
		return p, nil
	}, lazy.AttemptTimeout(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tg.Stat(t.Context(), "a"); !errors.Is(err, lazy.ErrClosed) || !errors.Is(err, target.ErrPermanent) {
		t.Fatalf("Stat after Close = %v, want ErrClosed, permanent", err)
	}
	close(release)
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for p.closes.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := p.closes.Load(); n != 1 {
		t.Fatalf("late provider closed %d times, want 1", n)
	}
}

// CleanTemp reaches the fs provider through the stack and the lazy target; other providers
// answer errors.ErrUnsupported.
func TestCleanTempThroughStack(t *testing.T) {
	t.Parallel()
	root, unblock := blocked(t)
	var n atomic.Int64
	lz, err := lazy.New(t.Context(), "fs", "fs:offsite", counted(root, &n), lazy.Interval(0))
	if err != nil {
		t.Fatal(err)
	}
	tg := stack.Build(lz, stack.Config{})
	defer tg.Close()
	if _, err := tg.CleanTemp(time.Hour); !errors.Is(err, lazy.ErrUnavailable) {
		t.Fatalf("CleanTemp while unreachable = %v, want ErrUnavailable", err)
	}
	unblock()
	old := filepath.Join(root, ".tmp", "put-old")
	if _, err := tg.CleanTemp(time.Hour); err != nil { // builds the provider, creating .tmp
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if removed, err := tg.CleanTemp(time.Hour); removed != 1 || err != nil {
		t.Fatalf("CleanTemp = %d, %v, want 1 removed", removed, err)
	}
	m := stack.Build(mem.New(), stack.Config{})
	if _, err := m.CleanTemp(time.Hour); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CleanTemp on mem = %v, want ErrUnsupported", err)
	}
}
