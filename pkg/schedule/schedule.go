// Package schedule turns a policy into the schedule ticks and compliance deadlines due in a
// window of time, and runs the scheduler service that publishes them.
//
// Compute is pure: the same policy and window always give the same events with the same ids, on
// any machine, so any number of scheduler replicas agree on what is due. Service is the
// long-running part: it wakes at each due time, publishes through the producer SDK and records
// every id it fired in a NATS KV bucket so that no tick fires twice (docs/policy.md, "Once-only
// firing and catch-up").
package schedule

import (
	"fmt"
	"slices"
	"time"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
)

// Kinds of Event.
const (
	KindTick     = "tick"     // a schedule fired: published as a ScheduleTick
	KindDeadline = "deadline" // a compliance deadline fell due: published as a ComplianceDeadline
	// KindDrill: a class's restore drill fell due: published as a ScheduleTick with schedule
	// DrillName and method event.MethodDrill, which a worker answers by running the drill.
	KindDrill = "drill"
)

// DrillName is the name (ScheduleTick.schedule) of a drill trigger.
const DrillName = "drill"

// Event is one schedule tick or compliance deadline.
type Event struct {
	// ID is deterministic: "tick.<tenant>.<class>.<schedule>.<unix due>",
	// "deadline.<tenant>.<class>.<deadline>.<unix due>" or "drill.<tenant>.<class>.<unix due>".
	// It is the event id (ce-id, Nats-Msg-Id) and the key of the scheduler's KV record. Names
	// cannot contain dots, so ids never collide.
	ID     string
	Kind   string    // KindTick, KindDeadline or KindDrill
	Class  string    // data class
	Name   string    // schedule name (ticks), deadline name (deadlines) or DrillName (drills)
	Method string    // ticks: policy.MethodIncremental or policy.MethodFull; drills: event.MethodDrill; deadlines: ""
	Due    time.Time // when it is due, in the class's (ticks, drills) or policy's (deadlines) zone
}

// Compute returns every tick, deadline and drill of p due in [from, to), ordered by due time,
// then ticks before deadlines before drills, then class order in the policy, then name.
//
// Ticks: each schedule is due as policy.Schedule.Next says (DST included). When several
// schedules of one class are due at the same instant, one tick fires: a full one if any is full,
// else the first in file order; a full backup covers what an incremental one would. An
// incremental schedule with FullEvery N makes its tick full when the tick's ordinal, counted
// from the first tick on or after the policy's effective date (ordinal 0), is a multiple of N.
//
// Deadlines: end_of_month on the last day of each month, end_of_fiscal_year on the last day of
// the month before fiscal_year_start_month, both at the deadline's time of day in the policy's
// zone; date deadlines at their date. One event per class the deadline applies to.
//
// Drills: each class's drill cron (policy.Drill.Next), one event per due time.
func Compute(p *policy.Policy, from, to time.Time) []Event {
	if !from.Before(to) {
		return nil
	}
	var out []Event
	for _, c := range p.Classes {
		out = append(out, classTicks(p, c, from, to)...)
	}
	out = append(out, deadlines(p, from, to)...)
	out = append(out, drills(p, from, to)...)
	classIndex := map[string]int{}
	for i, c := range p.Classes {
		classIndex[c.Name] = i
	}
	slices.SortStableFunc(out, func(a, b Event) int {
		if c := a.Due.Compare(b.Due); c != 0 {
			return c
		}
		if c := kindOrder[a.Kind] - kindOrder[b.Kind]; c != 0 {
			return c
		}
		if c := classIndex[a.Class] - classIndex[b.Class]; c != 0 {
			return c
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// kindOrder orders events due at the same instant: a drill restores what that instant's backup
// has just written.
var kindOrder = map[string]int{KindTick: 0, KindDeadline: 1, KindDrill: 2}

// NextDue returns the first time strictly after t at which p has a tick, deadline or drill due,
// or the zero time if nothing is due in the next five years.
func NextDue(p *policy.Policy, t time.Time) time.Time {
	var best time.Time
	for _, c := range p.Classes {
		for _, s := range c.Schedules {
			if n := s.Next(t); !n.IsZero() && (best.IsZero() || n.Before(best)) {
				best = n
			}
		}
		if c.Drill != nil {
			if n := c.Drill.Next(t); !n.IsZero() && (best.IsZero() || n.Before(best)) {
				best = n
			}
		}
	}
	// Deadlines recur at least yearly; a dated one may be years away.
	horizon := t.AddDate(5, 0, 0)
	if !best.IsZero() {
		horizon = best
	}
	if ds := deadlines(p, t.Add(time.Nanosecond), horizon); len(ds) > 0 {
		first := ds[0].Due
		for _, d := range ds {
			if d.Due.Before(first) {
				first = d.Due
			}
		}
		if best.IsZero() || first.Before(best) {
			best = first
		}
	}
	return best
}

// TickID and DeadlineID build the deterministic ids of events.
func TickID(tenant, class, schedule string, due time.Time) string {
	return fmt.Sprintf("tick.%s.%s.%s.%d", tenant, class, schedule, due.Unix())
}

// DeadlineID is the id of a compliance deadline event; see TickID.
func DeadlineID(tenant, class, deadline string, due time.Time) string {
	return fmt.Sprintf("deadline.%s.%s.%s.%d", tenant, class, deadline, due.Unix())
}

// DrillID is the id of a drill trigger; see TickID.
func DrillID(tenant, class string, due time.Time) string {
	return fmt.Sprintf("drill.%s.%s.%d", tenant, class, due.Unix())
}

// drills computes the restore drills due in [from, to).
func drills(p *policy.Policy, from, to time.Time) []Event {
	var out []Event
	for _, c := range p.Classes {
		if c.Drill == nil {
			continue
		}
		for t := c.Drill.Next(from.Add(-time.Nanosecond)); !t.IsZero() && t.Before(to); t = c.Drill.Next(t) {
			out = append(out, Event{ID: DrillID(p.Tenant, c.Name, t), Kind: KindDrill, Class: c.Name,
				Name: DrillName, Method: event.MethodDrill, Due: t})
		}
	}
	return out
}

// classTicks computes the ticks of one class in [from, to), one per instant.
func classTicks(p *policy.Policy, c *policy.Class, from, to time.Time) []Event {
	byDue := map[int64]int{} // unix nano -> index in out
	var out []Event
	for _, s := range c.Schedules {
		ordinal := 0
		if s.FullEvery > 0 {
			ordinal = ordinalAt(s, p.Effective, from)
		}
		for t := s.Next(from.Add(-time.Nanosecond)); !t.IsZero() && t.Before(to); t = s.Next(t) {
			method := s.Method
			if s.FullEvery > 0 && mod(ordinal, s.FullEvery) == 0 {
				method = policy.MethodFull
			}
			ordinal++
			e := Event{ID: TickID(p.Tenant, c.Name, s.Name, t), Kind: KindTick, Class: c.Name, Name: s.Name, Method: method, Due: t}
			if i, dup := byDue[t.UnixNano()]; dup {
				// One tick per class and instant: full wins, then file order.
				if out[i].Method != policy.MethodFull && method == policy.MethodFull {
					out[i] = e
				}
				continue
			}
			byDue[t.UnixNano()] = len(out)
			out = append(out, e)
		}
	}
	return out
}

// ordinalAt returns the ordinal of the first tick of s at or after from, counting the first tick
// at or after effective as 0 (negative before it).
func ordinalAt(s *policy.Schedule, effective, from time.Time) int {
	count := func(a, b time.Time) int {
		n := 0
		for t := s.Next(a.Add(-time.Nanosecond)); !t.IsZero() && t.Before(b); t = s.Next(t) {
			n++
		}
		return n
	}
	if !from.Before(effective) {
		return count(effective, from)
	}
	return -count(from, effective)
}

func mod(a, n int) int { return ((a % n) + n) % n }

// deadlines computes the compliance deadlines in [from, to).
func deadlines(p *policy.Policy, from, to time.Time) []Event {
	var out []Event
	loc := p.Location
	add := func(d *policy.Deadline, due time.Time) {
		if due.Before(from) || !due.Before(to) {
			return
		}
		for _, class := range d.Classes {
			out = append(out, Event{ID: DeadlineID(p.Tenant, class, d.Name, due), Kind: KindDeadline, Class: class, Name: d.Name, Due: due})
		}
	}
	// Months whose last day can fall in [from, to), with a day of margin for zone offsets.
	first := from.In(loc).AddDate(0, 0, -2)
	last := to.In(loc).AddDate(0, 0, 2)
	for _, d := range p.Deadlines {
		switch d.Kind {
		case policy.DeadlineDate:
			add(d, d.Date.In(loc))
		case policy.DeadlineEndOfMonth, policy.DeadlineEndOfFiscalYear:
			endMonth := p.FiscalYearStartMonth - 1 // the fiscal year ends with the month before it starts
			if endMonth == 0 {
				endMonth = time.December
			}
			y, m := first.Year(), first.Month()
			for !time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).After(time.Date(last.Year(), last.Month(), 1, 0, 0, 0, 0, time.UTC)) {
				if d.Kind == policy.DeadlineEndOfMonth || m == endMonth {
					// Day 0 of the next month is the last day of this one.
					add(d, policy.LocalTime(y, m+1, 0, d.Hour, d.Minute, loc))
				}
				if m++; m > time.December {
					y, m = y+1, time.January
				}
			}
		}
	}
	return out
}
