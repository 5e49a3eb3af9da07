package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

// base is a valid policy; the table below edits one or two lines of it. Line numbers matter: the
// tests assert them.
const base = `version: 1
tenant: acme
effective: 2027-01-01
timezone: UTC
catch_up: 6h
fiscal_year_start_month: 4
targets:
  - name: disk
    kind: fs
  - name: s3a
    kind: s3
  - name: s3b
    kind: s3
    offsite: true
classes:
  critical:
    schedules:
      - name: daily
        cron: "0 2 * * *"
        method: incremental
    retention:
      min: 30d
      daily: 30
    targets: [disk, s3a, s3b]
    replicas: 2
    immutability:
      mode: compliance
      retain_days: 30
      legal_hold_on_suspicious: true
    rpo: 48h
    rto: 48h
deadlines:
  - name: end_of_month
    kind: end_of_month
    time: "23:00"
  - name: gdpr_review
    kind: date
    date: 2027-05-25T09:00:00Z
    classes: [critical]
`

// edit replaces the first line equal to old (after trimming spaces on the right) with new, which
// may span several lines. It fails the test when old is not a line of src.
func edit(t *testing.T, src string, pairs ...string) string {
	t.Helper()
	lines := strings.Split(src, "\n")
	for i := 0; i+1 < len(pairs); i += 2 {
		j := slices.Index(lines, pairs[i])
		if j < 0 {
			t.Fatalf("edit: no line %q", pairs[i])
		}
		lines[j] = pairs[i+1]
	}
	return strings.Join(lines, "\n")
}

type at struct {
	rule string
	line int
}

func TestParseBase(t *testing.T) {
	p, err := policy.Parse("policy.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 0 {
		t.Fatalf("warnings: %v", p.Warnings)
	}
	c := p.Class("critical")
	if c == nil || p.Tenant != "acme" || p.CatchUp != 6*time.Hour || p.FiscalYearStartMonth != time.April {
		t.Fatalf("policy: %+v", p)
	}
	if c.RPO != 48*time.Hour || c.Retention.Min != 30*24*time.Hour || c.Replicas != 2 || c.Line != 16 {
		t.Fatalf("class: %+v", c)
	}
	if s := c.Schedules[0]; s.Name != "daily" || s.Method != policy.MethodIncremental || s.Line != 18 {
		t.Fatalf("schedule: %+v", s)
	}
	if c.Immutability != (policy.Immutability{Mode: "compliance", RetainDays: 30, LegalHoldOnSuspicious: true}) {
		t.Fatalf("immutability: %+v", c.Immutability)
	}
	eom, gdpr := p.Deadlines[0], p.Deadlines[1]
	if eom.Hour != 23 || !slices.Equal(eom.Classes, []string{"critical"}) {
		t.Fatalf("end_of_month: %+v", eom)
	}
	if !gdpr.Date.Equal(time.Date(2027, 5, 25, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("gdpr: %+v", gdpr)
	}
}

// TestRules breaks every rule once and checks that exactly the expected errors come back, each
// with its line.
func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits []string
		want  []at
		msg   string // a fragment of the first error's message
	}{
		{"syntax", []string{"    rpo: 48h", "    rpo: [48h"}, []at{{policy.RuleSyntax, 30}}, "did not find expected"},
		{"syntax scanner", []string{"      mode: compliance", "\tmode: compliance"}, []at{{policy.RuleSyntax, 27}}, "cannot start any token"},
		{"unknown key top", []string{"catch_up: 6h", "catchup: 6h"}, []at{{policy.RuleUnknownKey, 5}}, `unknown key "catchup"`},
		{"unknown key class", []string{"    rto: 48h", "    rto: 48h\n    retension: 30d"}, []at{{policy.RuleUnknownKey, 32}}, "known keys: description"},
		{"unknown key retention", []string{"      daily: 30", "      dayly: 30"}, []at{{policy.RuleUnknownKey, 23}}, `class "critical": retention: unknown key "dayly"`},
		{"duplicate key", []string{"    rto: 48h", "    rto: 48h\n    rto: 72h"}, []at{{policy.RuleDuplicateKey, 32}}, "already set on line 31"},
		{"type int", []string{"    replicas: 2", "    replicas: two"}, []at{{policy.RuleType, 25}}, "expected a whole number"},
		{"type scalar", []string{"      min: 30d", "      min: [30d]"}, []at{{policy.RuleType, 22}}, "expected a single value"},
		{"type bool", []string{"    offsite: true", "    offsite: yes please"}, []at{{policy.RuleType, 14}}, "expected true or false"},
		{"type mapping", []string{"  critical:", "  critical: daily\n  other:"}, []at{{policy.RuleType, 16}}, "expected a mapping"},
		{"required tenant", []string{"tenant: acme", "# no tenant"}, []at{{policy.RuleRequired, 1}}, "tenant is required"},
		{"required targets empty", []string{"    targets: [disk, s3a, s3b]", "    targets: []"}, []at{{policy.RuleRequired, 24}}, "targets must not be empty"},
		{"required schedule cron", []string{`        cron: "0 2 * * *"`, ""}, []at{{policy.RuleRequired, 18}}, "cron is required"},
		{"version", []string{"version: 1", "version: 2"}, []at{{policy.RuleVersion, 1}}, "version 2 is not supported"},
		{"name class", []string{"  critical:", "  Critical:"}, []at{{policy.RuleName, 16}, {policy.RuleDeadline, 39}}, `class name "Critical"`},
		{"name schedule", []string{"      - name: daily", "      - name: daily.1"}, []at{{policy.RuleName, 18}}, `schedule name "daily.1"`},
		{"name tenant", []string{"tenant: acme", "tenant: acme corp"}, []at{{policy.RuleName, 2}}, `tenant "acme corp"`},
		{"duplicate target", []string{"  - name: s3a", "  - name: disk"}, []at{{policy.RuleDuplicateName, 10}, {policy.RuleTarget, 24}}, "already defined on line 8"},
		{"duplicate schedule", []string{"        method: incremental", "        method: incremental\n      - name: daily\n        cron: \"0 3 * * *\""}, []at{{policy.RuleDuplicateName, 21}}, `schedule "daily" is already defined on line 18`},
		{"timezone", []string{"timezone: UTC", "timezone: Mars/Olympus"}, []at{{policy.RuleTimezone, 4}}, "unknown time zone"},
		{"timezone local", []string{"timezone: UTC", "timezone: Local"}, []at{{policy.RuleTimezone, 4}}, "differs from machine to machine"},
		{"duration", []string{"    rpo: 48h", "    rpo: 2 days"}, []at{{policy.RuleDuration, 30}}, "invalid duration"},
		{"date effective", []string{"effective: 2027-01-01", "effective: 01/01/2027"}, []at{{policy.RuleDate, 3}}, "not a date"},
		{"catch-up", []string{"catch_up: 6h", "catch_up: 0"}, []at{{policy.RuleCatchUp, 5}}, "catch_up must be longer than 0"},
		{"fiscal year", []string{"fiscal_year_start_month: 4", "fiscal_year_start_month: 13"}, []at{{policy.RuleFiscalYear, 6}}, "not a month"},
		{"target kind", []string{"    kind: fs", "    kind: tape"}, []at{{policy.RuleTargetKind, 9}}, `kind "tape"`},
		{"target unknown", []string{"    targets: [disk, s3a, s3b]", "    targets: [disk, s3a, nas]"}, []at{{policy.RuleTarget, 24}}, `target "nas" is not defined`},
		{"target twice", []string{"    targets: [disk, s3a, s3b]", "    targets: [disk, s3a, s3a, s3b]"}, []at{{policy.RuleTarget, 24}}, "listed twice"},
		{"replicas", []string{"    replicas: 2", "    replicas: 4"}, []at{{policy.RuleReplicas, 25}}, "between 1 and the number of targets (3)"},
		{"cron syntax", []string{`        cron: "0 2 * * *"`, `        cron: "0 25 * * *"`}, []at{{policy.RuleCron, 19}}, "end of range (25) above maximum (23)"},
		{"cron every", []string{`        cron: "0 2 * * *"`, `        cron: "@every 1h"`}, []at{{policy.RuleCron, 19}}, "replicas would disagree"},
		{"cron tz", []string{`        cron: "0 2 * * *"`, `        cron: "CRON_TZ=Europe/Berlin 0 2 * * *"`}, []at{{policy.RuleCron, 19}}, "timezone key"},
		{"cron never", []string{`        cron: "0 2 * * *"`, `        cron: "0 0 30 2 *"`}, []at{{policy.RuleCron, 19}}, "never due"},
		{"method", []string{"        method: incremental", "        method: differential"}, []at{{policy.RuleMethod, 20}}, `method "differential"`},
		{"full_every on full", []string{"        method: incremental", "        method: full\n        full_every: 7"}, []at{{policy.RuleFullEvery, 21}}, "already full"},
		{"full_every 1", []string{"        method: incremental", "        method: incremental\n        full_every: 1"}, []at{{policy.RuleFullEvery, 21}}, "at least 2"},
		{"full_every without effective", []string{"effective: 2027-01-01", "# none", "        method: incremental", "        method: incremental\n        full_every: 7"}, []at{{policy.RuleFullEvery, 21}}, "set effective"},
		{"retention negative", []string{"      daily: 30", "      daily: -1"}, []at{{policy.RuleRetention, 23}}, "must not be negative"},
		{"retention missing", []string{"    retention:", "    # no retention", "      min: 30d", "", "      daily: 30", ""}, []at{{policy.RuleRequired, 16}}, "retention is required"},
		{"retention.min missing", []string{"      min: 30d", "      keep_last: 3"}, []at{{policy.RuleRetentionMin, 21}}, "retention: min (no backup younger"},
		{"retention.min shorter than RPO", []string{"      min: 30d", "      min: 1d"}, []at{{policy.RuleRetentionMin, 22}}, `class "critical": retention.min 1d is shorter than the RPO 48h`},
		{"rpo missing", []string{"    rpo: 48h", "    # no rpo"}, []at{{policy.RuleRPO, 16}}, "rpo (the most data"},
		{"rpo gap", []string{"    rpo: 48h", "    rpo: 12h"}, []at{{policy.RuleRPO, 30}}, "leave 1d between backups (2027-01-01T02:00:00Z to 2027-01-02T02:00:00Z), more than the RPO 12h"},
		{"rto", []string{"    rto: 48h", "    rto: 0"}, []at{{policy.RuleRTO, 31}}, "rto must be longer than 0"},
		{"immutability mode", []string{"      mode: compliance", "      mode: worm"}, []at{{policy.RuleImmutability, 27}}, `mode "worm"`},
		{"immutability days", []string{"      retain_days: 30", "      retain_days: 0"}, []at{{policy.RuleImmutability, 28}}, "retain_days of at least 1"},
		{"immutability none with days", []string{"      mode: compliance", "      mode: none"}, []at{{policy.RuleImmutability, 28}}, "needs mode governance or compliance"},
		{"immutability needs lockable target", []string{"    targets: [disk, s3a, s3b]", "    targets: [disk]", "    replicas: 2", "    override_321: lab data"}, []at{{policy.RuleImmutability, 27}}, "no target of the class can lock objects"},
		{"3-2-1", []string{"    targets: [disk, s3a, s3b]", "    targets: [s3a, s3b]"}, []at{{policy.Rule321, 24}}, "breaks 3-2-1: 2 copies (needs 3), 1 kind of storage (needs 2); add targets"},
		{"3-2-1 off-site", []string{"    offsite: true", ""}, []at{{policy.Rule321, 24}}, "no off-site target"},
		{"override without reason", []string{"    targets: [disk, s3a, s3b]", "    targets: [s3a, s3b]", "    rto: 48h", `    rto: 48h` + "\n" + `    override_321: ""`}, []at{{policy.RuleOverride, 32}}, "needs the reason"},
		{"deadline kind", []string{"    kind: end_of_month", "    kind: end_of_quarter"}, []at{{policy.RuleDeadline, 34}}, `kind "end_of_quarter"`},
		{"deadline time", []string{`    time: "23:00"`, `    time: "25:00"`}, []at{{policy.RuleDeadline, 35}}, "not a time of day"},
		{"deadline date missing", []string{"    date: 2027-05-25T09:00:00Z", ""}, []at{{policy.RuleDeadline, 36}}, "needs date"},
		{"deadline date invalid", []string{"    date: 2027-05-25T09:00:00Z", "    date: tomorrow"}, []at{{policy.RuleDate, 38}}, "neither a date"},
		{"deadline date on month kind", []string{`    time: "23:00"`, `    time: "23:00"` + "\n    date: 2027-01-31"}, []at{{policy.RuleDeadline, 36}}, "date is only for kind date"},
		{"deadline time on date kind", []string{"    classes: [critical]", "    classes: [critical]\n    time: \"10:00\""}, []at{{policy.RuleDeadline, 40}}, "time is for end_of_month"},
		{"deadline class", []string{"    classes: [critical]", "    classes: [gold]"}, []at{{policy.RuleDeadline, 39}}, `class "gold" is not defined`},
		{"deadline classes empty", []string{"    classes: [critical]", "    classes: []"}, []at{{policy.RuleDeadline, 39}}, "classes is empty"},
		{"duplicate deadline", []string{"  - name: gdpr_review", "  - name: end_of_month"}, []at{{policy.RuleDuplicateName, 36}}, "already defined on line 33"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := edit(t, base, tc.edits...)
			p, err := policy.Parse("policy.yaml", []byte(src))
			if err == nil {
				t.Fatalf("no error; policy %+v", p)
			}
			if p != nil {
				t.Fatal("a policy came back with errors")
			}
			got := policy.Errors(err)
			var gotAt []at
			for _, e := range got {
				gotAt = append(gotAt, at{e.Rule, e.Line})
				if e.File != "policy.yaml" {
					t.Errorf("file %q", e.File)
				}
			}
			if !slices.Equal(gotAt, tc.want) {
				t.Fatalf("errors %v, want %v:\n%v", gotAt, tc.want, err)
			}
			if !strings.Contains(got[0].Msg, tc.msg) {
				t.Fatalf("message %q does not contain %q", got[0].Msg, tc.msg)
			}
			var pe *policy.Error
			if !errors.As(err, &pe) || pe.Line != tc.want[0].line {
				t.Fatalf("errors.As: %v", pe)
			}
		})
	}
}

// TestWarnings checks the deviations a policy may accept with a reason.
func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits []string
		want  []at
		msg   string
	}{
		{"3-2-1 overridden", []string{"    targets: [disk, s3a, s3b]", "    targets: [s3a, s3b]", "    rto: 48h", "    rto: 48h\n    override_321: lab data, recreated from source"}, []at{{policy.Rule321, 32}}, "breaks 3-2-1 (2 copies (needs 3), 1 kind of storage (needs 2)); accepted by override_321: lab data"},
		{"rpo overridden", []string{"    rpo: 48h", "    rpo: 12h", "    rto: 48h", "    rto: 48h\n    override_rpo: batch source updates once a day"}, []at{{policy.RuleRPO, 32}}, "more than the RPO 12h; accepted by override_rpo: batch source"},
		{"override not needed", []string{"    rto: 48h", "    rto: 48h\n    override_321: just in case"}, []at{{policy.RuleOverride, 32}}, "meets 3-2-1; remove it"},
		{"rpo override not needed", []string{"    rto: 48h", "    rto: 48h\n    override_rpo: just in case"}, []at{{policy.RuleOverride, 32}}, "meet the RPO; remove it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse("policy.yaml", []byte(edit(t, base, tc.edits...)))
			if err != nil {
				t.Fatal(err)
			}
			var got []at
			for _, w := range p.Warnings {
				got = append(got, at{w.Rule, w.Line})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("warnings %v, want %v: %v", got, tc.want, p.Warnings)
			}
			if !strings.Contains(p.Warnings[0].Msg, tc.msg) {
				t.Fatalf("warning %q does not contain %q", p.Warnings[0].Msg, tc.msg)
			}
		})
	}
}

func TestAllErrorsCollected(t *testing.T) {
	src := edit(t, base,
		"tenant: acme", "tenant: ''",
		"    kind: fs", "    kind: tape",
		"      min: 30d", "      min: 1d",
		"    rto: 48h", "    rto: soon",
	)
	_, err := policy.Parse("policy.yaml", []byte(src))
	got := policy.Errors(err)
	want := []at{{policy.RuleRequired, 2}, {policy.RuleTargetKind, 9}, {policy.RuleRetentionMin, 22}, {policy.RuleDuration, 31}}
	var gotAt []at
	for _, e := range got {
		gotAt = append(gotAt, at{e.Rule, e.Line})
	}
	if !slices.Equal(gotAt, want) {
		t.Fatalf("got %v, want %v\n%v", gotAt, want, err)
	}
	first := strings.Split(err.Error(), "\n")[0]
	if first != `policy.yaml:2:9: tenant must not be empty (rule required)` {
		t.Fatalf("first line: %s", first)
	}
	if got[2].Error() != `policy.yaml:22:7: class "critical": retention.min 1d is shorter than the RPO 48h: the newest backup could expire before the next one is taken (rule retention-min)` {
		t.Fatalf("retention error: %s", got[2])
	}
}

func TestEmptyAndMultiDocument(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want at
	}{
		{"", at{policy.RuleRequired, 1}},
		{"# only a comment\n", at{policy.RuleRequired, 1}},
		{base + "---\nversion: 1\n", at{policy.RuleSyntax, 40}},
		{"- a\n- b\n", at{policy.RuleType, 1}},
	} {
		_, err := policy.Parse("p.yaml", []byte(tc.src))
		got := policy.Errors(err)
		if len(got) == 0 || (at{got[0].Rule, got[0].Line}) != tc.want {
			t.Errorf("%q: got %v, want %v", tc.src, err, tc.want)
		}
	}
}

func TestAliases(t *testing.T) {
	src := edit(t, base, "    retention:", "    retention: &keep", "    rto: 48h", "    rto: 48h\n  copy:\n    schedules: [{name: d, cron: \"0 3 * * *\"}]\n    retention: *keep\n    targets: [disk, s3a, s3b]\n    rpo: 48h\n    rto: 1h")
	p, err := policy.Parse("policy.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Class("copy"); c == nil || c.Retention.Daily != 30 || c.Replicas != 3 {
		t.Fatalf("copy: %+v", c)
	}
	if got := p.Deadlines[0].Classes; !slices.Equal(got, []string{"critical", "copy"}) {
		t.Fatalf("deadline classes %v", got)
	}
}

func TestDefault(t *testing.T) {
	p := policy.Default()
	type want struct {
		rpo, rto, min time.Duration
		methods       []string
	}
	day := 24 * time.Hour
	// Seed 002: 3.1 frequency, 3.2 retention, 3.3 methods, 4.1 RPO, 4.2 RTO.
	for name, w := range map[string]want{
		"critical":      {48 * time.Hour, 48 * time.Hour, 30 * day, []string{"incremental", "full"}},
		"important":     {7 * day, 72 * time.Hour, 90 * day, []string{"incremental", "full"}},
		"non_essential": {30 * day, 7 * day, 180 * day, []string{"full"}},
	} {
		c := p.Class(name)
		if c == nil {
			t.Fatalf("no class %s", name)
		}
		if c.RPO != w.rpo || c.RTO != w.rto || c.Retention.Min != w.min {
			t.Errorf("%s: rpo %v rto %v min %v", name, c.RPO, c.RTO, c.Retention.Min)
		}
		var methods []string
		for _, s := range c.Schedules {
			methods = append(methods, s.Method)
		}
		if !slices.Equal(methods, w.methods) {
			t.Errorf("%s: methods %v", name, methods)
		}
		if len(c.Targets) < 3 {
			t.Errorf("%s: targets %v", name, c.Targets)
		}
	}
	if !p.Effective.Equal(time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("effective %v", p.Effective)
	}
	// The one deviation the seed forces is visible.
	if len(p.Warnings) != 1 || p.Warnings[0].Rule != policy.RuleRPO || !strings.Contains(p.Warnings[0].Msg, "non_essential") {
		t.Errorf("warnings %v", p.Warnings)
	}
	if !slices.Equal(p.ClassNames(), []string{"critical", "important", "non_essential"}) {
		t.Errorf("classes %v", p.ClassNames())
	}
	if string(policy.DefaultYAML())[:1] != "#" {
		t.Error("DefaultYAML")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "custos-policy.yaml")
	if err := os.WriteFile(path, []byte(edit(t, base, "    rto: 48h", "    rto: x")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := policy.Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), "custos-policy.yaml:31:10: ") {
		t.Fatalf("err %v", err)
	}
	if _, err := policy.Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

// The example policy shipped in deploy/ must pass.
func TestExampleFile(t *testing.T) {
	p, err := policy.Load(filepath.Join("..", "..", "deploy", "policy.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || p.Warnings[0].Rule != policy.Rule321 {
		t.Fatalf("warnings: %v", p.Warnings)
	}
}
