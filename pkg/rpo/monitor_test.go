package rpo_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/snapshot"
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
    schedules:
      - {name: daily, cron: "0 2 * * *"}
    retention: {min: 30d, daily: 30}
    targets: [a, b]
    rpo: 48h
    rto: 48h
    override_321: "test policy"
  archive:
    schedules:
      - {name: weekly, cron: "0 3 * * 0"}
    retention: {min: 90d, weekly: 13}
    targets: [a, b]
    rpo: 8d
    rto: 72h
    override_321: "test policy"
`

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

type bundle struct {
	index   *catalog.Index
	clock   *clock
	reader  *sdkmetric.ManualReader
	logs    *logtest.Buffer
	monitor *rpo.Monitor
	seq     uint64
}

var t0 = time.Date(2027, 3, 1, 2, 0, 0, 0, time.UTC)

// setup starts NATS and a monitor; with lets a test change the monitor's config.
func setup(t *testing.T, interval time.Duration, with ...func(*rpo.Config)) *bundle {
	t.Helper()
	ns := natstest.Start(t)
	ix, err := catalog.Open(t.Context(), ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("policy.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{index: ix, clock: &clock{now: t0}, reader: sdkmetric.NewManualReader(), logs: &logtest.Buffer{}}
	cfg := rpo.Config{Index: ix, Policy: p, Interval: interval, Clock: b.clock,
		Logger:        slog.New(slog.NewTextHandler(b.logs, nil)),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(b.reader))}
	for _, f := range with {
		f(&cfg)
	}
	b.monitor, err = rpo.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// commit indexes a pack of class committed at the given time.
func (b *bundle) commit(t *testing.T, class string, at time.Time) {
	t.Helper()
	b.seq++
	id := fmt.Sprintf("item-%d", b.seq)
	m := pack.Build(class, []pack.Item{{ID: id, Customer: "pc1000000000000000000000000000000", Seq: b.seq,
		EventTime: at.Add(-time.Minute), Sealed: []byte(id)}}).Manifest
	if err := b.index.Commit(t.Context(), m, []string{"mem:a"}, at); err != nil {
		t.Fatal(err)
	}
}

// metrics returns the values of the RPO gauges for one class, and the RPO alerts of all
// classes (the counter has no class label); age is -1 when not exported.
func (b *bundle) metrics(t *testing.T, class string) (age float64, breached, alerts int64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := b.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	age = -1
	mine := func(s attribute.Set) bool { v, _ := s.Value("class"); return v.AsString() == class }
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "custos.rpo.age":
				for _, dp := range m.Data.(metricdata.Gauge[float64]).DataPoints {
					if mine(dp.Attributes) {
						age = dp.Value
					}
				}
			case "custos.rpo.breached":
				for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					if mine(dp.Attributes) {
						breached = dp.Value
					}
				}
			case "custos.alerts":
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					if k, _ := dp.Attributes.Value("kind"); k.AsString() == "rpo_breach" {
						alerts = dp.Value
					}
				}
			}
		}
	}
	return age, breached, alerts
}

func (b *bundle) check(t *testing.T, at time.Time) {
	t.Helper()
	b.clock.Set(at)
	if _, err := b.monitor.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) expect(t *testing.T, class string, wantAge float64, wantBreached, wantAlerts int64) {
	t.Helper()
	age, breached, alerts := b.metrics(t, class)
	if age != wantAge || breached != wantBreached || alerts != wantAlerts {
		t.Fatalf("%s: age=%v breached=%d alerts=%d, want %v %d %d", class, age, breached, alerts, wantAge, wantBreached, wantAlerts)
	}
}

// A breach is detected when the clock passes the RPO, alerted once however many checks see
// it, cleared when a new pack is committed, and alerted again on the next breach.
func TestBreachDetectedAndCleared(t *testing.T) {
	t.Parallel()
	b := setup(t, time.Minute)
	b.commit(t, "critical", t0)

	// archive has no backup: in breach from the first check (one alert).
	b.check(t, t0.Add(47*time.Hour))
	b.expect(t, "critical", (47 * time.Hour).Seconds(), 0, 1)
	b.check(t, t0.Add(48*time.Hour)) // exactly the RPO: still met
	b.expect(t, "critical", (48 * time.Hour).Seconds(), 0, 1)

	b.check(t, t0.Add(48*time.Hour+time.Second))
	b.expect(t, "critical", (48*time.Hour + time.Second).Seconds(), 1, 2)
	b.check(t, t0.Add(60*time.Hour))
	b.expect(t, "critical", (60 * time.Hour).Seconds(), 1, 2) // once per breach
	if n := strings.Count(b.logs.String(), `msg="RPO breached: the newest backup is older than the RPO" class=critical`); n != 1 {
		t.Fatalf("%d breach warnings for critical, want 1:\n%s", n, b.logs)
	}

	b.commit(t, "critical", t0.Add(61*time.Hour))
	b.check(t, t0.Add(61*time.Hour))
	b.expect(t, "critical", 0, 0, 2)
	if !strings.Contains(b.logs.String(), `msg="RPO met again" class=critical`) {
		t.Fatalf("no recovery log:\n%s", b.logs)
	}

	b.check(t, t0.Add(200*time.Hour))
	b.expect(t, "critical", (139 * time.Hour).Seconds(), 1, 3)

	// A class that never had a backup is in breach from the first check, alerted once, with no
	// age exported.
	b.expect(t, "archive", -1, 1, 3)
}

func TestComputeAndForCustomer(t *testing.T) {
	t.Parallel()
	p, err := policy.Parse("policy.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	packs := []catalog.PackRecord{
		{Pack: "a1", Class: "critical", Committed: t0},
		{Pack: "a2", Class: "critical", Committed: t0.Add(time.Hour)},
		{Pack: "b1", Class: "archive", NewestEvent: t0.Add(-9 * 24 * time.Hour)}, // no commit time: its newest event
	}
	now := t0.Add(2 * time.Hour)
	st := rpo.Compute(p, packs, now)
	if len(st) != 2 || st[0].Class != "critical" || st[0].Age != time.Hour || st[0].Breached ||
		st[1].Class != "archive" || !st[1].Breached || st[1].Age != 9*24*time.Hour+2*time.Hour {
		t.Fatalf("Compute = %+v", st)
	}
	recs := []catalog.CustomerRecord{{Pack: "a1", Class: "critical", Items: []pack.Entry{{ID: "x"}}}}
	cs := rpo.ForCustomer(p, recs, packs, now)
	if len(cs) != 1 || cs[0].Class != "critical" || cs[0].Age != 2*time.Hour || cs[0].Breached {
		t.Fatalf("ForCustomer = %+v", cs)
	}
	// A committed snapshot that stored nothing new (every record unchanged) still counts as a
	// backup of its class; a partial one (chosen customers) does not.
	snaps := []snapshot.Snapshot{
		{ID: "s1", Class: "archive", Committed: now.Add(-time.Hour)},
		{ID: "s2", Class: "critical", Committed: now, Partial: true},
	}
	st = rpo.Compute(p, rpo.WithSnapshots(packs, snaps), now)
	if st[1].Breached || st[1].Age != time.Hour || st[0].Age != time.Hour {
		t.Fatalf("Compute with snapshots = %+v", st)
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	b := setup(t, 10*time.Millisecond)
	b.commit(t, "critical", t0)
	ctx := context.Background()
	if err := b.monitor.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for range 2 {
		if err := b.monitor.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.Set(t0.Add(72 * time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, breached, alerts := b.metrics(t, "critical"); breached == 1 && alerts == 2 { // critical and archive
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the running monitor did not see the breach")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // several more ticks: still one alert
	if _, _, alerts := b.metrics(t, "critical"); alerts != 2 {
		t.Fatalf("alerts = %d after more ticks, want 2", alerts)
	}
	for range 2 {
		if err := b.monitor.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rpo.New(rpo.Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
}
