// Package drill simulates a quarter of restore drills end to end: the scheduler service, driven
// by a fake clock from 1 January to 1 April, publishes the drill triggers the policy's drill
// schedules make due; a real worker process runs each drill against three fs targets; the audit
// log then holds every drill's result per target, passed, and failed for the one target whose
// copy of a pack was corrupted, which the worker alerts on.
package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/schedule/scheduletest"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// schedulerPolicy is what the scheduler runs. Backups come from events in this test, so the
// classes' schedules fall outside the quarter (1 July) and there are no deadlines: the only
// events due are drills. critical is drilled monthly, the others quarterly (the default, seed
// 002 3.4). The worker reads its RTOs and samples from its own policy, the default one.
const schedulerPolicy = `version: 1
tenant: shop
targets:
  - {name: t0, kind: fs}
  - {name: t1, kind: s3}
  - {name: t2, kind: s3, offsite: true}
classes:
  critical:
    schedules: [{name: yearly, cron: "0 2 1 7 *"}]
    retention: {min: 400d, yearly: 2}
    targets: [t0, t1, t2]
    rpo: 400d
    rto: 48h
    drill: {cron: "0 6 15 * *"}
  important:
    schedules: [{name: yearly, cron: "0 2 1 7 *"}]
    retention: {min: 400d, yearly: 2}
    targets: [t0, t1, t2]
    rpo: 400d
    rto: 72h
  non_essential:
    schedules: [{name: yearly, cron: "0 2 1 7 *"}]
    retention: {min: 400d, yearly: 2}
    targets: [t0, t1, t2]
    rpo: 400d
    rto: 7d
`

func TestQuarterOfDrills(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stack, err := harness.Start(t.TempDir(), harness.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	w, err := stack.StartWorker(bin, "w1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()

	// Backups: 20 events per class.
	prod, err := producer.New(stack.JS, "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	classes := []string{"critical", "important", "non_essential"}
	for i := range 60 {
		class := classes[i%3]
		msg := &custosv1.PostTransaction{
			Meta: &custosv1.Meta{EventId: fmt.Sprint("ev-", i), Time: timestamppb.Now(), Tenant: "shop",
				CustomerId: fmt.Sprint("cust-", i%7), DataClass: class},
			Record: &custosv1.Record{Key: fmt.Sprint("rec-", i), Source: &custosv1.Record_Inline{
				Inline: []byte(strings.Repeat(fmt.Sprintf("record %d of %s;", i, class), 40))}},
		}
		if _, err := prod.PublishPostTransaction(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := stack.WaitSettled(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// Bit rot in t2's copy of a pack of class important: the drills of important from t2 must
	// fail; every other drill must pass.
	index, err := catalog.Open(ctx, stack.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	packs, err := index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rotten string
	for _, p := range packs {
		if p.Class == "important" {
			rotten = p.Pack
			break
		}
	}
	if rotten == "" {
		t.Fatal("no pack of class important")
	}
	flip(t, filepath.Join(stack.Targets[2], filepath.FromSlash(repository.PackName(rotten))))

	// The quarter, on the scheduler's fake clock. The real clock is later than the quarter, so
	// the triggers carry times in the past, as a catch-up would.
	pol, err := policy.Parse("policy.yaml", []byte(schedulerPolicy))
	if err != nil {
		t.Fatal(err)
	}
	start, end := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	clock := scheduletest.NewClock(start)
	svc, err := schedule.New(stack.JS, schedule.Config{Policy: pol, Replica: "s1", Clock: clock,
		Logger: slog.New(slog.DiscardHandler), MaxSleep: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		clock.WaitIdle(t, 1)
		next := clock.Next()
		if next.IsZero() || !next.Before(end) {
			break
		}
		clock.Set(next)
	}
	if err := svc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	due := schedule.Compute(pol, start, end)
	if len(due) != 5 { // critical on 15 January, February and March; the others on 15 February
		t.Fatalf("%d events due in the quarter: %+v", len(due), due)
	}
	for _, e := range due {
		if e.Kind != schedule.KindDrill {
			t.Fatalf("due: %+v", e)
		}
	}
	if st := svc.Stats(); st.Fired != 5 {
		t.Fatalf("scheduler: %+v", st)
	}
	if err := stack.WaitSettled(ctx, 120*time.Second); err != nil {
		t.Fatal(err)
	}

	// One audit entry per drill and target.
	entries, err := audit.List(ctx, stack.JS, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]audit.Entry{}
	for _, e := range entries {
		if e.Kind == audit.KindDrill {
			got[e.EventID] = e
		}
	}
	var want []string
	for _, e := range due {
		for i := range 3 {
			want = append(want, fmt.Sprintf("%s/fs:t%d", e.ID, i))
		}
	}
	if len(got) != len(want) {
		var ids []string
		for id := range got {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		t.Fatalf("%d drill entries, want %d: %v", len(got), len(want), ids)
	}
	failed := 0
	for _, id := range want {
		e, ok := got[id]
		if !ok {
			t.Fatalf("no drill entry %s", id)
		}
		bad := strings.HasPrefix(id, "drill.shop.important.") && strings.HasSuffix(id, "/fs:t2")
		switch {
		case bad && (e.Outcome != audit.OutcomeFailed || e.Figures.ChecksumFailures == 0 || !strings.Contains(e.Reason, "failed their checksum")):
			t.Fatalf("corrupt target's drill: %+v %+v", e, e.Figures)
		case bad:
			failed++
		case e.Outcome != audit.OutcomePassed || e.Figures.Items != 20 || e.Figures.ChecksumFailures != 0 || e.Figures.RTOSeconds == 0:
			t.Fatalf("drill %s: %+v %+v", id, e, e.Figures)
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed drills", failed)
	}
	logs, err := os.ReadFile(w.Log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logs), "ALERT: restore drill failed"); n != 1 {
		t.Fatalf("%d drill alerts in the worker's log:\n%s", n, logs)
	}
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkReport(t, stack)
}

// checkReport signs a checkpoint of the log and reports on the calendar quarter the drills were
// logged in (the worker logs them at its own, real time): every control is there, the JSON
// follows docs/report.schema.json, testing fails for the class whose drill failed with no later
// pass and passes for the others, and the HTML shows the failing control as failing in Chromium.
func checkReport(t *testing.T, stack *harness.Stack) {
	t.Helper()
	if out, err := stack.CLI("audit", "checkpoint"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	now := time.Now().UTC()
	qStart := time.Date(now.Year(), time.Month((int(now.Month())-1)/3*3+1), 1, 0, 0, 0, 0, time.UTC)
	qEnd := qStart.AddDate(0, 3, -1)
	period := []string{"--from", qStart.Format(time.DateOnly), "--to", qEnd.Format(time.DateOnly)}
	jsonPath := filepath.Join(stack.Dir, "report.json")
	out, err := stack.CLI(append([]string{"report", "--format", "json", "--out", jsonPath}, period...)...)
	if err != nil || !strings.Contains(out, "controls:") {
		t.Fatalf("report: %v\n%s", err, out)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	validateReport(t, b)
	var rep struct {
		Controls []struct {
			ID      string `json:"id"`
			Status  string `json:"status"`
			Classes []struct {
				Class    string `json:"class"`
				Status   string `json:"status"`
				Reason   string `json:"reason"`
				Evidence struct {
					Drills []json.RawMessage `json:"drills"`
				} `json:"evidence"`
			} `json:"classes"`
		} `json:"controls"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Controls) != 14 {
		t.Errorf("%d controls, want the 14 of seeds 002 and 003", len(rep.Controls))
	}
	sawTesting := false
	for _, c := range rep.Controls {
		if c.Status == "" {
			t.Errorf("control %s has no status", c.ID)
		}
		if c.ID != "seed002-3.4-testing" {
			continue
		}
		sawTesting = true
		for _, cl := range c.Classes {
			want := "pass"
			if cl.Class == "important" {
				want = "fail"
			}
			if cl.Status != want || len(cl.Evidence.Drills) == 0 {
				t.Errorf("testing of %s: %s (%s) with %d drills, want %s with the drills as evidence",
					cl.Class, cl.Status, cl.Reason, len(cl.Evidence.Drills), want)
			}
		}
		if c.Status != "fail" {
			t.Errorf("testing control: %s, want fail", c.Status)
		}
	}
	if !sawTesting {
		t.Fatal("the report has no testing control")
	}

	htmlPath := filepath.Join(stack.Dir, "report.html")
	if out, err := stack.CLI(append([]string{"report", "--format", "html", "--out", htmlPath}, period...)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dom := harness.ChromiumDOM(t, "file://"+htmlPath)
	if !strings.Contains(dom, "seed002-3.4-testing") || !strings.Contains(dom, `class="fail"`) || !strings.Contains(dom, "FAIL") {
		t.Errorf("the rendered report does not show the failing testing control:\n%.2000s", dom)
	}
}

// validateReport checks a report against the committed schema, docs/report.schema.json.
func validateReport(t *testing.T, b []byte) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(filepath.Join(root, "docs", "report.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("the report does not follow docs/report.schema.json: %v", err)
	}
}

// flip flips one byte in the middle of a file, as bit rot would.
func flip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
