package periodic_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/periodic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoop(t *testing.T) {
	var runs, errs atomic.Int64
	l := &periodic.Loop{Interval: 5 * time.Millisecond,
		Run: func(context.Context) error {
			if runs.Add(1)%2 == 0 {
				return errors.New("odd pass")
			}
			return nil
		},
		OnError: func(error) { errs.Add(1) }}
	ctx := context.Background()
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for range 2 {
		if err := l.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runs.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 2 {
		if err := l.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n := runs.Load()
	if n < 4 || errs.Load() == 0 {
		t.Fatalf("runs %d, errors %d: want passes repeated and errors reported", n, errs.Load())
	}
	time.Sleep(20 * time.Millisecond)
	if runs.Load() != n {
		t.Fatal("a pass ran after Stop returned")
	}
}

// A pass that is running when Stop is called sees its context end, and Stop waits for it.
func TestStopWaitsForPass(t *testing.T) {
	started, finished := make(chan struct{}), make(chan struct{})
	l := &periodic.Loop{Interval: time.Hour, Run: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		close(finished)
		return ctx.Err()
	}}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Stop returned before the pass ended")
	}
}
