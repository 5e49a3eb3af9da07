package retention_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/retention"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

// clock is a fake clock shared by the targets (lock expiry) and the sweeper.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

type bundle struct {
	index   *catalog.Index
	targets []*mem.Target
	clock   *clock
	sweeper *retention.Sweeper
	seq     uint64 // stream sequence of the last item committed
	ns      *natstest.Server
	policy  *policy.Policy
}

// policyYAML is a one-class policy with the given retention block.
func policyYAML(retentionBlock string) string {
	return `version: 1
tenant: acme
targets:
  - {name: a, kind: fs}
  - {name: b, kind: s3, offsite: true}
classes:
  critical:
    schedules:
      - {name: daily, cron: "0 2 * * *"}
    retention: ` + retentionBlock + `
    targets: [a, b]
    rpo: 48h
    rto: 48h
    override_321: "test policy"
`
}

func setup(t *testing.T, retentionBlock string) *bundle {
	t.Helper()
	ns := natstest.Start(t)
	ix, err := catalog.Open(t.Context(), ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("policy.yaml", []byte(policyYAML(retentionBlock)))
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{index: ix, clock: &clock{}, ns: ns, policy: p}
	var ts []target.Target
	for _, l := range []string{"a", "b"} {
		mt := mem.New(mem.WithLabel(l), mem.WithClock(b.clock.Now))
		b.targets = append(b.targets, mt)
		ts = append(ts, mt)
	}
	b.sweeper, err = retention.New(retention.Config{Index: ix, Policy: p, Targets: ts, Clock: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type item struct {
	customer string
	at       time.Time
}

// commit writes a pack of items (pack object and a stand-in manifest) to every target, locked
// until lockUntil when not zero, and indexes it as committed a minute after its newest event.
func (b *bundle) commit(t *testing.T, class string, lockUntil time.Time, items ...item) pack.Manifest {
	t.Helper()
	var in []pack.Item
	for _, it := range items {
		b.seq++
		id := fmt.Sprintf("item-%d", b.seq)
		in = append(in, pack.Item{ID: id, Customer: it.customer, Seq: b.seq, EventTime: it.at, Sealed: []byte(id)})
	}
	built := pack.Build(class, in)
	m := built.Manifest
	var names []string
	for _, tg := range b.targets {
		for _, obj := range []struct {
			name string
			data []byte
		}{{pack.ObjectName(m.Pack), built.Data}, {pack.ManifestName(m.Pack), []byte("manifest " + m.Pack)}} {
			opts := target.PutOptions{SHA256: sha256.Sum256(obj.data), RetainUntil: lockUntil}
			if err := tg.Put(t.Context(), obj.name, bytes.NewReader(obj.data), int64(len(obj.data)), opts); err != nil {
				t.Fatal(err)
			}
		}
		names = append(names, tg.Name())
	}
	if err := b.index.Commit(t.Context(), m, names, m.NewestEvent.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return m
}

// daily commits one pack a day at 02:00 UTC in [from, to), each holding one item of customer
// "pc1", and returns the pack ids by day (YYYY-MM-DD).
func (b *bundle) daily(t *testing.T, from, to time.Time) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		m := b.commit(t, "critical", time.Time{}, item{"pc1000000000000000000000000000000", d.Add(2 * time.Hour)})
		ids[d.Format(time.DateOnly)] = m.Pack
	}
	return ids
}

func (b *bundle) indexed(t *testing.T) []string {
	t.Helper()
	packs, err := b.index.Packs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range packs {
		out = append(out, p.Pack)
	}
	slices.Sort(out)
	return out
}

func (b *bundle) stored(t *testing.T, id string) (packs, manifests int) {
	t.Helper()
	for _, tg := range b.targets {
		if _, err := tg.Stat(t.Context(), pack.ObjectName(id)); err == nil {
			packs++
		}
		if _, err := tg.Stat(t.Context(), pack.ManifestName(id)); err == nil {
			manifests++
		}
	}
	return packs, manifests
}

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// yearRules are small enough to work out by hand over a year of daily packs.
const yearRules = "{min: 7d, keep_last: 3, daily: 7, weekly: 4, monthly: 6, yearly: 2}"

// yearKept is the retained set for yearRules, daily packs at 02:00 UTC from 2026-07-01 to
// 2027-06-30, swept at 2027-07-01 00:00 UTC, worked out by hand:
//
//	keep_last 3: Jun 30, 29, 28
//	daily 7:     Jun 30 .. Jun 24
//	weekly 4:    ISO weeks 2027-W26 (Mon Jun 28): Jun 30; W25: Jun 27; W24: Jun 20; W23: Jun 13
//	monthly 6:   Jun 30, May 31, Apr 30, Mar 31, Feb 28, Jan 31
//	yearly 2:    2027: Jun 30; 2026: Dec 31
//	min 7d:      committed Jun 24 02:01 is 6d21h59m old: Jun 24 .. Jun 30 (Jun 23 is 7d21h59m)
//	newest pack and customer pc1's latest item: Jun 30
var yearKept = []string{
	"2026-12-31", "2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31",
	"2027-06-13", "2027-06-20", "2027-06-24", "2027-06-25", "2027-06-26", "2027-06-27",
	"2027-06-28", "2027-06-29", "2027-06-30",
}

func TestYearOfDailyPacks(t *testing.T) {
	t.Parallel()
	b := setup(t, yearRules)
	ids := b.daily(t, day("2026-07-01"), day("2027-07-01"))
	if len(ids) != 365 {
		t.Fatalf("%d packs", len(ids))
	}
	now := day("2027-07-01")
	b.clock.Set(now)

	plan, err := b.sweeper.Plan(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for d, id := range ids {
		byID[id] = d
	}
	var keptDays []string
	for _, d := range plan {
		if d.Keep {
			keptDays = append(keptDays, byID[d.Pack.Pack])
		} else if d.Reason() != "no keep rule applies" {
			t.Errorf("pack of %s to delete with reason %q", byID[d.Pack.Pack], d.Reason())
		}
	}
	slices.Sort(keptDays)
	if !slices.Equal(keptDays, yearKept) {
		t.Fatalf("kept\n %v\nwant\n %v", keptDays, yearKept)
	}
	if plan[0].Pack.Pack != ids["2027-06-30"] || !slices.Contains(plan[0].Reasons, "newest pack of class critical") {
		t.Fatalf("first decision %+v, want the newest pack", plan[0])
	}

	rep, err := b.sweeper.Sweep(t.Context(), now, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != len(yearKept) || rep.Deleted != 365-len(yearKept) || rep.Locked != 0 || rep.Failed != 0 {
		t.Fatalf("report kept=%d deleted=%d locked=%d failed=%d: %v", rep.Kept, rep.Deleted, rep.Locked, rep.Failed, rep.Err())
	}
	var want []string
	for _, d := range yearKept {
		want = append(want, ids[d])
	}
	slices.Sort(want)
	if got := b.indexed(t); !slices.Equal(got, want) {
		t.Fatalf("index holds %d packs, want %d", len(got), len(want))
	}
	for d, id := range ids {
		p, m := b.stored(t, id)
		if slices.Contains(yearKept, d) != (p == 2 && m == 2) || (p+m != 0 && p+m != 4) {
			t.Fatalf("pack of %s: %d pack objects, %d manifests after the sweep", d, p, m)
		}
	}
	recs, err := b.index.CustomerRecords(t.Context())
	if err != nil || len(recs) != len(yearKept) {
		t.Fatalf("customer entries after the sweep: %d, %v", len(recs), err)
	}

	// A second sweep finds nothing more to do.
	rep, err = b.sweeper.Sweep(t.Context(), now, false)
	if err != nil || rep.Deleted != 0 || rep.Kept != len(yearKept) {
		t.Fatalf("second sweep: %+v, %v", rep, err)
	}
}

func TestDryRunDeletesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, yearRules)
	ids := b.daily(t, day("2026-07-01"), day("2027-07-01"))
	now := day("2027-07-01")
	before := b.indexed(t)
	rep, err := b.sweeper.Sweep(t.Context(), now, true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || rep.Deleted != 365-len(yearKept) || rep.Kept != len(yearKept) {
		t.Fatalf("dry run report kept=%d deleted=%d", rep.Kept, rep.Deleted)
	}
	for _, d := range rep.Decisions {
		if want := retention.OutcomeKept; !d.Keep && d.Outcome != retention.OutcomeWouldDelete || d.Keep && d.Outcome != want {
			t.Fatalf("dry run outcome %s for keep=%v", d.Outcome, d.Keep)
		}
	}
	if after := b.indexed(t); !slices.Equal(before, after) {
		t.Fatal("dry run changed the index")
	}
	for d, id := range ids {
		if p, m := b.stored(t, id); p != 2 || m != 2 {
			t.Fatalf("dry run deleted objects of %s", d)
		}
	}
}

// Packs younger than min retention survive whatever the counts say.
func TestMinRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 30d, keep_last: 1}")
	ids := b.daily(t, day("2027-01-01"), day("2027-03-01")) // 59 packs
	now := day("2027-03-01")
	rep, err := b.sweeper.Sweep(t.Context(), now, false)
	if err != nil {
		t.Fatal(err)
	}
	// Committed at 02:01: Jan 30 is 29d21h59m old on Mar 1, Jan 29 is 30d21h59m.
	var want []string
	for d := day("2027-01-30"); d.Before(now); d = d.AddDate(0, 0, 1) {
		want = append(want, ids[d.Format(time.DateOnly)])
	}
	slices.Sort(want)
	if got := b.indexed(t); !slices.Equal(got, want) || rep.Kept != 30 || rep.Deleted != 29 {
		t.Fatalf("kept %d packs (report kept=%d deleted=%d), want the 30 younger than 30 days", len(got), rep.Kept, rep.Deleted)
	}
	for _, d := range rep.Decisions {
		if d.Pack.Pack == ids["2027-01-30"] && d.Reason() != "younger than min retention 30d (age 29d21h59m)" {
			t.Fatalf("reason %q", d.Reason())
		}
	}
}

// A pack whose objects are locked in a target stays there and stays indexed (with only the
// targets that still hold it), is reported, and goes once the lock has expired.
func TestLockedPackSurvives(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 2d, keep_last: 1}")
	start := day("2027-01-01")
	b.clock.Set(start)
	// The old pack is locked in target b only (as a bucket with object lock next to a disk).
	old := b.commit(t, "critical", time.Time{}, item{"pc1000000000000000000000000000000", start.Add(2 * time.Hour)})
	for _, name := range []string{pack.ObjectName(old.Pack), pack.ManifestName(old.Pack)} {
		if err := b.targets[1].Delete(t.Context(), name); err != nil {
			t.Fatal(err)
		}
		data := []byte("x")
		if err := b.targets[1].Put(t.Context(), name, bytes.NewReader(data), 1,
			target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: start.AddDate(0, 0, 30)}); err != nil {
			t.Fatal(err)
		}
	}
	b.commit(t, "critical", time.Time{}, item{"pc1000000000000000000000000000000", start.AddDate(0, 0, 1).Add(2 * time.Hour)})

	now := start.AddDate(0, 0, 10)
	b.clock.Set(now)
	rep, err := b.sweeper.Sweep(t.Context(), now, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Locked != 1 || rep.Deleted != 0 || rep.Failed != 0 {
		t.Fatalf("report locked=%d deleted=%d failed=%d: %v", rep.Locked, rep.Deleted, rep.Failed, rep.Err())
	}
	var d retention.Decision
	for _, x := range rep.Decisions {
		if x.Pack.Pack == old.Pack {
			d = x
		}
	}
	if d.Outcome != retention.OutcomeLocked || !slices.Equal(d.Locked, []string{"mem:b"}) {
		t.Fatalf("decision %+v", d)
	}
	rec, err := b.index.Pack(t.Context(), old.Pack)
	if err != nil || !slices.Equal(rec.Targets, []string{"mem:b"}) {
		t.Fatalf("locked pack in the index: %+v, %v", rec, err)
	}
	if p, m := b.stored(t, old.Pack); p != 1 || m != 1 {
		t.Fatalf("locked pack: %d pack objects, %d manifests left, want 1 and 1", p, m)
	}

	// After the lock expires the next sweep finishes the job.
	now = start.AddDate(0, 0, 31)
	b.clock.Set(now)
	rep, err = b.sweeper.Sweep(t.Context(), now, false)
	if err != nil || rep.Deleted != 1 || rep.Locked != 0 {
		t.Fatalf("sweep after the lock: %+v, %v", rep, err)
	}
	if _, err := b.index.Pack(t.Context(), old.Pack); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("expired pack still indexed: %v", err)
	}
}

// The newest pack holding a customer's latest item is kept even when no count keeps it: a
// pack holds items of many customers, and deleting it would lose the only copy of that item.
func TestCustomerLatestItemKept(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 2d, keep_last: 1}")
	start := day("2027-01-01")
	c1, c2, c3 := "pc1000000000000000000000000000000", "pc2000000000000000000000000000000", "pd3000000000000000000000000000000"
	onlyC2 := b.commit(t, "critical", time.Time{}, item{c1, start}, item{c2, start.Add(time.Hour)})
	superseded := b.commit(t, "critical", time.Time{}, item{c1, start.AddDate(0, 0, 1)}, item{c3, start.AddDate(0, 0, 1)})
	newest := b.commit(t, "critical", time.Time{}, item{c1, start.AddDate(0, 0, 2)}, item{c3, start.AddDate(0, 0, 2)})
	rep, err := b.sweeper.Sweep(t.Context(), start.AddDate(0, 0, 10), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{onlyC2.Pack, newest.Pack}
	slices.Sort(want)
	if got := b.indexed(t); !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v (superseded %s)", got, want, superseded.Pack)
	}
	for _, d := range rep.Decisions {
		if d.Pack.Pack == onlyC2.Pack && d.Reason() != "holds the latest item of 1 customer(s)" {
			t.Fatalf("reason %q", d.Reason())
		}
	}
}

func TestNewRequiresParts(t *testing.T) {
	t.Parallel()
	if _, err := retention.New(retention.Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
}

// When the newest pack's entry names no target (every copy lost), the newest pack a target
// holds is kept as well: the newest good copy of the class.
func TestNewestGoodCopyKept(t *testing.T) {
	t.Parallel()
	now := day("2027-03-01")
	var packs []catalog.PackRecord
	for i := range 5 {
		at := now.AddDate(0, 0, -30+i)
		rec := catalog.PackRecord{Pack: pack.PackID([]string{fmt.Sprint(i)}), Class: "critical", NewestEvent: at, Committed: at,
			Targets: []string{"mem:a"}}
		if i == 4 {
			rec.Targets = nil
		}
		packs = append(packs, rec)
	}
	p, err := policy.Parse("policy.yaml", []byte(policyYAML("{min: 2d}")))
	if err != nil {
		t.Fatal(err)
	}
	s, err := retention.New(retention.Config{Index: listIndex{packs}, Policy: p, Targets: []target.Target{mem.New()}})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := s.Plan(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, d := range plan {
		if d.Keep {
			kept = append(kept, d.Pack.Pack+" "+d.Reason())
		}
	}
	want := []string{packs[4].Pack + " newest pack of class critical", packs[3].Pack + " newest pack of class critical held by a target"}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept %q, want %q", kept, want)
	}
}

// A pack indexed in a target the sweeper does not know is left alone everywhere and reported.
func TestUnknownTargetTouchesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 2d, keep_last: 1}")
	start := day("2027-01-01")
	old := b.commit(t, "critical", time.Time{}, item{"pc1000000000000000000000000000000", start})
	b.commit(t, "critical", time.Time{}, item{"pc1000000000000000000000000000000", start.AddDate(0, 0, 1)})
	if err := b.index.RemoveTargets(t.Context(), old.Pack, "mem:a"); err != nil {
		t.Fatal(err)
	}
	// Re-index old as held by mem:b and a target this sweeper was not given.
	rec, err := b.index.Pack(t.Context(), old.Pack)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.index.Commit(t.Context(), pack.Manifest{V: 1, Pack: old.Pack, Class: "critical", NewestEvent: rec.NewestEvent,
		Items: old.Items}, []string{"mem:b", "s3:elsewhere"}, rec.Committed); err != nil {
		t.Fatal(err)
	}
	rep, err := b.sweeper.Sweep(t.Context(), start.AddDate(0, 0, 10), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 1 || rep.Deleted != 0 || rep.Err() == nil {
		t.Fatalf("report %+v", rep)
	}
	if p, m := b.stored(t, old.Pack); p != 2 || m != 2 {
		t.Fatalf("%d pack objects, %d manifests left, want all", p, m)
	}
	if _, err := b.index.Pack(t.Context(), old.Pack); err != nil {
		t.Fatalf("pack no longer indexed: %v", err)
	}
}

// snapshotList is a fixed list of committed snapshots.
type snapshotList []snapshot.Snapshot

func (l snapshotList) List(context.Context, string) ([]snapshot.Snapshot, error) { return l, nil }

// TestSnapshotPacksKept: a pack holding items that a committed snapshot lists (an incremental
// chain restores through its full snapshot's items) is never deleted, whatever its age; packs
// no snapshot lists follow the keep rules.
func TestSnapshotPacksKept(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 2d, keep_last: 1}")
	ids := b.daily(t, day("2027-01-01"), day("2027-01-11")) // 10 packs
	listed := ids["2027-01-02"]
	p, err := policy.Parse("policy.yaml", []byte(policyYAML("{min: 2d, keep_last: 1}")))
	if err != nil {
		t.Fatal(err)
	}
	ts := make([]target.Target, len(b.targets))
	for i, tg := range b.targets {
		ts[i] = tg
	}
	s, err := retention.New(retention.Config{Index: b.index, Policy: p, Targets: ts, Clock: b.clock.Now,
		Snapshots: snapshotList{{ID: "s1", Class: "critical", Tasks: []snapshot.TaskResult{{Packs: []string{listed}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Sweep(t.Context(), day("2027-02-01"), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{listed, ids["2027-01-10"]}
	slices.Sort(want)
	if got := b.indexed(t); !slices.Equal(got, want) || rep.Deleted != 8 {
		t.Fatalf("kept %v (deleted %d), want %v: the listed pack and the newest", got, rep.Deleted, want)
	}
	for _, d := range rep.Decisions {
		if d.Pack.Pack == listed && !strings.Contains(d.Reason(), "listed by snapshot s1") {
			t.Fatalf("reason %q", d.Reason())
		}
	}
	if packs, _ := b.stored(t, listed); packs != 2 {
		t.Fatalf("listed pack in %d targets, want 2", packs)
	}
}
