package retention_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/retention"
	"github.com/custos-dev/custos/pkg/target"
)

// A sweep that deleted packs of a class appends one retention_expiry entry with how many; a dry
// run, and a sweep that deletes nothing, append none; the log still verifies.
func TestSweepAudited(t *testing.T) {
	t.Parallel()
	b := setup(t, "{min: 2d, keep_last: 2}")
	ctx := context.Background()
	log, err := audit.Open(ctx, b.ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	var ts []target.Target
	for _, mt := range b.targets {
		ts = append(ts, mt)
	}
	now := day("2027-01-20")
	b.clock.Set(now)
	s, err := retention.New(retention.Config{Index: b.index, Policy: b.policy, Targets: ts, Clock: b.clock.Now, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	b.daily(t, day("2027-01-01"), day("2027-01-11"))
	// One old pack is locked: it is kept, and not counted as expired.
	b.commit(t, "critical", now.Add(time.Hour), item{"pc1000000000000000000000000000000", day("2026-12-01")})

	entries := func() []audit.Entry {
		t.Helper()
		es, err := audit.List(ctx, b.ns.JS, 0)
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	if rep, err := s.Sweep(ctx, time.Time{}, true); err != nil || rep.Deleted != 9 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if es := entries(); len(es) != 0 {
		t.Fatalf("a dry run appended %+v", es)
	}
	rep, err := s.Sweep(ctx, time.Time{}, false)
	if err != nil || rep.Deleted != 8 || rep.Locked != 1 || rep.AuditErr != nil {
		t.Fatalf("sweep: %+v, %v", rep, err)
	}
	es := entries()
	if len(es) != 1 {
		t.Fatalf("%d entries, want 1: %+v", len(es), es)
	}
	e := es[0]
	if e.Kind != audit.KindRetentionExpiry || e.Class != "critical" || e.Count != 8 || e.Outcome != retention.OutcomeExpired ||
		!e.Time.Equal(now) || strings.Contains(e.Reason, "pc1") {
		t.Fatalf("entry %+v", e)
	}
	if rep, err := s.Sweep(ctx, time.Time{}, false); err != nil || rep.Deleted != 0 {
		t.Fatalf("second sweep: %+v, %v", rep, err)
	}
	if es := entries(); len(es) != 1 {
		t.Fatalf("a sweep that expired nothing appended: %+v", es[1:])
	}
	raw, err := audit.ReadEntries(ctx, b.ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(raw, nil, nil); err != nil {
		t.Fatal(err)
	}
}
