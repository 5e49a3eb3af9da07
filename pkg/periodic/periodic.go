// Package periodic runs one pass of work at once and then every interval, with the lifecycle
// every long-running Custos part shares: Start (a no-op when started), Stop (waits for the pass
// in progress; safe twice and before Start).
package periodic

import (
	"context"
	"sync"
	"time"
)

// Loop calls Run at Start and then every Interval until Stop. A pass's error is given to
// OnError (unless the loop is stopping); the next pass runs on schedule regardless.
type Loop struct {
	Interval time.Duration
	Run      func(ctx context.Context) error
	OnError  func(err error)

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Start begins the loop. The loop's context outlives ctx's cancellation (Stop ends it) but
// keeps its values.
func (l *Loop) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		return nil
	}
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.Interval)
		defer t.Stop()
		for {
			if err := l.Run(ctx); err != nil && ctx.Err() == nil && l.OnError != nil {
				l.OnError(err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop ends the loop and waits for the pass in progress, or until ctx ends.
func (l *Loop) Stop(ctx context.Context) error {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.cancel = nil
	l.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
