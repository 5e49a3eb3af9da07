package retention

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/policy"
)

// Decision is what retention decided for one indexed pack, and, after a sweep, what happened.
type Decision struct {
	Pack catalog.PackRecord
	// Keep is true when at least one rule keeps the pack; Reasons lists every rule that does,
	// or, for a pack to delete, why none does.
	Keep    bool
	Reasons []string
	// Outcome is set by Sweep: OutcomeKept, OutcomeDeleted, OutcomeWouldDelete (dry run),
	// OutcomeLocked or OutcomeFailed.
	Outcome Outcome
	// Locked names the targets that refused to delete the pack (object lock or legal hold).
	Locked []string
	// Err is the first error met deleting the pack (OutcomeFailed).
	Err error
}

// Reason joins the reasons for one line of output.
func (d Decision) Reason() string { return strings.Join(d.Reasons, "; ") }

// Outcome of a decision after Sweep.
type Outcome string

// Outcomes.
const (
	OutcomeKept        Outcome = "kept"
	OutcomeDeleted     Outcome = "deleted"
	OutcomeWouldDelete Outcome = "would-delete" // dry run
	// OutcomeLocked: a target refused (ErrLocked). The pack stays where it is locked and stays
	// indexed with the targets that still hold it; the next sweep tries again.
	OutcomeLocked Outcome = "locked"
	// OutcomeFailed: a target or the index failed; the pack stays indexed; the next sweep tries
	// again.
	OutcomeFailed Outcome = "failed"
)

// decide applies the keep rules of the policy to every pack. It depends on nothing but its
// arguments. Decisions come back grouped by class in policy order (unknown classes last), newest
// pack first.
//
// protected maps packs that must stay whatever the rules say (items a snapshot lists) to why.
func decide(p *policy.Policy, packs []catalog.PackRecord, customers []catalog.CustomerRecord, protected map[string]string, now time.Time) []Decision {
	byClass := map[string][]catalog.PackRecord{}
	for _, r := range packs {
		byClass[r.Class] = append(byClass[r.Class], r)
	}
	latest := latestPerCustomer(packs, customers)

	classes := p.ClassNames()
	var unknown []string
	for c := range byClass {
		if p.Class(c) == nil {
			unknown = append(unknown, c)
		}
	}
	slices.Sort(unknown)

	var out []Decision
	for _, name := range append(classes, unknown...) {
		recs := byClass[name]
		slices.SortFunc(recs, newestFirst)
		ds := make([]Decision, len(recs))
		for i, r := range recs {
			ds[i].Pack = r
		}
		keep := func(i int, format string, args ...any) {
			ds[i].Keep = true
			ds[i].Reasons = append(ds[i].Reasons, fmt.Sprintf(format, args...))
		}
		c := p.Class(name)
		if c == nil {
			for i := range ds {
				keep(i, "class %q is not in the policy", name)
			}
			out = append(out, ds...)
			continue
		}
		loc := c.Location
		if loc == nil {
			loc = time.UTC
		}
		rt := c.Retention
		for i := range min(rt.KeepLast, len(ds)) {
			keep(i, "keep_last %d", rt.KeepLast)
		}
		for _, b := range []struct {
			rule   string
			n      int
			period func(time.Time) string
		}{
			{"daily", rt.Daily, func(t time.Time) string { return t.Format(time.DateOnly) }},
			{"weekly", rt.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
			{"monthly", rt.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
			{"yearly", rt.Yearly, func(t time.Time) string { return t.Format("2006") }},
		} {
			used, last := 0, ""
			for i := range ds {
				if used == b.n {
					break
				}
				if k := b.period(ds[i].Pack.NewestEvent.In(loc)); k != last {
					last = k
					used++
					keep(i, "%s %d: newest of %s", b.rule, b.n, k)
				}
			}
		}
		for i, r := range recs {
			written := r.Committed
			if written.IsZero() || r.NewestEvent.After(written) {
				written = r.NewestEvent
			}
			if age := now.Sub(written); age < rt.Min {
				keep(i, "younger than min retention %s (age %s)", policy.FormatDuration(rt.Min), policy.FormatDuration(max(age, 0).Round(time.Second)))
			}
			if why, ok := protected[r.Pack]; ok {
				keep(i, "%s", why)
			}
			if n := latest[r.Pack]; n > 0 {
				keep(i, "holds the latest item of %d customer(s)", n)
			}
			if !pack.ValidID(r.Pack) {
				keep(i, "not a valid pack id: never deleted")
			}
		}
		if len(ds) > 0 {
			keep(0, "newest pack of class %s", name)
		}
		// The newest good copy: should the newest pack's entry name no target (every copy
		// lost), the newest pack some target holds is kept too.
		if len(ds) > 0 && len(ds[0].Pack.Targets) == 0 {
			if i := slices.IndexFunc(ds, func(d Decision) bool { return len(d.Pack.Targets) > 0 }); i > 0 {
				keep(i, "newest pack of class %s held by a target", name)
			}
		}
		for i := range ds {
			if !ds[i].Keep {
				ds[i].Reasons = []string{"no keep rule applies"}
			}
		}
		out = append(out, ds...)
	}
	return out
}

// newestFirst orders packs by newest event, then commit time, then id, newest first.
func newestFirst(a, b catalog.PackRecord) int {
	if c := b.NewestEvent.Compare(a.NewestEvent); c != 0 {
		return c
	}
	if c := b.Committed.Compare(a.Committed); c != 0 {
		return c
	}
	return cmp.Compare(b.Pack, a.Pack)
}

// latestPerCustomer returns, per pack id, how many (class, customer) pairs have their latest
// item in that pack: the item with the latest event time, then the highest stream sequence,
// then, among copies of one item in several packs (a redelivery), the newest pack. Only packs
// in the index count: a customer entry without its pack entry is an interrupted removal.
func latestPerCustomer(packs []catalog.PackRecord, customers []catalog.CustomerRecord) map[string]int {
	indexed := make(map[string]catalog.PackRecord, len(packs))
	for _, r := range packs {
		indexed[r.Pack] = r
	}
	type key struct{ class, customer string }
	type best struct {
		entry pack.Entry
		rec   catalog.PackRecord
	}
	winners := map[key]best{}
	for _, cr := range customers {
		rec, ok := indexed[cr.Pack]
		if !ok {
			continue
		}
		for _, e := range cr.Items {
			k := key{rec.Class, e.Customer}
			cur, ok := winners[k]
			if !ok || later(e, rec, cur.entry, cur.rec) {
				winners[k] = best{e, rec}
			}
		}
	}
	out := map[string]int{}
	for _, w := range winners {
		out[w.rec.Pack]++
	}
	return out
}

func later(e pack.Entry, r catalog.PackRecord, than pack.Entry, thanRec catalog.PackRecord) bool {
	if c := e.EventTime.Compare(than.EventTime); c != 0 {
		return c > 0
	}
	if e.Seq != than.Seq {
		return e.Seq > than.Seq
	}
	return newestFirst(r, thanRec) < 0
}
