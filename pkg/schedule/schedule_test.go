package schedule_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/schedule"
)

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func rfc(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func parse(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// count groups events by kind/class/name/method.
func count(events []schedule.Event) map[string]int {
	out := map[string]int{}
	for _, e := range events {
		out[fmt.Sprintf("%s/%s/%s/%s", e.Kind, e.Class, e.Name, e.Method)]++
	}
	return out
}

// TestDefaultYear simulates 2027 under the default policy (seed 002).
func TestDefaultYear(t *testing.T) {
	p := policy.Default()
	events := schedule.Compute(p, date(2027, 1, 1), date(2028, 1, 1))
	want := map[string]int{
		// critical: daily at 02:00, replaced by the monthly full on the 1st: 365 ticks.
		"tick/critical/daily/incremental": 365 - 12,
		"tick/critical/monthly-full/full": 12,
		// important: 52 Sundays and 12 firsts; 2027-08-01 is both, so 63 ticks.
		"tick/important/weekly/incremental": 52 - 1,
		"tick/important/monthly-full/full":  12,
		"tick/non_essential/monthly/full":   12,
		// Every class gets both deadlines; the fiscal year is the calendar year.
		"deadline/critical/end_of_month/":            12,
		"deadline/important/end_of_month/":           12,
		"deadline/non_essential/end_of_month/":       12,
		"deadline/critical/end_of_fiscal_year/":      1,
		"deadline/important/end_of_fiscal_year/":     1,
		"deadline/non_essential/end_of_fiscal_year/": 1,
		// Every class is drilled quarterly (seed 002 3.4): 15 February, May, August, November.
		"drill/critical/drill/drill":      4,
		"drill/important/drill/drill":     4,
		"drill/non_essential/drill/drill": 4,
	}
	if got := count(events); !mapsEqual(got, want) {
		t.Fatalf("counts\n got %v\nwant %v", got, want)
	}
	if len(events) != 491 {
		t.Fatalf("%d events", len(events))
	}
	// Ordered, unique ids, each as documented.
	ids := map[string]bool{}
	for i, e := range events {
		if i > 0 && e.Due.Before(events[i-1].Due) {
			t.Fatalf("not ordered at %d", i)
		}
		if ids[e.ID] {
			t.Fatalf("duplicate id %s", e.ID)
		}
		ids[e.ID] = true
	}
	first := events[0]
	if first.ID != "tick.default.critical.monthly-full.1798768800" || !first.Due.Equal(rfc(t, "2027-01-01T02:00:00Z")) || first.Method != "full" {
		t.Fatalf("first event %+v", first)
	}
	last := events[len(events)-1]
	if last.ID != "deadline.default.non_essential.end_of_month.1830294000" || !last.Due.Equal(rfc(t, "2027-12-31T23:00:00Z")) {
		t.Fatalf("last event %+v", last)
	}
	// End of month: the last day of each month at 23:00.
	var eom []string
	for _, e := range events {
		if e.Class == "critical" && e.Name == "end_of_month" {
			eom = append(eom, e.Due.Format("01-02"))
		}
	}
	wantEOM := []string{"01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30", "10-31", "11-30", "12-31"}
	if !slices.Equal(eom, wantEOM) {
		t.Fatalf("end of month %v", eom)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

const fiscalPolicy = `version: 1
tenant: acme
timezone: %s
fiscal_year_start_month: %d
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    schedules: [{name: daily, cron: "30 2 * * *"}]
    retention: {min: 2d}
    targets: [a, b, c]
    rpo: 2d
    rto: 1d
deadlines:
  - {name: end_of_month, kind: end_of_month}
  - {name: end_of_fiscal_year, kind: end_of_fiscal_year, time: "18:30"}
  - {name: gdpr_review, kind: date, date: 2027-05-25T09:00:00Z}
  - {name: audit, kind: date, date: 2027-11-15}
`

func TestFiscalYearAndDates(t *testing.T) {
	p := parse(t, fmt.Sprintf(fiscalPolicy, "UTC", 4))
	events := schedule.Compute(p, date(2027, 1, 1), date(2028, 1, 1))
	got := map[string][]string{}
	for _, e := range events {
		if e.Kind == schedule.KindDeadline {
			got[e.Name] = append(got[e.Name], e.Due.Format(time.RFC3339))
		}
	}
	if fy := got["end_of_fiscal_year"]; !slices.Equal(fy, []string{"2027-03-31T18:30:00Z"}) {
		t.Fatalf("fiscal year end %v", fy)
	}
	if len(got["end_of_month"]) != 12 {
		t.Fatalf("end of month %v", got["end_of_month"])
	}
	if d := got["gdpr_review"]; !slices.Equal(d, []string{"2027-05-25T09:00:00Z"}) {
		t.Fatalf("gdpr %v", d)
	}
	if d := got["audit"]; !slices.Equal(d, []string{"2027-11-15T00:00:00Z"}) {
		t.Fatalf("audit %v", d)
	}
	if n := count(events)["tick/c/daily/incremental"]; n != 365 {
		t.Fatalf("%d daily ticks", n)
	}
	// January start: the fiscal year ends on 31 December; December start: on 30 November.
	for month, want := range map[int]string{1: "2027-12-31T18:30:00Z", 12: "2027-11-30T18:30:00Z", 3: "2027-02-28T18:30:00Z"} {
		p := parse(t, fmt.Sprintf(fiscalPolicy, "UTC", month))
		var fy []string
		for _, e := range schedule.Compute(p, date(2027, 1, 1), date(2028, 1, 1)) {
			if e.Name == "end_of_fiscal_year" {
				fy = append(fy, e.Due.Format(time.RFC3339))
			}
		}
		if !slices.Equal(fy, []string{want}) {
			t.Errorf("start month %d: %v, want %s", month, fy, want)
		}
	}
}

func TestLeapYear(t *testing.T) {
	p := parse(t, fmt.Sprintf(fiscalPolicy, "UTC", 3))
	events := schedule.Compute(p, date(2028, 1, 1), date(2029, 1, 1))
	c := count(events)
	if c["tick/c/daily/incremental"] != 366 || c["deadline/c/end_of_month/"] != 12 {
		t.Fatalf("counts %v", c)
	}
	var feb []string
	for _, e := range events {
		if e.Kind == schedule.KindDeadline && e.Due.Month() == time.February {
			feb = append(feb, e.Name+" "+e.Due.Format(time.RFC3339))
		}
	}
	want := []string{"end_of_fiscal_year 2028-02-29T18:30:00Z", "end_of_month 2028-02-29T23:00:00Z"}
	if !slices.Equal(feb, want) {
		t.Fatalf("february %v", feb)
	}
}

func TestDSTYear(t *testing.T) {
	p := parse(t, fmt.Sprintf(fiscalPolicy, "Europe/Berlin", 1))
	berlin := p.Location
	events := schedule.Compute(p, time.Date(2027, 1, 1, 0, 0, 0, 0, berlin), time.Date(2028, 1, 1, 0, 0, 0, 0, berlin))
	due := map[string]string{} // local date -> UTC due of the daily tick
	eom := map[string]string{}
	for _, e := range events {
		switch e.Name {
		case "daily":
			due[e.Due.Format("01-02")] = e.Due.UTC().Format(time.RFC3339)
		case "end_of_month":
			eom[e.Due.Format("01")] = e.Due.UTC().Format(time.RFC3339)
		}
	}
	if len(due) != 365 {
		t.Fatalf("%d daily ticks", len(due))
	}
	for day, want := range map[string]string{
		"03-27": "2027-03-27T01:30:00Z", // CET
		"03-28": "2027-03-28T01:00:00Z", // 02:30 does not exist: fires at 03:00 CEST
		"03-29": "2027-03-29T00:30:00Z", // CEST
		"10-31": "2027-10-31T00:30:00Z", // 02:30 happens twice: the first (CEST) fires
		"11-01": "2027-11-01T01:30:00Z", // CET
	} {
		if due[day] != want {
			t.Errorf("%s: %s, want %s", day, due[day], want)
		}
	}
	if eom["03"] != "2027-03-31T21:00:00Z" || eom["10"] != "2027-10-31T22:00:00Z" || eom["12"] != "2027-12-31T22:00:00Z" {
		t.Errorf("end of month in Berlin: %v", eom)
	}
	// The GDPR review was given in UTC; it is reported in the policy's zone, same instant.
	for _, e := range events {
		if e.Name == "gdpr_review" && (e.Due.Location() != berlin || !e.Due.Equal(rfc(t, "2027-05-25T09:00:00Z"))) {
			t.Errorf("gdpr %v", e.Due)
		}
	}
}

const fullEveryPolicy = `version: 1
tenant: acme
effective: 2027-01-01
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    schedules:
      - {name: daily, cron: "0 1 * * *", full_every: 7}
      - {name: weekly, cron: "0 1 * * 3", method: incremental}
    retention: {min: 2d}
    targets: [a, b, c]
    rpo: 2d
    rto: 1d
`

func TestFullEvery(t *testing.T) {
	p := parse(t, fullEveryPolicy)
	year := ticksOnly(schedule.Compute(p, date(2027, 1, 1), date(2028, 1, 1)))
	var full []string
	for _, e := range year {
		if e.Method == policy.MethodFull {
			full = append(full, e.Due.Format("01-02"))
		}
	}
	// Ordinal 0 is 2027-01-01: every 7th day after it is full; 53 full ticks in the year.
	if len(full) != 53 || full[0] != "01-01" || full[1] != "01-08" || full[52] != "12-31" {
		t.Fatalf("%d full: %v", len(full), full)
	}
	// 2027-01-06 is a Wednesday: daily and weekly are both incremental there, and the daily one
	// (first in the file) is the one that fires.
	for _, e := range year {
		if e.Due.Format("01-02") == "01-06" && e.Name != "daily" {
			t.Fatalf("01-06: %+v", e)
		}
	}
	if n := len(year); n != 365 {
		t.Fatalf("%d ticks: one per instant", n)
	}
	// Any window gives the same events as the whole year: replicas agree whenever they start.
	part := schedule.Compute(p, date(2027, 6, 10), date(2027, 6, 20))
	var fromYear []schedule.Event
	for _, e := range year {
		if !e.Due.Before(date(2027, 6, 10)) && e.Due.Before(date(2027, 6, 20)) {
			fromYear = append(fromYear, e)
		}
	}
	if !slices.Equal(part, fromYear) {
		t.Fatalf("window differs:\n%v\n%v", part, fromYear)
	}
	// Before the effective date ordinals are negative: 2026-12-25 is ordinal -7, so full.
	before := schedule.Compute(p, date(2026, 12, 24), date(2027, 1, 1))
	var methods []string
	for _, e := range before {
		if e.Name == "daily" {
			methods = append(methods, e.Due.Format("01-02")+" "+e.Method)
		}
	}
	if !slices.Contains(methods, "12-25 full") || slices.Contains(methods, "12-24 full") {
		t.Fatalf("before effective: %v", methods)
	}
}

// TestWindowsCompose checks that consecutive windows give exactly the events of their union, so
// a scheduler that computes window after window never fires an event twice or misses one.
func TestWindowsCompose(t *testing.T) {
	p := policy.Default()
	from, to := date(2027, 1, 1), date(2027, 4, 1)
	whole := schedule.Compute(p, from, to)
	var pieces []schedule.Event
	for t0 := from; t0.Before(to); {
		t1 := t0.Add(37 * time.Hour)
		if t1.After(to) {
			t1 = to
		}
		pieces = append(pieces, schedule.Compute(p, t0, t1)...)
		t0 = t1
	}
	if !slices.Equal(whole, pieces) {
		t.Fatalf("%d events in pieces, %d whole", len(pieces), len(whole))
	}
	// A tick due exactly at a window's end belongs to the next window.
	at := rfc(t, "2027-01-02T02:00:00Z")
	if got := schedule.Compute(p, at.Add(-time.Hour), at); len(got) != 0 {
		t.Fatalf("[.., due) holds %v", got)
	}
	if got := schedule.Compute(p, at, at.Add(time.Nanosecond)); len(got) != 1 || got[0].Name != "daily" {
		t.Fatalf("[due, due+1ns) holds %v", got)
	}
	if got := schedule.Compute(p, to, from); got != nil {
		t.Fatalf("empty window gave %v", got)
	}
}

func TestNextDue(t *testing.T) {
	p := policy.Default()
	for _, tc := range []struct{ after, want string }{
		{"2027-01-01T00:00:00Z", "2027-01-01T02:00:00Z"},
		{"2027-01-01T02:00:00Z", "2027-01-01T03:00:00Z"}, // important's monthly full
		{"2027-01-31T03:00:00Z", "2027-01-31T23:00:00Z"}, // end of month, before the next daily
	} {
		if got := schedule.NextDue(p, rfc(t, tc.after)); !got.Equal(rfc(t, tc.want)) {
			t.Errorf("NextDue(%s) = %s, want %s", tc.after, got, tc.want)
		}
	}
	// Only a dated deadline: due once, then never.
	only := parse(t, `version: 1
tenant: acme
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    schedules: [{name: leap, cron: "0 0 29 2 *"}]
    retention: {min: 2000d}
    targets: [a, b, c]
    rpo: 2000d
    rto: 1d
    drill: {cron: "0 0 29 2 *"}
deadlines: [{name: review, kind: date, date: 2027-05-25}]
`)
	if got := schedule.NextDue(only, date(2027, 1, 1)); !got.Equal(date(2027, 5, 25)) {
		t.Errorf("dated deadline: %s", got)
	}
	if got := schedule.NextDue(only, date(2027, 5, 25)); !got.Equal(time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("after the deadline: %s", got)
	}
}

// ticksOnly drops the drills and deadlines of events.
func ticksOnly(events []schedule.Event) []schedule.Event {
	var out []schedule.Event
	for _, e := range events {
		if e.Kind == schedule.KindTick {
			out = append(out, e)
		}
	}
	return out
}
