package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Both pipelines (events and snapshot tasks) hold JetStream messages the same way: a lease is
// settled exactly once (ack, nak or term), kept alive with in-progress heartbeats while its
// work runs, and retried with the same backoff.

// lease is one held message. Exactly one settle call runs; later ones do nothing.
type lease struct {
	msg jetstream.Msg

	mu      sync.Mutex
	settled bool
}

// settle runs f unless the lease is already settled, and reports whether it ran.
func (l *lease) settle(f func() error) (bool, error) {
	l.mu.Lock()
	if l.settled {
		l.mu.Unlock()
		return false, nil
	}
	l.settled = true
	l.mu.Unlock()
	return true, f()
}

// inProgress tells the server the work goes on, so the message is not redelivered while its
// worker lives. It does nothing once the lease is settled.
func (l *lease) inProgress() {
	l.mu.Lock()
	settled := l.settled
	l.mu.Unlock()
	if !settled {
		_ = l.msg.InProgress()
	}
}

// keepAlive heartbeats l every interval until the returned stop is called; stop waits for the
// heartbeat goroutine to end.
func keepAlive(ctx context.Context, l *lease, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				l.inProgress()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// retryDelay is the nak delay after a failed delivery: 500 ms after the first, doubling with
// each delivery up to 16 s, so a target outage is not hammered and a short one costs little.
func retryDelay(delivered uint64) time.Duration {
	return time.Duration(1<<min(max(delivered, 1), 6)) * 250 * time.Millisecond
}
