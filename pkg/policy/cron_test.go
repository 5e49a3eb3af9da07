package policy_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

// schedule parses a one-class policy with the given cron in the given zone and returns its
// schedule.
func schedule(t *testing.T, tz, expr string) *policy.Schedule {
	t.Helper()
	src := fmt.Sprintf(`version: 1
tenant: t
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    timezone: %s
    schedules: [{name: s, cron: %q}]
    retention: {min: 5000d}
    targets: [a, b, c]
    rpo: 5000d
    rto: 1h
`, tz, expr)
	p, err := policy.Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p.Classes[0].Schedules[0]
}

func all(s *policy.Schedule, from, to time.Time) []time.Time {
	var out []time.Time
	for t := s.Next(from.Add(-time.Nanosecond)); !t.IsZero() && t.Before(to); t = s.Next(t) {
		out = append(out, t)
	}
	return out
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestNextDST(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name     string
		tz, expr string
		from, to time.Time
		count    int
		check    map[int]string // index -> RFC 3339 UTC
	}{
		// Spring forward 2027-03-28 02:00 -> 03:00 CEST: 02:30 does not exist and fires at 03:00
		// CEST (01:00Z). Fall back 2027-10-31 03:00 -> 02:00 CET: 02:30 fires once, at its first
		// occurrence (CEST, 00:30Z).
		{"daily in the gap", "Europe/Berlin", "30 2 * * *",
			time.Date(2027, 1, 1, 0, 0, 0, 0, berlin), time.Date(2028, 1, 1, 0, 0, 0, 0, berlin), 365,
			map[int]string{85: "2027-03-27T01:30:00Z", 86: "2027-03-28T01:00:00Z", 87: "2027-03-29T00:30:00Z", 302: "2027-10-30T00:30:00Z", 303: "2027-10-31T00:30:00Z", 304: "2027-11-01T01:30:00Z"}},
		// Hourly on the short day: the 02:00 wall time falls on 03:00, which fires once: 23 ticks.
		{"hourly spring forward", "Europe/Berlin", "0 * * * *",
			time.Date(2027, 3, 28, 0, 0, 0, 0, berlin), time.Date(2027, 3, 29, 0, 0, 0, 0, berlin), 23,
			map[int]string{1: "2027-03-28T00:00:00Z", 2: "2027-03-28T01:00:00Z", 3: "2027-03-28T02:00:00Z"}},
		// Hourly on the long day: 02:00 is shown twice and fires once: 24 ticks over 25 hours.
		{"hourly fall back", "Europe/Berlin", "0 * * * *",
			time.Date(2027, 10, 31, 0, 0, 0, 0, berlin), time.Date(2027, 11, 1, 0, 0, 0, 0, berlin), 24,
			map[int]string{2: "2027-10-31T00:00:00Z", 3: "2027-10-31T02:00:00Z"}},
		{"every 30 minutes spring forward", "Europe/Berlin", "*/30 * * * *",
			time.Date(2027, 3, 28, 1, 0, 0, 0, berlin), time.Date(2027, 3, 28, 4, 0, 0, 0, berlin), 4,
			map[int]string{0: "2027-03-28T00:00:00Z", 1: "2027-03-28T00:30:00Z", 2: "2027-03-28T01:00:00Z", 3: "2027-03-28T01:30:00Z"}},
		// New York: 2027-03-14 02:00 -> 03:00, 2027-11-07 02:00 -> 01:00.
		{"new york 01:30 fall back", "America/New_York", "30 1 * * *",
			time.Date(2027, 11, 6, 12, 0, 0, 0, time.UTC), time.Date(2027, 11, 8, 12, 0, 0, 0, time.UTC), 2,
			map[int]string{0: "2027-11-07T05:30:00Z", 1: "2027-11-08T06:30:00Z"}},
		// Lord Howe moves by 30 minutes: 2027-10-03 02:00 -> 02:30 (+10:30 -> +11). 02:15 on the
		// 3rd is in the gap and fires at 02:30 (15:30Z on the 2nd); on the 4th at 02:15 +11.
		{"half-hour DST", "Australia/Lord_Howe", "15 2 * * *",
			time.Date(2027, 10, 2, 0, 0, 0, 0, time.UTC), time.Date(2027, 10, 4, 0, 0, 0, 0, time.UTC), 2,
			map[int]string{0: "2027-10-02T15:30:00Z", 1: "2027-10-03T15:15:00Z"}},
		{"leap day", "UTC", "0 2 29 2 *",
			time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2033, 1, 1, 0, 0, 0, 0, time.UTC), 2,
			map[int]string{0: "2028-02-29T02:00:00Z", 1: "2032-02-29T02:00:00Z"}},
		{"daily leap year", "UTC", "@daily",
			time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC), 366, nil},
		{"weekly", "UTC", "@weekly",
			time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC), 52,
			map[int]string{0: "2027-01-03T00:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := schedule(t, tc.tz, tc.expr)
			got := all(s, tc.from, tc.to)
			if len(got) != tc.count {
				t.Fatalf("%d ticks, want %d: %v", len(got), tc.count, got)
			}
			for i := 1; i < len(got); i++ {
				if !got[i].After(got[i-1]) {
					t.Fatalf("not increasing at %d: %v %v", i, got[i-1], got[i])
				}
			}
			for i, want := range tc.check {
				if !got[i].Equal(utc(want)) {
					t.Errorf("tick %d = %s, want %s", i, got[i].UTC().Format(time.RFC3339), want)
				}
			}
		})
	}
}

// TestNextMatchesBruteForce checks Next against the definition, minute by minute around every
// DST change of a year: each matching wall time is due at the first instant the clocks show it or
// a later time.
func TestNextMatchesBruteForce(t *testing.T) {
	year := time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC) // Sao Paulo still had DST in 2018
	for _, tz := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "UTC"} {
		loc := mustLoc(t, tz)
		// Windows of four days around each offset change, and one ordinary window.
		windows := []time.Time{year.AddDate(0, 6, 0)}
		for u := year; u.Before(year.AddDate(1, 0, 0)); u = u.Add(time.Hour) {
			_, a := u.In(loc).Zone()
			_, b := u.Add(time.Hour).In(loc).Zone()
			if a != b {
				windows = append(windows, u.Add(-2*24*time.Hour))
			}
		}
		if tz != "UTC" && len(windows) != 3 {
			t.Fatalf("%s: %d windows", tz, len(windows))
		}
		for _, expr := range []string{"*/20 * * * *", "30 2 * * *", "0 0 * * *", "30 * * * *"} {
			for _, from := range windows {
				to := from.Add(4 * 24 * time.Hour)
				bruteForce(t, tz, loc, expr, from, to)
			}
		}
	}
}

func bruteForce(t *testing.T, tz string, loc *time.Location, expr string, from, to time.Time) {
	// The matching wall minutes, from the same expression read in UTC (no DST).
	walls := map[time.Time]bool{}
	for _, w := range all(schedule(t, "UTC", expr), from.AddDate(0, 0, -2), to.AddDate(0, 0, 2)) {
		walls[w] = true
	}
	want := map[time.Time]bool{}
	var maxWall time.Time
	for u := from.Add(-24 * time.Hour); u.Before(to); u = u.Add(time.Minute) {
		l := u.In(loc)
		w := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), 0, 0, time.UTC)
		if !maxWall.IsZero() && !w.After(maxWall) {
			continue // the clocks were set back: this wall time was shown before
		}
		// Every wall minute in (maxWall, w] is first reached at u.
		x := w
		if !maxWall.IsZero() {
			x = maxWall.Add(time.Minute)
		}
		for ; !x.After(w); x = x.Add(time.Minute) {
			if walls[x] && !u.Before(from) {
				want[u] = true
			}
		}
		maxWall = w
	}
	got := all(schedule(t, tz, expr), from, to)
	for _, g := range got {
		if !want[g.UTC()] {
			t.Fatalf("%s %q: Next gave %s, not a due time", tz, expr, g)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s %q from %s: %d due times, brute force %d", tz, expr, from, len(got), len(want))
	}
}
