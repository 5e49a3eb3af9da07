package status_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

const policyYAML = `version: 1
tenant: acme
targets:
  - {name: a, kind: fs}
  - {name: b, kind: s3, offsite: true}
classes:
  critical:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 30d, daily: 30}
    targets: [a, b]
    rpo: 48h
    rto: 48h
    override_321: "test policy"
  archive:
    schedules: [{name: weekly, cron: "0 3 * * 0"}]
    retention: {min: 90d, weekly: 13}
    targets: [a, b]
    rpo: 8d
    rto: 72h
    override_321: "test policy"
`

var now = time.Date(2027, 3, 10, 12, 0, 0, 0, time.UTC)

// A class whose newest backup is older than its RPO shows as breached, one within it as ok;
// a pack on one of two targets counts as under-replicated; drills, dead letters show.
func TestCollectAndRender(t *testing.T) {
	ns := natstest.Start(t)
	ctx := t.Context()
	ix, err := catalog.Open(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("policy.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	commit := func(class, id string, at time.Time, targets ...string) {
		m := pack.Build(class, []pack.Item{{ID: id, Customer: "pc1000000000000000000000000000000", Seq: 1,
			EventTime: at.Add(-time.Minute), Sealed: []byte(id)}}).Manifest
		if err := ix.Commit(ctx, m, targets, at); err != nil {
			t.Fatal(err)
		}
	}
	commit("critical", "i1", now.Add(-72*time.Hour), "a", "b") // older than the 48 h RPO
	commit("archive", "i2", now.Add(-24*time.Hour), "a")       // within 8 days, on one target of two
	if err := event.EnsureStreams(ctx, ns.JS, event.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.JS.Publish(ctx, "custos.v1.dlq.post_transaction.dlq", []byte("x")); err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	for i, outcome := range []string{audit.OutcomePassed, audit.OutcomeFailed} {
		e := audit.Entry{Kind: audit.KindDrill, Class: "critical", Targets: []string{"b"}, Outcome: outcome,
			Time: now.Add(time.Duration(i-2) * time.Hour), Reason: map[bool]string{true: "checksum mismatch"}[i == 1],
			Figures: &audit.Figures{Items: 1, Bytes: 10, Seconds: 1, EstimatedSeconds: 3600, RTOSeconds: 172800}}
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	pg, err := status.Collect(ctx, status.Sources{Policy: p, Index: ix, JS: ns.JS, Clock: func() time.Time { return now },
		Targets: []string{"a", "b", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pg.Problems) > 0 {
		t.Errorf("problems: %v", pg.Problems)
	}
	byName := map[string]status.Class{}
	for _, c := range pg.Classes {
		byName[c.Name] = c
	}
	if c := byName["critical"]; !c.Breached || c.Underreplicated != 0 || c.Packs != 1 {
		t.Errorf("critical = %+v, want breached, fully replicated", c)
	}
	if c := byName["archive"]; c.Breached || c.Underreplicated != 1 {
		t.Errorf("archive = %+v, want ok with one under-replicated pack", c)
	}
	if want := []status.Target{{Name: "a", Packs: 2}, {Name: "b", Packs: 1}, {Name: "c", Packs: 0}}; !slices.Equal(pg.Targets, want) {
		t.Errorf("targets = %+v, want %+v (c holds nothing yet)", pg.Targets, want)
	}
	if pg.DeadLetters != 1 {
		t.Errorf("dead letters = %d, want 1", pg.DeadLetters)
	}
	if len(pg.Drills) != 1 || pg.Drills[0].Outcome != audit.OutcomeFailed || pg.Drills[0].Estimated != time.Hour {
		t.Errorf("drills = %+v, want the newest (failed) drill of critical on b", pg.Drills)
	}

	var b bytes.Buffer
	if err := status.Render(&b, pg); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{`<tr class="breached" data-class="critical">`, `<td>BREACHED</td>`,
		`<tr class="ok" data-class="archive">`, `checksum mismatch`, `1 in the dead-letter stream`} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// The page has no login: a client that is not on the loopback interface is refused.
func TestHandlerLoopbackOnly(t *testing.T) {
	h := status.Handler(func(context.Context) (status.Page, error) { return status.Page{Generated: now}, nil })
	for remote, want := range map[string]int{"127.0.0.1:5000": 200, "[::1]:5000": 200, "10.0.0.7:5000": 403} {
		r := httptest.NewRequest(http.MethodGet, "/status", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("%s: %d, want %d", remote, w.Code, want)
		}
	}
}
