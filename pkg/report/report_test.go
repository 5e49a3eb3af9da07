package report_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/report"
	"github.com/custos-dev/custos/pkg/schedule"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

// quarter is the reporting period of the tests: Q4 2026, [1 October, 1 January) UTC.
var (
	q4From = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	q4To   = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	made   = time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC) // the checkpoint
	now    = time.Date(2027, 1, 2, 1, 0, 0, 0, time.UTC) // the report
)

// scenario is a quarter's audit log in a real JetStream stream, and a checkpoint of it.
type scenario struct {
	entries    [][]byte
	checkpoint []byte
	vkey       string
	digest     string
	pol        *policy.Policy
}

func pack(n int) string { return fmt.Sprintf("%032x", n+1) }

// quarterLog appends to a real audit stream the log of Q4 2026 under the default policy:
//
//   - every class backed up 10 minutes after each scheduled due time, from September to
//     2 January, except the important class's weekly backups of 8 and 15 November (a gap);
//   - a dead-lettered manual request of the critical class, answered by the next backup;
//   - drills on 15 November: critical passed; important failed (checksum) and never passed
//     again; non_essential passed but estimates a full restore slower than its 7-day RTO;
//   - a documented restore, a key rotation, a retention expiry of a 50-day-old pack, an
//     erasure, and the policy recorded by a policy_change entry before the quarter.
func quarterLog(t *testing.T) scenario {
	t.Helper()
	ns := natstest.Start(t)
	ctx := t.Context()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	signer, err := audit.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := audit.VerifierKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, ns.JS, audit.WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	digest := report.PolicyDigest(policy.DefaultYAML())
	var es []audit.Entry
	add := func(e audit.Entry) { es = append(es, e) }
	all := []string{"primary", "secondary", "offsite"}

	add(audit.Entry{Time: time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), Kind: audit.KindPolicyChange, Outcome: "applied",
		Policy: digest, RequestedBy: "ops@example.com", Reason: "policy of record"})
	gapFrom, gapTo := time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC)
	n := 0
	var expiredPack string
	for _, ev := range schedule.Compute(pol, time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC), made) {
		if ev.Kind != schedule.KindTick || (ev.Class == "important" && !ev.Due.Before(gapFrom) && ev.Due.Before(gapTo)) {
			continue
		}
		n++
		if ev.Class == "critical" && ev.Due.Equal(time.Date(2026, 10, 1, 2, 0, 0, 0, time.UTC)) {
			expiredPack = pack(n)
		}
		add(audit.Entry{Time: ev.Due.Add(10 * time.Minute), Kind: audit.KindBackupCommit, Class: ev.Class, EventID: ev.ID,
			Outcome: audit.OutcomeBackedUp, Packs: []string{pack(n)}, Targets: all, Count: 40, Bytes: 1 << 20})
	}
	add(audit.Entry{Time: time.Date(2026, 10, 20, 9, 0, 0, 0, time.UTC), Kind: audit.KindManual, EventID: "m-1", Class: "critical",
		RequestedBy: "ops@example.com", Reason: "before migration", Outcome: audit.OutcomeDeadLettered})
	drill := func(class, outcome, reason string, est, rto float64, fails int64) {
		add(audit.Entry{Time: time.Date(2026, 11, 15, 6, 0, 0, 0, time.UTC), Kind: audit.KindDrill, Class: class, Targets: all,
			Outcome: outcome, Reason: reason, Figures: &audit.Figures{Items: 100, Bytes: 1 << 20, Seconds: 2.5, ChecksumFailures: fails,
				ClassBytes: 1 << 30, EstimatedSeconds: est, RTOSeconds: rto}})
	}
	drill("critical", audit.OutcomePassed, "", 3600, 172800, 0)
	drill("important", audit.OutcomeFailed, "1 item failed its checksum", 7200, 259200, 1)
	drill("non_essential", audit.OutcomePassed, "", 700000, 604800, 0)
	add(audit.Entry{Time: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), Kind: audit.KindKeyRotation, Key: "local-00000002", Outcome: "rotated"})
	add(audit.Entry{Time: time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC), Kind: audit.KindRetentionExpiry, Class: "critical",
		Packs: []string{expiredPack}, Count: 1, Outcome: "expired"})
	add(audit.Entry{Time: time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC), Kind: audit.KindRestore, Class: "critical",
		Customer: "p0123456789abcdef0123456789abcdef", RequestedBy: "alice@ops", Reason: "ticket 42", Outcome: "restored",
		Targets: []string{"offsite"}, Figures: &audit.Figures{Items: 12, Bytes: 4096, Seconds: 0.8}})
	add(audit.Entry{Time: time.Date(2026, 12, 10, 8, 0, 0, 0, time.UTC), Kind: audit.KindErasure,
		Customer: "pfedcba9876543210fedcba9876543210", Certificate: "cert-7", Outcome: "erased"})
	// Append in time order, as workers would.
	slicesSortByTime(es)
	for _, e := range es {
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := log.Checkpoint(ctx, made)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	return scenario{entries: entries, checkpoint: signed, vkey: vkey, digest: digest, pol: pol}
}

func slicesSortByTime(es []audit.Entry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Time.Before(es[j-1].Time); j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func (s scenario) input() report.Input {
	return report.Input{Policy: s.pol, PolicyFile: "default.yaml", PolicyDigest: s.digest, Entries: s.entries,
		Checkpoint: s.checkpoint, VerifierKey: s.vkey, From: q4From, To: q4To, Now: now,
		Links: []report.Link{{Name: "nats", URL: "nats://127.0.0.1:4222"}, {Name: "target offsite", URL: ""}}}
}

func control(t *testing.T, r *report.Report, id string) report.Control {
	t.Helper()
	for _, c := range r.Controls {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no control %s", id)
	return report.Control{}
}

func classStatus(c report.Control, class string) string {
	for _, cr := range c.Classes {
		if cr.Class == class {
			return cr.Status
		}
	}
	return "absent"
}

// The report of the quarter judges every control from the log: the gap fails the important
// class's frequency and RPO, the failed drill its testing and, never acted on, monitoring; the
// slow drill fails non_essential's RTO (and the 31-day month its RPO); the rest passes, each
// with its evidence.
func TestQuarterReport(t *testing.T) {
	s := quarterLog(t)
	r, err := report.Build(s.input())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		status  string
		classes map[string]string
	}{
		"seed002-3.1-frequency":   {report.StatusFail, map[string]string{"critical": "pass", "important": "fail", "non_essential": "pass"}},
		"seed002-3.2-retention":   {report.StatusPass, map[string]string{"critical": "pass", "important": "pass", "non_essential": "pass"}},
		"seed002-3.3-methods":     {report.StatusPass, map[string]string{"critical": "pass", "important": "pass", "non_essential": "pass"}},
		"seed002-3.3-encryption":  {report.StatusPass, nil},
		"seed002-3.4-testing":     {report.StatusFail, map[string]string{"critical": "pass", "important": "fail", "non_essential": "pass"}},
		"seed002-3.5-offsite":     {report.StatusPass, map[string]string{"critical": "pass", "important": "pass", "non_essential": "pass"}},
		"seed002-4.1-rpo":         {report.StatusFail, map[string]string{"critical": "pass", "important": "fail", "non_essential": "fail"}},
		"seed002-4.2-rto":         {report.StatusFail, map[string]string{"critical": "pass", "important": "pass", "non_essential": "fail"}},
		"seed002-4.3-restoration": {report.StatusPass, nil},
		"seed002-5-monitoring":    {report.StatusFail, nil},
		"seed002-6-audits":        {report.StatusPass, nil},
		"seed003-1-objectives":    {report.StatusPass, map[string]string{"critical": "pass", "important": "pass", "non_essential": "pass"}},
		"seed003-2-3-2-1":         {report.StatusPass, map[string]string{"critical": "pass", "important": "pass", "non_essential": "pass"}},
		"seed003-5-documentation": {report.StatusPass, nil},
	}
	if len(r.Controls) != len(want) {
		t.Errorf("%d controls, want %d", len(r.Controls), len(want))
	}
	for id, w := range want {
		c := control(t, r, id)
		if c.Status != w.status {
			t.Errorf("%s: %s (%s), want %s", id, c.Status, c.Reason, w.status)
		}
		for class, st := range w.classes {
			if got := classStatus(c, class); got != st {
				t.Errorf("%s %s: %s, want %s", id, class, got, st)
			}
		}
		if c.Reason == "" || len(c.Sources) == 0 || c.Setting == "" {
			t.Errorf("%s: reason, sources and setting are required: %+v", id, c)
		}
	}
	if r.Summary != (report.Summary{Pass: 9, Fail: 5}) {
		t.Errorf("summary %+v", r.Summary)
	}

	// The evidence names what failed, with figures and entry positions.
	freq := control(t, r, "seed002-3.1-frequency")
	imp := freq.Classes[1].Evidence
	if len(imp.Ticks.Missed) != 2 || !imp.Ticks.Missed[0].Equal(time.Date(2026, 11, 8, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("important missed %v, want the ticks of 8 and 15 November", imp.Ticks.Missed)
	}
	crit := freq.Classes[0].Evidence.Backups
	if crit.Total != 92 || len(crit.PerDay) != 92 || len(crit.PerMonth) != 3 || crit.PerMonth[0] != (report.Count{Period: "2026-10", Count: 31}) {
		t.Errorf("critical backups: total %d, %d days, months %v", crit.Total, len(crit.PerDay), crit.PerMonth)
	}
	rpo := control(t, r, "seed002-4.1-rpo")
	if g := rpo.Classes[1].Evidence.Gaps; len(g) != 1 || g[0].Seconds != (21*24*time.Hour).Seconds() || g[0].FromEntry < 0 || g[0].ToEntry < 0 {
		t.Errorf("important gaps %+v, want one of 21 days between two entries", g)
	}
	if !strings.Contains(rpo.Classes[2].Reason, "the policy accepts longer gaps") {
		t.Errorf("non_essential RPO reason does not mention the override: %s", rpo.Classes[2].Reason)
	}
	testing := control(t, r, "seed002-3.4-testing")
	if d := testing.Classes[1].Evidence.Drills; len(d) != 1 || d[0].Figures.ChecksumFailures != 1 || d[0].Outcome != audit.OutcomeFailed {
		t.Errorf("important drills %+v", d)
	}
	if !strings.Contains(testing.Classes[1].Reason, "no passed drill in 2026-Q4") {
		t.Errorf("important testing reason: %s", testing.Classes[1].Reason)
	}
	rto := control(t, r, "seed002-4.2-rto")
	if !strings.Contains(rto.Classes[2].Reason, "more than the RTO 7d") {
		t.Errorf("non_essential RTO reason: %s", rto.Classes[2].Reason)
	}
	mon := control(t, r, "seed002-5-monitoring")
	if f := mon.Evidence.Failures; len(f) != 2 || f[0].ResolvedBy < 0 || f[1].ResolvedBy != -1 || !strings.Contains(mon.Reason, "drill entry") {
		t.Errorf("monitoring failures %+v (%s): want the dead letter resolved and the failed drill not", f, mon.Reason)
	}
	if r.Checkpoint.Size != int64(len(s.entries)) || !strings.HasPrefix(r.Checkpoint.Text, "custos audit log\n") ||
		r.Checkpoint.Signed != string(s.checkpoint) || r.Log.InPeriod == 0 {
		t.Errorf("checkpoint %+v, log %+v", r.Checkpoint, r.Log)
	}

	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	validate(t, b)
}

// validate checks JSON against the committed schema, docs/report.schema.json.
func validate(t *testing.T, b []byte) {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(filepath.Join("..", "..", "docs", "report.schema.json"))
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

// The schema is strict: a report with a member it does not define, or a status it does not
// know, does not validate.
func TestSchemaRejects(t *testing.T) {
	s := quarterLog(t)
	r, err := report.Build(s.input())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := r.JSON()
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(filepath.Join("..", "..", "docs", "report.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, edit := range []func(m map[string]any){
		func(m map[string]any) { m["controls"].([]any)[0].(map[string]any)["status"] = "ok" },
		func(m map[string]any) { m["extra"] = 1 },
		func(m map[string]any) { delete(m["checkpoint"].(map[string]any), "tree_hash") },
	} {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		if err := sch.Validate(m); err == nil {
			t.Errorf("an edited report validated")
		}
	}
}

// Build refuses entries the checkpoint does not sign, naming the first bad entry, and a
// checkpoint of another key.
func TestRefusesTamperedLog(t *testing.T) {
	s := quarterLog(t)
	in := s.input()
	in.Entries = append([][]byte(nil), s.entries...)
	in.Entries[5] = bytes.Replace(in.Entries[5], []byte(`"backed_up"`), []byte(`"backed_uP"`), 1)
	_, err := report.Build(in)
	if !errors.Is(err, report.ErrUnverified) || !errors.Is(err, audit.ErrTampered) || !strings.Contains(err.Error(), "entry 5") {
		t.Fatalf("Build of an edited log: %v", err)
	}
	in = s.input()
	in.Entries = s.entries[:len(s.entries)-1]
	if _, err := report.Build(in); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("Build of a truncated log: %v", err)
	}
	other, _ := audit.VerifierKey(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	in = s.input()
	in.VerifierKey = other
	if _, err := report.Build(in); !errors.Is(err, report.ErrUnverified) || !errors.Is(err, audit.ErrCheckpoint) {
		t.Fatalf("Build with another key: %v", err)
	}
	in = s.input()
	in.Checkpoint = nil
	if _, err := report.Build(in); !errors.Is(err, report.ErrInput) {
		t.Fatalf("Build without a checkpoint: %v", err)
	}
}

// The same log judged against another policy digest, a checkpoint older than the period's end,
// and a plaintext link fails documentation, audits and encryption.
func TestFailingConfigurationControls(t *testing.T) {
	s := quarterLog(t)
	in := s.input()
	in.PolicyDigest = report.PolicyDigest([]byte("another policy"))
	in.To = time.Date(2027, 1, 3, 0, 0, 0, 0, time.UTC) // ends after the checkpoint
	in.Now = time.Date(2027, 1, 4, 0, 0, 0, 0, time.UTC)
	in.Links = append(in.Links, report.Link{Name: "target s3", URL: "http://minio.example.com:9000"})
	r, err := report.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{
		"seed003-5-documentation": "is not the one last recorded",
		"seed002-6-audits":        "predates the end of the period",
		"seed002-3.3-encryption":  "not encrypted in transit: target s3",
	} {
		if c := control(t, r, id); c.Status != report.StatusFail || !strings.Contains(c.Reason, want) {
			t.Errorf("%s: %s: %s; want fail: %s", id, c.Status, c.Reason, want)
		}
	}
	if r.Period.EvidenceEnd != made {
		t.Errorf("evidence ends %s, want the checkpoint's time %s", r.Period.EvidenceEnd, made)
	}
}

// An empty period of a log with no evidence fails the controls that demand evidence.
func TestNoEvidence(t *testing.T) {
	s := quarterLog(t)
	in := s.input()
	in.From, in.To = time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	r, err := report.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"seed002-3.1-frequency", "seed002-4.1-rpo", "seed002-4.2-rto", "seed002-3.4-testing", "seed002-3.5-offsite"} {
		if c := control(t, r, id); c.Status != report.StatusFail {
			t.Errorf("%s: %s (%s), want fail: no evidence", id, c.Status, c.Reason)
		}
	}
	if c := control(t, r, "seed002-4.2-rto"); !strings.Contains(c.Classes[0].Reason, "no evidence") {
		t.Errorf("rto reason: %s", c.Classes[0].Reason)
	}
	b, _ := r.JSON()
	validate(t, b)
}
