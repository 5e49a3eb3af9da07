package schedule

import "time"

// Clock is the scheduler's source of time. SystemClock is the real one; tests inject a fake one
// to run a year in seconds.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends the time on its channel once, after d (at once when
	// d <= 0).
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was still pending.
	Stop() bool
}

// SystemClock is the wall clock (time.Now, time.NewTimer).
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }
