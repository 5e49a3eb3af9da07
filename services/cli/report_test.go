package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/report"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/schedule"
)

// appendQuarter appends Q3 2026 under the default policy (the stack's configuration names no
// policy file): every scheduled backup 10 minutes after its due time, except the important
// class's in August (a gap), a passed drill of each class, and the policy recorded.
func (s *stack) appendQuarter(t *testing.T) {
	t.Helper()
	log, err := audit.Open(t.Context(), s.parts.JS)
	if err != nil {
		t.Fatal(err)
	}
	from, to := time.Date(2026, 6, 25, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC)
	es := []audit.Entry{{Time: from, Kind: audit.KindPolicyChange, Outcome: "applied",
		Policy: report.PolicyDigest(policy.DefaultYAML()), RequestedBy: "ops@example.com"}}
	all := []string{"primary", "secondary", "offsite"}
	for _, ev := range schedule.Compute(policy.Default(), from, to) {
		if ev.Kind != schedule.KindTick || (ev.Class == "important" && ev.Due.Month() == time.August) {
			continue
		}
		es = append(es, audit.Entry{Time: ev.Due.Add(10 * time.Minute), Kind: audit.KindBackupCommit, Class: ev.Class,
			EventID: ev.ID, Outcome: audit.OutcomeBackedUp, Snapshot: strings.Repeat("ab", 16), Targets: all})
	}
	for _, class := range []string{"critical", "important", "non_essential"} {
		es = append(es, audit.Entry{Time: time.Date(2026, 8, 15, 6, 0, 0, 0, time.UTC), Kind: audit.KindDrill, Class: class,
			Targets: all, Outcome: audit.OutcomePassed, Figures: &audit.Figures{Items: 10, Bytes: 1000, Seconds: 1,
				ClassBytes: 100000, EstimatedSeconds: 100, RTOSeconds: 172800}})
	}
	slicesSortByTime(es)
	for _, e := range es {
		if err := log.Append(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func slicesSortByTime(es []audit.Entry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Time.Before(es[j-1].Time); j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func (s *stack) report(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return s.runCaptured(t, reportCmd(), append([]string{"report", "--from", "2026-07-01", "--to", "2026-09-30"}, args...)...)
}

// custos report judges the quarter from the verified log, in JSON (following the committed
// schema's shape) or HTML, from the stream or one target; it refuses a log without a checkpoint
// and a log with an edited entry, naming it.
func TestReportCommand(t *testing.T) {
	s := startStack(t)
	s.appendQuarter(t)
	if out, errOut, code := s.report(t); code != 2 || !strings.Contains(errOut, "checkpoints=0 head=0 OK") {
		t.Fatalf("report before any checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := s.audit(t, "checkpoint"); code != 0 {
		t.Fatalf("checkpoint: exit %d\n%s%s", code, out, errOut)
	}

	file := filepath.Join(s.dir, "q3.json")
	out, errOut, code := s.report(t, "--format", "json", "--out", file)
	summary := regexp.MustCompile(`(?m)^controls: (\d+) pass, (\d+) fail$`).FindStringSubmatch(errOut)
	if code != 0 || summary == nil || summary[2] == "0" || !strings.Contains(errOut, "audit verify entries=") {
		t.Fatalf("report: exit %d, want 0 with a summary naming failures\n%s%s", code, out, errOut)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, c := range r.Controls {
		status[c.ID] = c.Status
		for _, cl := range c.Classes {
			status[c.ID+"/"+cl.Class] = cl.Status
		}
	}
	for id, want := range map[string]string{
		"seed002-3.1-frequency/critical": "pass", "seed002-3.1-frequency/important": "fail",
		"seed002-4.1-rpo/important": "fail", "seed002-3.4-testing": "pass", "seed002-4.2-rto": "pass",
		"seed002-6-audits": "pass", "seed003-5-documentation": "pass", "seed002-3.3-encryption": "pass",
	} {
		if status[id] != want {
			t.Errorf("%s: %q, want %s", id, status[id], want)
		}
	}
	if r.Period.From != "2026-07-01" || r.Period.To != "2026-09-30" || !r.Period.End.Equal(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)) ||
		r.Checkpoint.Size != r.Log.Entries || !strings.Contains(r.Log.VerifyCommand, "custos audit verify --config ") {
		t.Errorf("period %+v, checkpoint size %d of %d entries, verify %q", r.Period, r.Checkpoint.Size, r.Log.Entries, r.Log.VerifyCommand)
	}
	if got := summary[1] + "/" + summary[2]; got != strconv.Itoa(r.Summary.Pass)+"/"+strconv.Itoa(r.Summary.Fail) {
		t.Errorf("summary line %s, report %+v", got, r.Summary)
	}

	// HTML from one target's export, on stdout.
	out, errOut, code = s.report(t, "--format", "html", "--from-target", "b")
	if code != 0 || !strings.Contains(out, `<table id="controls">`) || !strings.Contains(out, `<tr class="control fail" id="seed002-3.1-frequency"`) {
		t.Fatalf("html report from target b: exit %d\n%.1500s%s", code, out, errOut)
	}

	// Edit entry 3 in target a's export: the report from a is refused, naming the entry.
	p := filepath.Join(s.dir, "a", filepath.FromSlash(repository.AuditEntriesName(0, r.Log.Entries-1)))
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(data, []byte("\n"))
	lines[3] = bytes.Replace(lines[3], []byte(`"backed_up"`), []byte(`"backed_uq"`), 1)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Join(lines, []byte("\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = s.report(t, "--from-target", "a", "--out", filepath.Join(s.dir, "tampered.json"))
	if code != 2 || !strings.Contains(errOut, "FAILED: entry 3: changed") {
		t.Fatalf("report of an edited log: exit %d, want 2 naming entry 3\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "tampered.json")); !os.IsNotExist(err) {
		t.Errorf("a report was written for a log that does not verify")
	}
}

// The period is read as whole days in the policy's zone; bad dates get a clear error.
func TestReportPeriod(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	from, to, err := reportPeriod("2026-10-01", "2026-12-31", berlin)
	if err != nil || !from.Equal(time.Date(2026, 9, 30, 22, 0, 0, 0, time.UTC)) || !to.Equal(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)) {
		t.Errorf("period %s to %s, %v", from, to, err)
	}
	for _, c := range [][2]string{{"2026-13-01", "2026-12-31"}, {"2026-10-01", "31/12/2026"}, {"2026-10-02", "2026-10-01"}} {
		if _, _, err := reportPeriod(c[0], c[1], time.UTC); err == nil {
			t.Errorf("%v accepted", c)
		}
	}
}
