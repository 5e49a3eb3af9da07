package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Restore drills (seed 002 3.4: regular testing and validation of backups, at least quarterly).
// A class's drill block says when a drill of the class is due and how much of it a drill
// restores; docs/drills.md describes what a drill does.
const (
	// DefaultDrillCron is when a class's drill is due when its policy does not say: quarterly
	// (seed 002 3.4), on the 15th of the middle month of each quarter at 06:00, clear of the
	// monthly full backups and the end-of-month deadlines, on a day someone is there to act on
	// an alert (Custos choice).
	DefaultDrillCron = "0 6 15 2,5,8,11 *"
	// DefaultDrillSample is how many items a drill restores from each target when the policy does
	// not say: enough to measure a rate, bounded so a drill stays cheap (Custos choice).
	DefaultDrillSample = 100
	// MaxDrillInterval is the longest gap between two drills the seed allows (a quarter, taken
	// as 92 days, the longest three consecutive months); a drill schedule that leaves more is
	// reported as a warning (rule drill).
	MaxDrillInterval = 92 * 24 * time.Hour
)

// RuleDrill is broken by a malformed drill block, and reported as a warning by a drill schedule
// that tests less often than quarterly.
const RuleDrill = "drill"

// Sample is how much of a class a drill restores from each target: a number of items, a
// percentage of the class's items, or all of them. Exactly one is set.
type Sample struct {
	Items   int     // at most this many items
	Percent float64 // this share of the class's items (0 < Percent <= 100), at least one item
	All     bool    // every item
}

// Size returns how many of total items the sample restores.
func (s Sample) Size(total int) int {
	switch {
	case s.All:
		return total
	case s.Percent > 0:
		n := int(float64(total)*s.Percent/100 + 0.999999)
		return min(max(n, 1), total)
	default:
		return min(s.Items, total)
	}
}

// String is the sample as the policy file writes it: 100, 5%, all.
func (s Sample) String() string {
	switch {
	case s.All:
		return "all"
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	default:
		return strconv.Itoa(s.Items)
	}
}

// ParseSample reads a sample as the policy file and `custos drill run --sample` write it: a
// whole number of items (at least 1), a percentage ("5%", more than 0, at most 100) or "all".
func ParseSample(s string) (Sample, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "all":
		return Sample{All: true}, nil
	case strings.HasSuffix(s, "%"):
		p, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
		if err != nil || !(p > 0 && p <= 100) {
			return Sample{}, fmt.Errorf("sample %q: a percentage must be more than 0%% and at most 100%%", s)
		}
		return Sample{Percent: p}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return Sample{}, fmt.Errorf("sample %q is not a number of items (1 or more), a percentage (5%%) or all", s)
	}
	return Sample{Items: n}, nil
}

// Drill is the restore-drill schedule of a class.
type Drill struct {
	// Cron is when a drill is due, read in the class's time zone: 5 fields or a descriptor, as
	// for schedules. DefaultDrillCron when the policy does not say.
	Cron string
	// Sample is how much each drill restores from each target. Default DefaultDrillSample items.
	Sample Sample
	// Location is the class's time zone.
	Location *time.Location
	// Line is the line of the drill key; 0 when the class has none (the defaults apply).
	Line int
	spec cron.Schedule
}

// Next returns the first time strictly after t at which a drill is due (DST as Schedule.Next),
// or the zero time if none is due in the five years after t.
func (d *Drill) Next(t time.Time) time.Time { return nextIn(d.spec, d.Location, t) }

// drill decodes a class's optional drill block; without one the class is drilled quarterly.
func (d *decoder) drill(cm mapping, c *Class) *Drill {
	dr := &Drill{Cron: DefaultDrillCron, Sample: Sample{Items: DefaultDrillSample}, Location: c.Location}
	dr.spec, _ = parseCron(DefaultDrillCron)
	where := fmt.Sprintf("class %q: drill: ", c.Name)
	n := d.get(cm, "drill", false)
	if n == nil {
		return dr
	}
	m := d.mapping(n, where, "cron", "sample")
	m.key = cm.keyNode("drill")
	if n.Kind != yaml.MappingNode {
		return dr
	}
	dr.Line = m.key.Line
	if expr, en := d.str(m, "cron", false); en != nil {
		spec, err := parseCron(expr)
		switch {
		case err != nil:
			d.fail(en, RuleCron, "%scron %q: %v", where, expr, err)
		case nextIn(spec, c.Location, time.Date(2027, 1, 1, 0, 0, 0, 0, c.Location)).IsZero():
			d.fail(en, RuleCron, "%scron %q is never due", where, expr)
		default:
			dr.Cron, dr.spec = expr, spec
			d.checkDrillGap(dr, en, where)
		}
	}
	if s, sn := d.scalar(m, "sample", false); sn != nil {
		sample, err := ParseSample(s)
		if err != nil {
			d.fail(sn, RuleDrill, "%s%v", where, err)
		} else {
			dr.Sample = sample
		}
	}
	return dr
}

// checkDrillGap warns when the drill schedule leaves more than a quarter between two drills
// (seed 002 3.4: at least quarterly), over the same fixed window as the RPO check.
func (d *decoder) checkDrillGap(dr *Drill, at *yaml.Node, where string) {
	from := time.Date(gapFrom[0], time.Month(gapFrom[1]), gapFrom[2], 0, 0, 0, 0, dr.Location)
	to := time.Date(gapTo[0], time.Month(gapTo[1]), gapTo[2], 0, 0, 0, 0, dr.Location)
	prev := dr.Next(from.Add(-time.Nanosecond))
	for !prev.IsZero() && prev.Before(to) {
		next := dr.Next(prev)
		if next.IsZero() || next.Sub(prev) > MaxDrillInterval {
			d.warn(at, RuleDrill, "%scron %q leaves more than a quarter between drills (after %s); seed 002 3.4 asks for testing at least quarterly",
				where, dr.Cron, prev.Format(time.DateOnly))
			return
		}
		prev = next
	}
}
