// Package scheduletest holds a fake schedule.Clock for tests that drive a scheduler through
// days or months of policy time in moments.
package scheduletest

import (
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/schedule"
)

// Clock is a schedule.Clock whose time moves only when the test sets it.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*timer]bool
}

type timer struct {
	clk *Clock
	at  time.Time
	c   chan time.Time
}

var _ schedule.Clock = (*Clock)(nil)

// NewClock returns a clock stopped at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now, timers: map[*timer]bool{}} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when Set moves the clock to its time (at once for d <= 0).
func (c *Clock) NewTimer(d time.Duration) schedule.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{clk: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.timers[t] = true
	return t
}

func (t *timer) C() <-chan time.Time { return t.c }

func (t *timer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	pending := t.clk.timers[t]
	delete(t.clk.timers, t)
	return pending
}

// Set moves the clock to now and fires every timer due by then.
func (c *Clock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	for t := range c.timers {
		if !t.at.After(now) {
			delete(c.timers, t)
			t.c <- now
		}
	}
}

// Next returns the earliest pending timer's time; zero when none is pending.
func (c *Clock) Next() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best time.Time
	for t := range c.timers {
		if best.IsZero() || t.at.Before(best) {
			best = t.at
		}
	}
	return best
}

// WaitIdle waits until n timers are pending: every service on the clock has finished its pass
// and sleeps. It fails the test after 20 s.
func (c *Clock) WaitIdle(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.timers)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d timers pending, want %d", got, n)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
