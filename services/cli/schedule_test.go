package main

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

func TestSchedulePreviewDefault(t *testing.T) {
	out, err := execute(t, "schedule", "preview", "--from", "2027-01-01", "--to", "2027-01-03")
	if err != nil {
		t.Fatal(err)
	}
	want := `TIME                  KIND  CLASS          NAME          METHOD       ID
2027-01-01T02:00:00Z  tick  critical       monthly-full  full         tick.default.critical.monthly-full.1798768800
2027-01-01T03:00:00Z  tick  important      monthly-full  full         tick.default.important.monthly-full.1798772400
2027-01-01T04:00:00Z  tick  non_essential  monthly       full         tick.default.non_essential.monthly.1798776000
2027-01-02T02:00:00Z  tick  critical       daily         incremental  tick.default.critical.daily.1798855200
`
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
	// A month: 31 daily ticks, 5 weekly (Sundays) or monthly, 1 monthly, 3 end of month.
	out, err = execute(t, "schedule", "preview", "--from", "2027-01-01", "--to", "2027-02-01")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")[1:]
	if len(lines) != 31+6+1+3 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "2027-01-31T23:00:00Z  deadline  non_essential  end_of_month  -") {
		t.Fatalf("last line %q", last)
	}
}

func TestSchedulePreviewPolicyFile(t *testing.T) {
	// The week Berlin moves to summer time: the nightly tick at 01:30 keeps its wall time, the
	// end of March is the fiscal year's end too, and the marketing class runs on New York time.
	out, err := execute(t, "schedule", "preview", "--policy", examplePolicy, "--from", "2027-03-27", "--to", "2027-04-01")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"2027-03-27T01:30:00+01:00  tick      critical   nightly             incremental",
		"2027-03-28T01:30:00+01:00  tick      critical   nightly             incremental",
		"2027-03-28T03:00:00-04:00  tick      marketing  weekly              incremental  tick.acme.marketing.weekly.1806217200",
		"2027-03-29T01:30:00+02:00  tick      critical   nightly             incremental",
		"2027-03-31T22:00:00+02:00  deadline  critical   end_of_month        -",
		"2027-03-31T23:00:00+02:00  deadline  critical   end_of_fiscal_year  -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
	out, err = execute(t, "schedule", "preview", "--policy", examplePolicy, "--from", "2027-03-29T00:00:00Z", "--to", "2027-03-30T00:00:00Z", "--utc")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "2027-03-29T23:30:00Z tick critical nightly incremental tick.acme.critical.nightly.1806363000" {
		t.Fatalf("--utc output:\n%s", out)
	}
	// Every 7th nightly tick from the effective date (2027-01-01) is full: 26 March, 2 April.
	out, err = execute(t, "schedule", "preview", "--policy", examplePolicy, "--from", "2027-03-26", "--to", "2027-04-03")
	if err != nil {
		t.Fatal(err)
	}
	var full []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == "full" {
			full = append(full, f[0])
		}
	}
	if strings.Join(full, " ") != "2027-03-26T01:30:00+01:00 2027-04-01T01:00:00+02:00 2027-04-02T01:30:00+02:00" {
		t.Fatalf("full backups %v in:\n%s", full, out)
	}
}

func TestSchedulePreviewErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--from", "01/01/2027"},
		{"--from", "2027-01-02", "--to", "2027-01-01"},
		{"--policy", "missing.yaml"},
		{"extra"},
	} {
		if out, err := execute(t, append([]string{"schedule", "preview"}, args...)...); err == nil {
			t.Errorf("%v: no error:\n%s", args, out)
		}
	}
}

func TestPreviewWindowDefaults(t *testing.T) {
	p := policy.Default()
	now := time.Date(2027, 6, 15, 13, 45, 0, 0, time.UTC)
	from, to, err := previewWindow(p, "", "", now)
	if err != nil || !from.Equal(time.Date(2027, 6, 15, 0, 0, 0, 0, time.UTC)) || !to.Equal(time.Date(2027, 6, 22, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("%v %v %v", from, to, err)
	}
}
