package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parseCron parses a standard 5-field cron expression or a descriptor (@yearly, @annually,
// @monthly, @weekly, @daily, @midnight, @hourly). It refuses what would make two schedulers
// disagree: "@every" (relative to whenever a scheduler started, not to the calendar) and an
// embedded TZ=/CRON_TZ= (the class's timezone key is the one place a zone is set).
func parseCron(expr string) (cron.Schedule, error) {
	e := strings.TrimSpace(expr)
	switch {
	case e == "":
		return nil, errors.New("empty cron expression")
	case strings.HasPrefix(e, "TZ=") || strings.HasPrefix(e, "CRON_TZ="):
		return nil, errors.New("put the time zone in the timezone key, not in the expression")
	case strings.HasPrefix(e, "@every"):
		return nil, errors.New("@every is relative to when a scheduler starts, so replicas would disagree; use a calendar expression")
	}
	s, err := cron.ParseStandard(e)
	if err != nil {
		return nil, err
	}
	if _, ok := s.(*cron.SpecSchedule); !ok {
		return nil, fmt.Errorf("unsupported expression %q", e)
	}
	return s, nil
}

// Next returns the first time strictly after t at which the schedule is due, in the schedule's
// time zone; the zero time if it is never due in the five years after t.
//
// A cron expression names wall-clock times in the class's time zone. Each wall-clock time it
// matches is due once, at the first instant the zone's clocks show it or a later time:
//   - a time skipped by a spring-forward change (02:30 on the night clocks go from 02:00 to
//     03:00) is due when the gap ends (03:00 new time); times in the gap that fall on the same
//     instant are due once;
//   - a time repeated by a fall-back change (02:30 twice) is due at its first occurrence only.
//
// So a daily schedule fires once every calendar day, DST or not, and due times are strictly
// increasing. This is what lets every scheduler replica compute the same ticks.
func (s *Schedule) Next(t time.Time) time.Time {
	return nextIn(s.spec, s.Location, t)
}

func nextIn(spec cron.Schedule, loc *time.Location, t time.Time) time.Time {
	t = t.In(loc)
	// Walls are evaluated in UTC, which has no DST: the cron library then only does calendar
	// arithmetic, and the mapping back to instants is ours.
	w := spec.Next(maxWallUpTo(t))
	if w.IsZero() {
		return time.Time{}
	}
	return firstInstant(w, loc)
}

// wall returns t's wall clock in its location as a UTC-labelled time.
func wall(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
}

// maxWallUpTo returns the latest wall-clock time shown at or before instant t (in t's
// location). It is wall(t) except in the repeated hour after a fall-back change, where the
// clocks already showed later times before they were set back.
func maxWallUpTo(t time.Time) time.Time {
	m := wall(t)
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return m
	}
	before := start.Add(-time.Nanosecond).In(t.Location())
	if w := wall(before); w.After(m) {
		return w
	}
	return m
}

// firstInstant returns the first instant at which loc's clocks show w or a later time: w's
// first occurrence, or the end of the gap when w is skipped by a spring-forward change.
func firstInstant(w time.Time, loc *time.Location) time.Time {
	guess := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), loc)
	// The offsets in effect around w; an instant showing w has one of them.
	offsets := map[int]bool{}
	for _, h := range []time.Duration{-48, -24, 0, 24, 48} {
		_, off := guess.Add(h * time.Hour).Zone()
		offsets[off] = true
	}
	var best time.Time
	minOff := 0
	first := true
	for off := range offsets {
		if first || off < minOff {
			minOff, first = off, false
		}
		u := w.Add(-time.Duration(off) * time.Second).In(loc)
		if _, o := u.Zone(); o == off && (best.IsZero() || u.Before(best)) {
			best = u
		}
	}
	if !best.IsZero() {
		return best
	}
	// w is in a gap. Read with the offset before the change, it is an instant just after the
	// change; the zone that instant is in started at the end of the gap.
	u := w.Add(-time.Duration(minOff) * time.Second).In(loc)
	if start, _ := u.ZoneBounds(); !start.IsZero() && !wall(start.In(loc)).Before(w) {
		return start.In(loc)
	}
	return guess
}

// LocalTime returns the first instant at which loc's clocks show the given wall time or a later
// one: the same rule Schedule.Next follows, for times that are not cron expressions (compliance
// deadlines). Out-of-range values are normalized as time.Date does (day 0 is the last day of the
// previous month).
func LocalTime(year int, month time.Month, day, hour, minute int, loc *time.Location) time.Time {
	return firstInstant(time.Date(year, month, day, hour, minute, 0, 0, time.UTC), loc)
}
