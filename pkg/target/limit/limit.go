// Package limit bounds how many Puts and how many Gets run at once against a target, so that
// one slow target cannot take every connection, file descriptor or buffer of a worker.
//
// A Get or GetRange holds its slot until the returned body is closed: the transfer, not the
// request, is what costs. Callers must therefore close bodies before opening more than the
// limit allows, or they wait. Stat, List and Delete are not limited.
package limit

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// Target limits the concurrency of the target it wraps.
type Target struct {
	target.Target
	puts, gets chan struct{} // nil: unlimited
}

// New wraps t with at most puts concurrent Puts and gets concurrent Gets; 0 or less means no
// limit for that side.
func New(t target.Target, puts, gets int) *Target {
	sem := func(n int) chan struct{} {
		if n <= 0 {
			return nil
		}
		return make(chan struct{}, n)
	}
	return &Target{Target: t, puts: sem(puts), gets: sem(gets)}
}

func acquire(ctx context.Context, sem chan struct{}) error {
	if sem == nil {
		return nil
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("limit: wait for a slot: %w", ctx.Err())
	}
}

func release(sem chan struct{}) {
	if sem != nil {
		<-sem
	}
}

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := acquire(ctx, t.puts); err != nil {
		return err
	}
	defer release(t.puts)
	return t.Target.Put(ctx, name, r, size, opts)
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.open(ctx, func() (io.ReadCloser, error) { return t.Target.Get(ctx, name) })
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	return t.open(ctx, func() (io.ReadCloser, error) { return t.Target.GetRange(ctx, name, offset, length) })
}

func (t *Target) open(ctx context.Context, get func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	if err := acquire(ctx, t.gets); err != nil {
		return nil, err
	}
	rc, err := get()
	if err != nil {
		release(t.gets)
		return nil, err
	}
	return &body{ReadCloser: rc, release: func() { release(t.gets) }}, nil
}

// body gives the slot back on the first Close.
type body struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
