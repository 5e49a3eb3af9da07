package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

// TestDrillDefault: a class without a drill block is drilled quarterly with a bounded sample, and
// so is every class of the default policy (seed 002 3.4).
func TestDrillDefault(t *testing.T) {
	p, err := policy.Parse("policy.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(p.Classes, policy.Default().Classes...) {
		d := c.Drill
		if d == nil || d.Cron != policy.DefaultDrillCron || d.Sample != (policy.Sample{Items: policy.DefaultDrillSample}) {
			t.Fatalf("class %s: drill %+v", c.Name, d)
		}
		// Four drills a year, never more than a quarter apart.
		var due []time.Time
		for x := d.Next(date(2027, 1, 1)); x.Before(date(2028, 1, 1)); x = d.Next(x) {
			due = append(due, x)
		}
		if len(due) != 4 || !due[0].Equal(time.Date(2027, 2, 15, 6, 0, 0, 0, time.UTC)) {
			t.Fatalf("class %s: drills due %v", c.Name, due)
		}
	}
	if p.Class("critical").Drill.Line != 0 {
		t.Fatal("a defaulted drill has a line")
	}
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func TestDrillBlock(t *testing.T) {
	for _, tc := range []struct {
		block  string
		cron   string
		sample policy.Sample
	}{
		{"    drill: {cron: \"0 6 1 1,4,7,10 *\", sample: 250}", "0 6 1 1,4,7,10 *", policy.Sample{Items: 250}},
		{"    drill:\n      sample: all", policy.DefaultDrillCron, policy.Sample{All: true}},
		{"    drill:\n      cron: \"@monthly\"\n      sample: 2.5%", "@monthly", policy.Sample{Percent: 2.5}},
	} {
		p, err := policy.Parse("policy.yaml", []byte(edit(t, base, "    rto: 48h", "    rto: 48h\n"+tc.block)))
		if err != nil {
			t.Fatalf("%s: %v", tc.block, err)
		}
		d := p.Class("critical").Drill
		if d.Cron != tc.cron || d.Sample != tc.sample || d.Line != 32 || len(p.Warnings) != 0 {
			t.Fatalf("%s: drill %+v, warnings %v", tc.block, d, p.Warnings)
		}
	}
}

func TestDrillRules(t *testing.T) {
	for _, tc := range []struct {
		block string
		rule  string
		msg   string
	}{
		{"    drill: {sample: 0}", policy.RuleDrill, "is not a number of items"},
		{"    drill: {sample: 150%}", policy.RuleDrill, "at most 100%"},
		{"    drill: {sample: some}", policy.RuleDrill, "is not a number of items"},
		{"    drill: {cron: \"@every 1h\"}", policy.RuleCron, "@every"},
		{"    drill: {cron: \"0 0 30 2 *\"}", policy.RuleCron, "never due"},
		{"    drill: {cron: \"@monthly\", when: now}", policy.RuleUnknownKey, `unknown key "when" (known keys: cron, sample)`},
		{"    drill: quarterly", policy.RuleType, "expected a mapping"},
	} {
		_, err := policy.Parse("policy.yaml", []byte(edit(t, base, "    rto: 48h", "    rto: 48h\n"+tc.block)))
		errs := policy.Errors(err)
		if len(errs) != 1 || errs[0].Rule != tc.rule || errs[0].Line != 32 || !strings.Contains(errs[0].Msg, tc.msg) {
			t.Errorf("%s: errors %v, want one %s error on line 32 containing %q", tc.block, errs, tc.rule, tc.msg)
		}
	}
}

// TestDrillWarning: a drill schedule less often than quarterly is accepted, with a warning that
// cites the seed.
func TestDrillWarning(t *testing.T) {
	p, err := policy.Parse("policy.yaml", []byte(edit(t, base, "    rto: 48h", "    rto: 48h\n    drill: {cron: \"@yearly\"}")))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || p.Warnings[0].Rule != policy.RuleDrill || !strings.Contains(p.Warnings[0].Msg, "seed 002 3.4") {
		t.Fatalf("warnings %v", p.Warnings)
	}
}

func TestSample(t *testing.T) {
	for _, tc := range []struct {
		in          string
		total, want int
	}{
		{"100", 1000, 100}, {"100", 7, 7}, {"all", 1234, 1234}, {"10%", 1000, 100}, {"10%", 3, 1},
		{"0.5%", 1001, 6}, {"100%", 9, 9}, {"5", 0, 0},
	} {
		s, err := policy.ParseSample(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Size(tc.total); got != tc.want || s.String() != tc.in {
			t.Errorf("%s of %d: %d (%s), want %d", tc.in, tc.total, got, s, tc.want)
		}
	}
	for _, bad := range []string{"", "-1", "0%", "x%", "1.5", "all of it"} {
		if _, err := policy.ParseSample(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
