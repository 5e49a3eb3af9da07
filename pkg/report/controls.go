package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/policy"
)

// Citations of the policy documents of record (../shared/seeds: 002 is the Cellsoft Customer
// Data Backup Policy, 003 the Spectra360 SOC 12.2 Backup and Recovery Procedures).
var (
	s002_31  = Source{"002", "3.1", "Frequency of backups: Critical Data daily, Important Data weekly, Non-Essential Data monthly"}
	s002_32  = Source{"002", "3.2", "Backup retention: Critical Data 30 days, Important Data 90 days, Non-Essential Data 180 days"}
	s002_33m = Source{"002", "3.3", "Incremental backups for daily and weekly backups; full backups for monthly backups"}
	s002_33e = Source{"002", "3.3", "Data should be encrypted both in transit and at rest"}
	s002_34  = Source{"002", "3.4", "Regular testing and validation of backups to ensure data recoverability, at least quarterly"}
	s002_35  = Source{"002", "3.5", "Backup media stored securely in an offsite location"}
	s002_41  = Source{"002", "4.1", "RPO: Critical Data 48 hours, Important Data 7 days, Non-Essential Data 30 days"}
	s002_42  = Source{"002", "4.2", "RTO: Critical Data 48 hours, Important Data 72 hours, Non-Essential Data 7 days"}
	s002_43  = Source{"002", "4.3", "Data restoration should be documented for audit and compliance purposes"}
	s002_5   = Source{"002", "5", "Regular monitoring and alerting for backup failures; immediate action to address backup issues"}
	s002_6   = Source{"002", "6", "Regular audits of backup processes and data restoration procedures"}
	s002_2   = Source{"002", "2", "Data classification: Critical, Important, Non-Essential Data"}
	s003_1   = Source{"003", "1", "Define objectives: clear RPOs and RTOs; data classification by criticality"}
	s003_2r  = Source{"003", "2", "Regular backups: schedule backups at intervals that align with RPOs"}
	s003_2e  = Source{"003", "2", "Encryption: strong encryption such as AES-256, at rest and in transit"}
	s003_2x  = Source{"003", "2", "3-2-1 backup rule: three copies, two different storage media, one copy off-site"}
	s003_3d  = Source{"003", "3", "Disaster recovery plan: specific steps for data restoration"}
	s003_3t  = Source{"003", "3", "Testing and validation: verify that data can be restored within the defined RTOs"}
	s003_4m  = Source{"003", "4", "Continuous monitoring: track the success of backups, alerts for any failures"}
	s003_4a  = Source{"003", "4", "Regular audits of backup and recovery processes"}
	s003_5   = Source{"003", "5", "Comprehensive documentation: records of backup schedules, procedures, configurations and recovery steps"}
)

// controls computes every control, in the order of the documents.
func (c *computer) controls() []Control {
	return []Control{
		c.frequency(), c.retention(), c.methods(), c.encryption(), c.testing(), c.offsite(),
		c.rpo(), c.rto(), c.restoration(), c.monitoring(), c.audits(),
		c.objectives(), c.rule321(), c.documentation(),
	}
}

// perClass builds a control judged class by class.
func (c *computer) perClass(ctl Control, f func(cl *policy.Class) ClassResult) Control {
	var settings []string
	ctl.Classes = []ClassResult{}
	for _, cl := range c.p.Classes {
		cr := f(cl)
		cr.Class = cl.Name
		if cr.Evidence.Facts == nil {
			cr.Evidence.Facts = []string{}
		}
		settings = append(settings, cl.Name+": "+cr.Setting)
		ctl.Classes = append(ctl.Classes, cr)
	}
	if ctl.Setting == "" {
		ctl.Setting = strings.Join(settings, " | ")
	}
	ctl.Status, ctl.Reason = verdict(ctl.Classes), classReason(ctl.Classes)
	if ctl.Evidence.Facts == nil {
		ctl.Evidence.Facts = []string{}
	}
	return ctl
}

// frequency (seed 002 3.1, seed 003 2): every scheduled backup happened, each due time followed
// by a successful commit before the next one; and the schedule is at least as frequent as the
// seed's category asks.
func (c *computer) frequency() Control {
	ctl := Control{ID: "seed002-3.1-frequency", Title: "Frequency of backups", Sources: []Source{s002_31, s003_2r}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: schedulesText(cl)}
		commits := c.commits(cl.Name)
		loc := classLoc(cl, c.p)
		cr.Evidence.Backups = c.backupCounts(commits, loc)
		ticks := c.ticks(cl, c.from, c.end)
		tk := &Ticks{Missed: []time.Time{}}
		observed := c.logEnd()
		var longest time.Duration
		for i, ev := range ticks {
			if !ev.Due.Before(c.end) || ev.Due.Before(c.from) {
				continue
			}
			tk.Due++
			if ev.Method == policy.MethodFull {
				tk.Full++
			}
			next := time.Time{}
			if i+1 < len(ticks) {
				next = ticks[i+1].Due
				longest = max(longest, next.Sub(ev.Due))
			}
			switch {
			case hasCommit(commits, ev.Due, minTime(next, observed)):
				tk.Met++
			case next.IsZero() || next.After(observed):
				tk.Pending++
			default:
				tk.Missed = append(tk.Missed, ev.Due.UTC())
			}
		}
		cr.Evidence.Ticks = tk
		b := cr.Evidence.Backups
		days := 0
		for _, d := range b.PerDay {
			if d.Count > 0 {
				days++
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts,
			fmt.Sprintf("%d successful backups in the period (%d snapshot commits); days with a backup: %d of %d; weeks: %d; months: %d",
				b.Total, b.Snapshots, days, len(b.PerDay), countNonZero(b.PerWeek), countNonZero(b.PerMonth)),
			fmt.Sprintf("scheduled backups due: %d (%d full); followed by a backup before the next due time: %d; window still open: %d; missed: %d",
				tk.Due, tk.Full, tk.Met, tk.Pending, len(tk.Missed)))
		seed, isSeed := seedClasses[cl.Name]
		switch {
		case isSeed && longest > seed.interval:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("the schedules leave %s between backups; seed 002 3.1 asks for %s backups", dur(longest), seed.frequency)
		case len(tk.Missed) > 0:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("%d of %d scheduled backups missed, the first due %s", len(tk.Missed), tk.Due, stamp(tk.Missed[0]))
		case tk.Due == 0:
			cr.Status, cr.Reason = StatusNotApplicable, "no scheduled backup was due in the period"
		case tk.Met == 0:
			cr.Status, cr.Reason = StatusNotApplicable, "every backup due in the period is still within its window"
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("all %d scheduled backups were followed by a successful backup before the next was due", tk.Met)
		}
		return cr
	})
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func countNonZero(cs []Count) int {
	n := 0
	for _, x := range cs {
		if x.Count > 0 {
			n++
		}
	}
	return n
}

// retention (seed 002 3.2): the configured guardrail keeps backups as long as the seed asks, and
// no retention_expiry in the period removed a backup younger than it.
func (c *computer) retention() Control {
	ctl := Control{ID: "seed002-3.2-retention", Title: "Backup retention", Sources: []Source{s002_32}}
	// When each pack was committed, to age the packs an expiry names.
	committed := map[string]entry{}
	for _, e := range c.kind(audit.KindBackupCommit, "") {
		for _, p := range e.Packs {
			if _, ok := committed[p]; !ok {
				committed[p] = e
			}
		}
	}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: retentionText(cl.Retention)}
		var young []string
		expired := 0
		for _, e := range c.kind(audit.KindRetentionExpiry, cl.Name) {
			if !c.inPeriod(e.Time) {
				continue
			}
			expired++
			cr.Evidence.Entries = append(cr.Evidence.Entries, ref(e, fmt.Sprintf("count=%d packs=%d", e.Count, len(e.Packs))))
			for _, p := range e.Packs {
				if ce, ok := committed[p]; ok && e.Time.Sub(ce.Time) < cl.Retention.Min {
					young = append(young, fmt.Sprintf("entry %d expired a pack committed by entry %d only %s earlier", e.pos, ce.pos, dur(e.Time.Sub(ce.Time))))
				}
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("%d retention_expiry entries in the period", expired))
		seed, isSeed := seedClasses[cl.Name]
		switch {
		case isSeed && cl.Retention.Min < seed.retain:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("retention.min %s is shorter than the %s seed 002 3.2 asks for", dur(cl.Retention.Min), dur(seed.retain))
		case len(young) > 0:
			cr.Evidence.Facts = append(cr.Evidence.Facts, young...)
			cr.Status, cr.Reason = StatusFail, young[0]+", less than retention.min "+dur(cl.Retention.Min)
		case expired == 0:
			cr.Status, cr.Reason = StatusPass, "retention.min "+dur(cl.Retention.Min)+" is configured; no backup expired in the period"
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("retention.min %s is configured; no backup the %d expiries name was younger", dur(cl.Retention.Min), expired)
		}
		return cr
	})
}

// methods (seed 002 3.3): incremental backups for daily and weekly schedules, and a full backup
// scheduled in every whole month of the period.
func (c *computer) methods() Control {
	ctl := Control{ID: "seed002-3.3-methods", Title: "Backup methods", Sources: []Source{s002_33m}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: schedulesText(cl)}
		loc := classLoc(cl, c.p)
		full := map[string]int{}
		tk := &Ticks{Missed: []time.Time{}}
		for _, ev := range c.ticks(cl, c.from, c.to) {
			if ev.Due.Before(c.from) || !ev.Due.Before(c.to) {
				continue
			}
			tk.Due++
			if ev.Method == policy.MethodFull {
				tk.Full++
				full[ev.Due.In(loc).Format("2006-01")]++
			}
		}
		cr.Evidence.Ticks = tk
		var without []string
		months := 0
		for m := firstMonth(c.from.In(loc)); !m.AddDate(0, 1, 0).After(c.to); m = m.AddDate(0, 1, 0) {
			if m.Before(c.from) {
				continue
			}
			months++
			if full[m.Format("2006-01")] == 0 {
				without = append(without, m.Format("2006-01"))
			}
		}
		snaps := 0
		for _, e := range c.commits(cl.Name) {
			if c.inPeriod(e.Time) && e.Snapshot != "" {
				snaps++
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts,
			fmt.Sprintf("scheduled in the period: %d backups, %d of them full; whole months: %d", tk.Due, tk.Full, months),
			fmt.Sprintf("%d snapshot commits in the period (the audit log does not record a backup's method: the method is the schedule's)", snaps))
		switch {
		case len(without) > 0:
			cr.Status, cr.Reason = StatusFail, "no full backup scheduled in "+strings.Join(without, ", ")
		case months == 0:
			cr.Status, cr.Reason = StatusNotApplicable, "the period holds no whole month"
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("a full backup is scheduled in each of the %d whole months; the other schedules are incremental", months)
		}
		return cr
	})
}

func firstMonth(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, t.Location())
}

// encryption (seed 002 3.3, seed 003 2): at rest by construction (AES-256-GCM per item, the
// format has no plaintext mode); in transit judged from the connections the report was given.
func (c *computer) encryption() Control {
	ctl := Control{ID: "seed002-3.3-encryption", Title: "Encryption at rest and in transit", Sources: []Source{s002_33e, s003_2e},
		Setting: "at rest: every item AES-256-GCM (streaming, chunked) under its customer's data key, data keys wrapped by the KEK (docs/design.md section 3); in transit: TLS to the broker and the cloud targets",
		Classes: []ClassResult{}}
	ev := Evidence{Facts: []string{"at rest: the pack format has no unencrypted mode; every stored item is sealed with AES-256-GCM"}}
	for _, e := range c.kind(audit.KindKeyRotation, "") {
		if c.inPeriod(e.Time) {
			ev.Entries = append(ev.Entries, ref(e, "key="+e.Key))
		}
	}
	ev.Facts = append(ev.Facts, fmt.Sprintf("%d key rotations in the period", len(ev.Entries)))
	var plain []string
	for _, l := range c.in.Links {
		f, ok := link(l)
		ev.Links = append(ev.Links, f)
		if !ok {
			plain = append(plain, f.Name+" ("+f.URL+")")
		}
	}
	ctl.Evidence = ev
	switch {
	case len(plain) > 0:
		ctl.Status, ctl.Reason = StatusFail, "not encrypted in transit: "+strings.Join(plain, ", ")
	case len(c.in.Links) == 0:
		ctl.Status, ctl.Reason = StatusPass, "encrypted at rest by construction; no connection was given to judge the transit half"
		ev.Facts = append(ev.Facts, "in transit: not judged (no connections given)")
		ctl.Evidence = ev
	default:
		ctl.Status, ctl.Reason = StatusPass, fmt.Sprintf("encrypted at rest by construction; all %d connections use TLS or stay on the machine", len(c.in.Links))
	}
	return ctl
}

// quarter returns the calendar quarter holding t and its bounds, in t's zone.
func quarter(t time.Time) (string, time.Time, time.Time) {
	q := (int(t.Month()) - 1) / 3
	start := time.Date(t.Year(), time.Month(q*3+1), 1, 0, 0, 0, 0, t.Location())
	return fmt.Sprintf("%d-Q%d", t.Year(), q+1), start, start.AddDate(0, 3, 0)
}

// testing (seed 002 3.4, seed 003 3): a passed drill of every class in every calendar quarter
// of the period, and no failed drill without a later pass.
func (c *computer) testing() Control {
	ctl := Control{ID: "seed002-3.4-testing", Title: "Backup testing (restore drills)", Sources: []Source{s002_34, s003_3t}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: "restore drills of the class from its targets, at least once per calendar quarter"}
		loc := classLoc(cl, c.p)
		drills := c.kind(audit.KindDrill, cl.Name)
		var missing, unresolved []string
		for qs := c.from.In(loc); qs.Before(c.end); {
			name, start, end := quarter(qs)
			qf := QuarterFact{Quarter: name, Complete: !end.After(c.logEnd())}
			for _, d := range drills {
				if !d.Time.Before(start) && d.Time.Before(end) {
					if d.Outcome == audit.OutcomePassed {
						qf.Passed++
					} else {
						qf.Failed++
					}
				}
			}
			cr.Evidence.Quarters = append(cr.Evidence.Quarters, qf)
			switch {
			case qf.Passed == 0 && qf.Complete:
				missing = append(missing, name)
			case qf.Passed == 0:
				cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("%s: no passed drill yet; due by %s", name, stamp(end)))
			}
			qs = end
		}
		for i, d := range drills {
			if c.inPeriod(d.Time) {
				cr.Evidence.Drills = append(cr.Evidence.Drills, drill(d))
			}
			if d.Outcome == audit.OutcomePassed || d.Time.Before(c.from) || !d.Time.Before(c.end) {
				continue
			}
			if !slices.ContainsFunc(drills[i+1:], func(x entry) bool { return x.Outcome == audit.OutcomePassed }) {
				unresolved = append(unresolved, fmt.Sprintf("drill entry %d at %s failed (%s) and no later drill passed", d.pos, stamp(d.Time), d.Reason))
			}
		}
		passed := 0
		for _, d := range cr.Evidence.Drills {
			if d.Outcome == audit.OutcomePassed {
				passed++
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("%d drills in the period, %d passed", len(cr.Evidence.Drills), passed))
		switch {
		case len(missing) > 0:
			cr.Status, cr.Reason = StatusFail, "no passed drill in "+strings.Join(missing, ", ")
		case len(unresolved) > 0:
			cr.Status, cr.Reason = StatusFail, unresolved[0]
		case passed == 0:
			cr.Status, cr.Reason = StatusNotApplicable, "no quarter of the period has ended yet and no drill ran"
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("a drill passed in every quarter; %d passed in the period", passed)
		}
		return cr
	})
}

// offsite (seed 002 3.5): the class has an off-site target, and the period shows a copy there: a
// commit when every target must be durable before a commit counts, else an entry naming it.
func (c *computer) offsite() Control {
	ctl := Control{ID: "seed002-3.5-offsite", Title: "Off-site, secure storage of backups", Sources: []Source{s002_35}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		facts := targetFacts(cl, c.p)
		var off []string
		for _, t := range facts {
			if t.Offsite {
				off = append(off, t.Name+" ("+t.Kind+")")
			}
		}
		cr := ClassResult{Setting: fmt.Sprintf("off-site: %s; replicas %d of %d; immutability %s", orNone(off), cl.Replicas, len(cl.Targets), immutabilityText(cl.Immutability))}
		cr.Evidence.Targets = facts
		allDurable := cl.Replicas >= len(cl.Targets)
		commits, named := 0, 0
		for _, e := range c.commits(cl.Name) {
			if c.inPeriod(e.Time) {
				commits++
				if namesOffsite(e.Targets, facts) {
					named++
				}
			}
		}
		drills := 0
		for _, d := range c.kind(audit.KindDrill, cl.Name) {
			if c.inPeriod(d.Time) && d.Outcome == audit.OutcomePassed && namesOffsite(d.Targets, facts) {
				drills++
				cr.Evidence.Entries = append(cr.Evidence.Entries, ref(d, "drill from "+strings.Join(d.Targets, ",")))
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts,
			fmt.Sprintf("%d backups in the period; %d name an off-site target; %d passed drills read an off-site target", commits, named, drills))
		if allDurable {
			cr.Evidence.Facts = append(cr.Evidence.Facts, "every target, the off-site one included, must be durable before a backup commits (replicas = targets)")
		}
		switch {
		case len(off) == 0:
			cr.Status, cr.Reason = StatusFail, "the class has no off-site target"
		case named > 0 || drills > 0 || (allDurable && commits > 0):
			cr.Status, cr.Reason = StatusPass, "off-site copies are shown by the log: "+offsiteWhy(named, drills, allDurable, commits)
		default:
			cr.Status, cr.Reason = StatusFail, "no evidence of an off-site copy in the period"
		}
		return cr
	})
}

func offsiteWhy(named, drills int, allDurable bool, commits int) string {
	switch {
	case drills > 0:
		return fmt.Sprintf("%d passed drills read an off-site target", drills)
	case named > 0:
		return fmt.Sprintf("%d backups name an off-site target", named)
	}
	return fmt.Sprintf("%d backups, each durable in every target", commits)
}

func namesOffsite(targets []string, facts []TargetFact) bool {
	for _, t := range facts {
		if t.Offsite && slices.Contains(targets, t.Name) {
			return true
		}
	}
	return false
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func immutabilityText(im policy.Immutability) string {
	if im.Mode == "" || im.Mode == policy.ImmutabilityNone {
		return "none"
	}
	return fmt.Sprintf("%s %d days", im.Mode, im.RetainDays)
}

// rpo (seed 002 4.1, seed 003 1 and 2): no stretch of the period longer than the class's RPO
// without a successful backup.
func (c *computer) rpo() Control {
	ctl := Control{ID: "seed002-4.1-rpo", Title: "Recovery point objective", Sources: []Source{s002_41, s003_1, s003_2r}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: "rpo " + dur(cl.RPO)}
		if cl.OverrideRPO != "" {
			cr.Setting += "; override_rpo: " + cl.OverrideRPO
		}
		over, longest := c.gaps(c.commits(cl.Name), cl.RPO)
		cr.Evidence.Gaps = nonNil(over)
		sec := longest.Seconds
		cr.Evidence.LongestGapSec = &sec
		cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("longest stretch without a backup: %s, from %s to %s", durSec(sec), stamp(longest.From), stamp(longest.To)))
		seed, isSeed := seedClasses[cl.Name]
		switch {
		case isSeed && cl.RPO > seed.rpo:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("the RPO %s is longer than the %s seed 002 4.1 asks for", dur(cl.RPO), dur(seed.rpo))
		case len(over) > 0:
			g := over[0]
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("%d gaps longer than the RPO %s; the first %s, from %s to %s", len(over), dur(cl.RPO), durSec(g.Seconds), stamp(g.From), stamp(g.To))
			if cl.OverrideRPO != "" {
				cr.Reason += " (the policy accepts longer gaps: " + cl.OverrideRPO + ")"
			}
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("no gap longer than the RPO %s", dur(cl.RPO))
		}
		return cr
	})
}

// rto (seed 002 4.2, seed 003 3): the latest drill of the period estimates a restore of the whole
// class within its RTO.
func (c *computer) rto() Control {
	ctl := Control{ID: "seed002-4.2-rto", Title: "Recovery time objective", Sources: []Source{s002_42, s003_3t}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: "rto " + dur(cl.RTO)}
		var latest *entry
		for _, d := range c.kind(audit.KindDrill, cl.Name) {
			if c.inPeriod(d.Time) && d.Figures != nil {
				latest = &d
			}
		}
		for _, r := range c.kind(audit.KindRestore, cl.Name) {
			if c.inPeriod(r.Time) {
				cr.Evidence.Restores = append(cr.Evidence.Restores, restore(r))
			}
		}
		seed, isSeed := seedClasses[cl.Name]
		if isSeed && cl.RTO > seed.rto {
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("the RTO %s is longer than the %s seed 002 4.2 asks for", dur(cl.RTO), dur(seed.rto))
			return cr
		}
		if latest == nil {
			cr.Status, cr.Reason = StatusFail, "no evidence: no drill of the class in the period measured a restore"
			return cr
		}
		f := latest.Figures
		cr.Evidence.Drills = []Drill{drill(*latest)}
		limit := cl.RTO.Seconds()
		if f.RTOSeconds > 0 && f.RTOSeconds < limit {
			limit = f.RTOSeconds
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("latest drill, entry %d at %s: %d items, %d bytes in %.3fs; class %d bytes, estimated full restore %s; RTO recorded %s",
			latest.pos, stamp(latest.Time), f.Items, f.Bytes, f.Seconds, f.ClassBytes, durSec(f.EstimatedSeconds), durSec(f.RTOSeconds)))
		if f.RTOSeconds > 0 && f.RTOSeconds != cl.RTO.Seconds() {
			cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("the drill recorded an RTO of %s; the policy in force says %s", durSec(f.RTOSeconds), dur(cl.RTO)))
		}
		switch {
		case f.ClassBytes > 0 && f.EstimatedSeconds <= 0:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("the latest drill (entry %d) estimated no restore time", latest.pos)
		case f.EstimatedSeconds > limit:
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("the latest drill (entry %d) estimates a full restore in %s, more than the RTO %s", latest.pos, durSec(f.EstimatedSeconds), durSec(limit))
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("the latest drill (entry %d) estimates a full restore in %s, within the RTO %s", latest.pos, durSec(f.EstimatedSeconds), durSec(limit))
		}
		return cr
	})
}

// restoration (seed 002 4.3, seed 003 3 and 5): every restore of the period is documented in the
// log: who asked for it, what it restored and how long it took; drills always are.
func (c *computer) restoration() Control {
	ctl := Control{ID: "seed002-4.3-restoration", Title: "Data restoration documented", Sources: []Source{s002_43, s003_3d, s003_5},
		Setting: "every restore and drill is an audit entry: who asked (requested_by), from which targets, figures (items, bytes, seconds, checksum failures)",
		Classes: []ClassResult{}}
	ev := Evidence{Facts: []string{}, Restores: []Restore{}, Drills: []Drill{}}
	var undocumented []string
	for _, r := range c.kind(audit.KindRestore, "") {
		if !c.inPeriod(r.Time) {
			continue
		}
		ev.Restores = append(ev.Restores, restore(r))
		var lacks []string
		if r.RequestedBy == "" {
			lacks = append(lacks, "who asked")
		}
		if r.Figures == nil {
			lacks = append(lacks, "figures")
		}
		if len(lacks) > 0 {
			undocumented = append(undocumented, fmt.Sprintf("restore entry %d lacks %s", r.pos, strings.Join(lacks, " and ")))
		}
	}
	for _, d := range c.kind(audit.KindDrill, "") {
		if c.inPeriod(d.Time) {
			ev.Drills = append(ev.Drills, drill(d))
		}
	}
	ev.Facts = append(ev.Facts, fmt.Sprintf("%d restores and %d drills in the period", len(ev.Restores), len(ev.Drills)))
	ctl.Evidence = ev
	switch {
	case len(undocumented) > 0:
		ctl.Status, ctl.Reason = StatusFail, strings.Join(undocumented, "; ")
	case len(ev.Restores)+len(ev.Drills) == 0:
		ctl.Status, ctl.Reason = StatusNotApplicable, "no restore or drill in the period"
	default:
		ctl.Status, ctl.Reason = StatusPass, fmt.Sprintf("all %d restores and %d drills are documented with who, what and figures", len(ev.Restores), len(ev.Drills))
	}
	return ctl
}

// monitoring (seed 002 5, seed 003 4): every failure the log records in the period was acted on:
// followed by a success of the same kind and class within the class's RPO.
func (c *computer) monitoring() Control {
	ctl := Control{ID: "seed002-5-monitoring", Title: "Monitoring of backup failures and action on them", Sources: []Source{s002_5, s003_4m},
		Setting: "RPO monitor per class (custos rpo; metric custos.rpo.breached, alert custos.alerts{kind=rpo_breach}); failed drills and dead letters are alerted",
		Classes: []ClassResult{}}
	ev := Evidence{Facts: []string{}, Failures: []Failure{}}
	observed := c.logEnd()
	var open []string
	for _, e := range c.entries {
		if !c.inPeriod(e.Time) {
			continue
		}
		if !failedOutcome(e.Outcome) {
			continue
		}
		limit := 24 * time.Hour // restores and entries of no class: a day
		if cl := c.p.Class(e.Class); cl != nil {
			limit = cl.RPO
		}
		f := Failure{Entry: e.pos, Time: e.Time.UTC(), Kind: e.Kind, Class: e.Class, Outcome: e.Outcome, Reason: e.Reason, ResolvedBy: -1}
		var at time.Time
		for _, x := range c.entries {
			if x.Time.After(e.Time) && resolves(e, x) && (at.IsZero() || x.Time.Before(at)) {
				f.ResolvedBy, at = x.pos, x.Time
			}
		}
		if f.ResolvedBy >= 0 {
			s := at.Sub(e.Time).Seconds()
			f.ResolvedAfterSec = &s
		}
		ev.Failures = append(ev.Failures, f)
		switch {
		case f.ResolvedBy >= 0 && *f.ResolvedAfterSec <= limit.Seconds():
		case f.ResolvedBy >= 0:
			open = append(open, fmt.Sprintf("%s entry %d (%s) was followed by a success only %s later, beyond %s", e.Kind, e.pos, e.Class, durSec(*f.ResolvedAfterSec), dur(limit)))
		case e.Time.Add(limit).After(observed):
			ev.Facts = append(ev.Facts, fmt.Sprintf("%s entry %d failed at %s; still within %s to act", e.Kind, e.pos, stamp(e.Time), dur(limit)))
		default:
			open = append(open, fmt.Sprintf("%s entry %d (%s) failed at %s and nothing succeeded after it", e.Kind, e.pos, e.Class, stamp(e.Time)))
		}
	}
	alerts := 0
	for _, e := range c.kind(audit.KindSuspicious, "") {
		if c.inPeriod(e.Time) {
			alerts++
			ev.Entries = append(ev.Entries, ref(e, "severity="+e.Severity))
		}
	}
	ev.Facts = append(ev.Facts, fmt.Sprintf("%d failures recorded in the period; %d suspicious-activity alerts handled", len(ev.Failures), alerts))
	ctl.Evidence = ev
	switch {
	case len(open) > 0:
		ctl.Status, ctl.Reason = StatusFail, strings.Join(open, "; ")
	case len(ev.Failures) == 0:
		ctl.Status, ctl.Reason = StatusPass, "no failure recorded in the period"
	default:
		ctl.Status, ctl.Reason = StatusPass, fmt.Sprintf("each of the %d failures was followed by a success within the class's RPO", len(ev.Failures))
	}
	return ctl
}

// resolves reports whether x is a success that answers failure e: a backup of the class for a
// failed backup or trigger, a passed drill of the class for a failed drill, a restore for a
// failed restore.
func resolves(e, x entry) bool {
	if failedOutcome(x.Outcome) {
		return false
	}
	switch e.Kind {
	case audit.KindDrill:
		return x.Kind == audit.KindDrill && x.Class == e.Class && x.Outcome == audit.OutcomePassed
	case audit.KindRestore:
		return x.Kind == audit.KindRestore
	default:
		return x.Kind == audit.KindBackupCommit && x.Class == e.Class
	}
}

// audits (seed 002 6, seed 003 4): the log is whole and signed for the whole period; the report
// lists what an auditor samples (erasures, expiries, key rotations, policy changes).
func (c *computer) audits() Control {
	ctl := Control{ID: "seed002-6-audits", Title: "Audits of backup and restoration processes", Sources: []Source{s002_6, s003_4a},
		Setting: "tamper-evident audit log (hash chain and Merkle tree), signed checkpoints written to every target (docs/audit.md)",
		Classes: []ClassResult{}}
	ev := Evidence{Facts: []string{
		fmt.Sprintf("the %d entries the checkpoint of %s covers verify against it; %d of them fall in the period", c.cp.Size, stamp(c.cp.Time), c.report.Log.InPeriod),
	}}
	if later := c.report.Log.Entries - c.cp.Size; later > 0 {
		ev.Facts = append(ev.Facts, fmt.Sprintf("%d entries appended after the checkpoint are not used", later))
	}
	counts := map[string]int{}
	for _, e := range c.entries {
		if !c.inPeriod(e.Time) {
			continue
		}
		counts[e.Kind]++
		switch e.Kind {
		case audit.KindErasure:
			ev.Entries = append(ev.Entries, ref(e, "certificate="+e.Certificate))
		case audit.KindPolicyChange:
			ev.Entries = append(ev.Entries, ref(e, "policy="+e.Policy))
		}
	}
	var parts []string
	for _, k := range audit.Kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	ev.Facts = append(ev.Facts, "entries in the period by kind: "+strings.Join(parts, ", "))
	ctl.Evidence = ev
	need := minTime(c.to, c.in.Now)
	switch {
	case len(c.report.Log.Unreadable) > 0:
		ctl.Status, ctl.Reason = StatusFail, fmt.Sprintf("%d signed entries do not parse as entries, the first at position %d", len(c.report.Log.Unreadable), c.report.Log.Unreadable[0])
	case c.cp.Time.Before(need):
		ctl.Status, ctl.Reason = StatusFail, fmt.Sprintf("the newest checkpoint (%s) predates the end of the period (%s): what came after it is not covered; run custos audit checkpoint and make the report again", stamp(c.cp.Time), stamp(need))
	default:
		ctl.Status, ctl.Reason = StatusPass, fmt.Sprintf("the log verifies against a checkpoint of %d entries made %s, after the period", c.cp.Size, stamp(c.cp.Time))
	}
	return ctl
}

// objectives (seed 003 1, seed 002 2): every class defines an RPO and an RTO, and the classes of
// seed 002's categories are no weaker than the seed.
func (c *computer) objectives() Control {
	ctl := Control{ID: "seed003-1-objectives", Title: "Recovery objectives and data classification", Sources: []Source{s003_1, s002_2}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		cr := ClassResult{Setting: fmt.Sprintf("rpo %s, rto %s: %s", dur(cl.RPO), dur(cl.RTO), cl.Description)}
		seed, isSeed := seedClasses[cl.Name]
		if isSeed {
			cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("seed 002 category: rpo %s, rto %s, %s backups, %s retention",
				dur(seed.rpo), dur(seed.rto), seed.frequency, dur(seed.retain)))
		}
		switch {
		case cl.RPO <= 0 || cl.RTO <= 0:
			cr.Status, cr.Reason = StatusFail, "the class does not define both an RPO and an RTO"
		case isSeed && (cl.RPO > seed.rpo || cl.RTO > seed.rto):
			cr.Status, cr.Reason = StatusFail, fmt.Sprintf("weaker than seed 002 4.1/4.2 (rpo %s, rto %s)", dur(seed.rpo), dur(seed.rto))
		default:
			cr.Status, cr.Reason = StatusPass, "RPO and RTO defined"
			if isSeed {
				cr.Reason += " and no weaker than seed 002"
			}
		}
		return cr
	})
}

// rule321 (seed 003 2): three copies on two kinds of storage, one off-site.
func (c *computer) rule321() Control {
	ctl := Control{ID: "seed003-2-3-2-1", Title: "3-2-1 backup rule", Sources: []Source{s003_2x, s002_35}}
	return c.perClass(ctl, func(cl *policy.Class) ClassResult {
		facts := targetFacts(cl, c.p)
		kinds, offsite := map[string]bool{}, 0
		var names []string
		for _, t := range facts {
			kinds[t.Kind] = true
			if t.Offsite {
				offsite++
			}
			names = append(names, t.Name+" ("+t.Kind+map[bool]string{true: ", off-site", false: ""}[t.Offsite]+")")
		}
		cr := ClassResult{Setting: fmt.Sprintf("%s; replicas %d", strings.Join(names, ", "), cl.Replicas)}
		cr.Evidence.Targets = facts
		read := map[string]bool{}
		for _, d := range c.kind(audit.KindDrill, cl.Name) {
			if c.inPeriod(d.Time) && d.Outcome == audit.OutcomePassed {
				for _, t := range d.Targets {
					read[t] = true
				}
			}
		}
		cr.Evidence.Facts = append(cr.Evidence.Facts, fmt.Sprintf("copies %d, kinds of storage %d, off-site %d; targets a passed drill read in the period: %d",
			len(facts), len(kinds), offsite, len(read)))
		var broken []string
		if len(facts) < 3 {
			broken = append(broken, fmt.Sprintf("%d copies", len(facts)))
		}
		if len(kinds) < 2 {
			broken = append(broken, fmt.Sprintf("%d kind of storage", len(kinds)))
		}
		if offsite < 1 {
			broken = append(broken, "no off-site copy")
		}
		switch {
		case len(broken) > 0:
			cr.Status, cr.Reason = StatusFail, "breaks 3-2-1: "+strings.Join(broken, ", ")
			if cl.Override321 != "" {
				cr.Reason += " (the policy accepts it: " + cl.Override321 + ")"
			}
		default:
			cr.Status, cr.Reason = StatusPass, fmt.Sprintf("%d copies on %d kinds of storage, %d off-site", len(facts), len(kinds), offsite)
		}
		return cr
	})
}

// documentation (seed 003 5): the configuration in force is recorded: the latest policy_change
// entry up to the end of the evidence names the digest of the policy the report was made with.
func (c *computer) documentation() Control {
	ctl := Control{ID: "seed003-5-documentation", Title: "Documentation of schedules and configuration", Sources: []Source{s003_5},
		Setting: "the policy file (schedules, retention, targets, RPO, RTO) " + c.report.Policy.File + ", digest " + c.in.PolicyDigest + "; every change is a policy_change entry",
		Classes: []ClassResult{}}
	ev := Evidence{Facts: []string{}}
	var latest *entry
	for _, e := range c.kind(audit.KindPolicyChange, "") {
		if e.Time.Before(c.end) {
			latest = &e
		}
		if c.inPeriod(e.Time) {
			ev.Entries = append(ev.Entries, ref(e, "policy="+e.Policy))
		}
	}
	ev.Facts = append(ev.Facts, fmt.Sprintf("%d policy changes in the period", len(ev.Entries)))
	ctl.Evidence = ev
	switch {
	case latest == nil:
		ctl.Status, ctl.Reason = StatusFail, "no evidence: no policy_change entry records the policy in force"
	case latest.Policy != c.in.PolicyDigest:
		ctl.Status, ctl.Reason = StatusFail, fmt.Sprintf("the policy in force (%s) is not the one last recorded (entry %d: %s)", c.in.PolicyDigest, latest.pos, latest.Policy)
	default:
		ctl.Status, ctl.Reason = StatusPass, fmt.Sprintf("the policy in force is the one recorded by entry %d at %s", latest.pos, stamp(latest.Time))
	}
	return ctl
}
