package report

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/schedule"
)

// computer holds what every control reads.
type computer struct {
	in      Input
	p       *policy.Policy
	entries []entry
	// from and to bound the period; end is where the evidence stops (EvidenceEnd).
	from, to, end time.Time
	cp            audit.Checkpoint
	report        *Report
}

// seedClass is what seed 002 asks of the class of one of its three categories.
type seedClass struct {
	frequency string
	interval  time.Duration // the longest gap between due times that still counts as that frequency
	retain    time.Duration
	rpo, rto  time.Duration
}

const day = 24 * time.Hour

// seedClasses maps the policy's class names for seed 002's categories (section 2) to what the
// seed asks of each (3.1, 3.2, 4.1, 4.2). A daily or weekly schedule in a DST zone is an hour
// longer once a year, and a month is at most 31 days.
var seedClasses = map[string]seedClass{
	"critical":      {"daily", day + time.Hour, 30 * day, 48 * time.Hour, 48 * time.Hour},
	"important":     {"weekly", 7*day + time.Hour, 90 * day, 7 * day, 72 * time.Hour},
	"non_essential": {"monthly", 31*day + time.Hour, 180 * day, 30 * day, 7 * day},
	"non-essential": {"monthly", 31*day + time.Hour, 180 * day, 30 * day, 7 * day},
}

// failedOutcome reports whether an outcome records a failure.
func failedOutcome(o string) bool {
	o = strings.ToLower(o)
	return o == audit.OutcomeFailed || o == audit.OutcomeDeadLettered || o == "error"
}

// inPeriod reports whether t falls in the period as far as the evidence goes.
func (c *computer) inPeriod(t time.Time) bool { return !t.Before(c.from) && t.Before(c.end) }

// logEnd is the end of what the log the checkpoint covers can show: later than end when the
// checkpoint was made after the period.
func (c *computer) logEnd() time.Time {
	if c.in.Now.Before(c.cp.Time) {
		return c.in.Now
	}
	return c.cp.Time
}

// kind returns the entries of a kind (and class, unless class is ""), sorted by time.
func (c *computer) kind(kind, class string) []entry {
	var out []entry
	for _, e := range c.entries {
		if e.Kind == kind && (class == "" || e.Class == class) {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// commits returns the successful backup_commit entries of a class, sorted by time.
func (c *computer) commits(class string) []entry {
	var out []entry
	for _, e := range c.kind(audit.KindBackupCommit, class) {
		if !failedOutcome(e.Outcome) {
			out = append(out, e)
		}
	}
	return out
}

// ticks returns the class's scheduled backup due times from `from` until a little after `to`,
// with their methods: enough to know, for each due time in the period, when the next one is.
func (c *computer) ticks(cl *policy.Class, from, to time.Time) []schedule.Event {
	var out []schedule.Event
	for _, ev := range schedule.Compute(c.p, from, to.Add(400*day)) {
		if ev.Kind == schedule.KindTick && ev.Class == cl.Name {
			out = append(out, ev)
			if !ev.Due.Before(to) {
				break // the first one after the window closes the last window
			}
		}
	}
	return out
}

// backupCounts counts commits per day, ISO week and month of the period in loc.
func (c *computer) backupCounts(commits []entry, loc *time.Location) *Backups {
	b := &Backups{FirstEntry: -1, LastEntry: -1, PerDay: []Count{}, PerWeek: []Count{}, PerMonth: []Count{}}
	days, weeks, months := map[string]int{}, map[string]int{}, map[string]int{}
	for _, e := range commits {
		if !c.inPeriod(e.Time) {
			continue
		}
		b.Total++
		if e.Snapshot != "" {
			b.Snapshots++
		}
		if b.FirstEntry < 0 {
			b.FirstEntry = e.pos
		}
		b.LastEntry = e.pos
		t := e.Time.In(loc)
		days[t.Format(time.DateOnly)]++
		weeks[isoWeek(t)]++
		months[t.Format("2006-01")]++
	}
	seenW, seenM := map[string]bool{}, map[string]bool{}
	for d := c.from.In(loc); d.Before(c.to); d = nextDay(d) {
		k := d.Format(time.DateOnly)
		b.PerDay = append(b.PerDay, Count{k, days[k]})
		if w := isoWeek(d); !seenW[w] {
			seenW[w] = true
			b.PerWeek = append(b.PerWeek, Count{w, weeks[w]})
		}
		if m := d.Format("2006-01"); !seenM[m] {
			seenM[m] = true
			b.PerMonth = append(b.PerMonth, Count{m, months[m]})
		}
	}
	return b
}

// nextDay is the start of the calendar day after t's, in t's zone.
func nextDay(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, t.Location())
}

func isoWeek(t time.Time) string {
	y, w := t.ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

// gaps returns the stretches longer than limit without a successful commit, from the period's
// start (or the last commit before it) to the end of the evidence, and the longest stretch.
func (c *computer) gaps(commits []entry, limit time.Duration) (over []Gap, longest Gap) {
	prevT, prevE := c.from, int64(-1)
	for _, e := range commits {
		if e.Time.Before(c.from) {
			prevT, prevE = e.Time, e.pos
		}
	}
	step := func(t time.Time, pos int64) {
		g := Gap{From: prevT.UTC(), To: t.UTC(), Seconds: t.Sub(prevT).Seconds(), FromEntry: prevE, ToEntry: pos}
		if g.Seconds > longest.Seconds || longest.To.IsZero() {
			longest = g
		}
		if t.Sub(prevT) > limit {
			over = append(over, g)
		}
		prevT, prevE = t, pos
	}
	for _, e := range commits {
		if c.inPeriod(e.Time) {
			step(e.Time, e.pos)
		}
	}
	step(c.end, -1)
	return over, longest
}

// hasCommit reports whether a commit falls in [from, to).
func hasCommit(commits []entry, from, to time.Time) bool {
	i := sort.Search(len(commits), func(i int) bool { return !commits[i].Time.Before(from) })
	return i < len(commits) && commits[i].Time.Before(to)
}

// drill converts a drill entry.
func drill(e entry) Drill {
	d := Drill{Entry: e.pos, Time: e.Time.UTC(), Class: e.Class, Outcome: e.Outcome, Reason: e.Reason,
		Targets: nonNil(e.Targets)}
	if e.Figures != nil {
		d.Figures = *e.Figures
	}
	return d
}

func restore(e entry) Restore {
	return Restore{Entry: e.pos, Time: e.Time.UTC(), Class: e.Class, Outcome: e.Outcome, RequestedBy: e.RequestedBy,
		Reason: e.Reason, Targets: nonNil(e.Targets), Figures: e.Figures}
}

func ref(e entry, detail string) EntryRef {
	return EntryRef{Entry: e.pos, Time: e.Time.UTC(), Kind: e.Kind, Class: e.Class, Outcome: e.Outcome, Detail: detail}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// link judges one network connection: TLS, a cloud SDK's default (HTTPS) endpoint, or loopback
// (never leaves the machine) pass; anything else is plaintext on a network.
func link(l Link) (LinkFact, bool) {
	f := LinkFact{Name: l.Name, URL: l.URL}
	if l.URL == "" {
		f.Encrypted, f.Why = true, "the provider's default endpoint (HTTPS)"
		return f, true
	}
	u, err := url.Parse(l.URL)
	if err != nil || u.Host == "" {
		// A bare host:port (NATS accepts them) has no scheme: plaintext unless loopback.
		u = &url.URL{Scheme: "", Host: l.URL}
	}
	if u.User != nil {
		// Never repeat credentials in a report.
		u.User = nil
		f.URL = u.String()
	}
	switch strings.ToLower(u.Scheme) {
	case "https", "tls", "wss":
		f.Encrypted, f.Why = true, "TLS ("+u.Scheme+")"
		return f, true
	}
	host := u.Hostname()
	if host == "" {
		host = u.Host
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		f.Why = "loopback: the traffic never leaves the machine"
		return f, true
	}
	f.Why = "plaintext over the network: use " + map[bool]string{true: "tls://", false: "https://"}[strings.HasPrefix(u.Scheme, "nats")]
	return f, false
}

// verdict combines class verdicts: any fail fails; else any pass passes; else not applicable.
func verdict(classes []ClassResult) string {
	st := StatusNotApplicable
	for _, cr := range classes {
		switch cr.Status {
		case StatusFail:
			return StatusFail
		case StatusPass:
			st = StatusPass
		}
	}
	return st
}

// classReason summarizes the class verdicts of a control.
func classReason(classes []ClassResult) string {
	var fails, passes []string
	for _, cr := range classes {
		switch cr.Status {
		case StatusFail:
			fails = append(fails, cr.Class+": "+cr.Reason)
		case StatusPass:
			passes = append(passes, cr.Class)
		}
	}
	if len(fails) > 0 {
		return strings.Join(fails, "; ")
	}
	if len(passes) > 0 {
		return "met by every class that applies (" + strings.Join(passes, ", ") + ")"
	}
	return "no class is concerned in the period"
}

func dur(d time.Duration) string { return policy.FormatDuration(d.Round(time.Second)) }

func durSec(s float64) string { return dur(time.Duration(s * float64(time.Second))) }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func classLoc(cl *policy.Class, p *policy.Policy) *time.Location {
	switch {
	case cl.Location != nil:
		return cl.Location
	case p.Location != nil:
		return p.Location
	}
	return time.UTC
}

func schedulesText(cl *policy.Class) string {
	var s []string
	for _, sc := range cl.Schedules {
		t := fmt.Sprintf("%s %q %s", sc.Name, sc.Cron, sc.Method)
		if sc.FullEvery > 0 {
			t += fmt.Sprintf(" (full every %d)", sc.FullEvery)
		}
		s = append(s, t)
	}
	return strings.Join(s, "; ")
}

func retentionText(r policy.Retention) string {
	s := []string{"min " + dur(r.Min)}
	for _, kv := range []struct {
		k string
		v int
	}{{"keep_last", r.KeepLast}, {"daily", r.Daily}, {"weekly", r.Weekly}, {"monthly", r.Monthly}, {"yearly", r.Yearly}} {
		if kv.v > 0 {
			s = append(s, fmt.Sprintf("%s %d", kv.k, kv.v))
		}
	}
	return strings.Join(s, ", ")
}

func targetFacts(cl *policy.Class, p *policy.Policy) []TargetFact {
	var out []TargetFact
	for _, n := range cl.Targets {
		t := p.Target(n)
		if t == nil {
			out = append(out, TargetFact{Name: n, Kind: "unknown"})
			continue
		}
		out = append(out, TargetFact{Name: t.Name, Kind: t.Kind, Offsite: t.Offsite,
			Lockable: slices.Contains([]string{policy.KindS3, policy.KindGCS, policy.KindAzure}, t.Kind)})
	}
	return out
}
