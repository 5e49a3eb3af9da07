package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/telemetry"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// The scheduler-side policy: critical is backed up by the worker below; archive never is, so
// its RPO is breached from the first check.
const policyYAML = `version: 1
tenant: t1
targets:
  - {name: t0, kind: fs}
  - {name: t1, kind: fs, offsite: true}
classes:
  critical:
    schedules:
      - {name: daily, cron: "0 2 * * *"}
    retention: {min: 30d, daily: 30}
    targets: [t0, t1]
    rpo: 48h
    rto: 48h
    override_321: "test policy"
  archive:
    schedules:
      - {name: weekly, cron: "0 3 * * 0"}
    retention: {min: 90d, weekly: 13}
    targets: [t0, t1]
    rpo: 8d
    rto: 72h
    override_321: "test policy"
`

// A worker process under a small load against real NATS exports every worker metric of
// docs/metrics.md that the load drove, with a non-zero value and the documented labels; the
// scheduler's parts export theirs; every custos_* name the files under deploy/ use is in one of
// the two scrapes.
func TestScrape(t *testing.T) {
	all := Scrape{}
	var stack *harness.Stack // the scheduler's parts read the catalog the worker wrote
	t.Cleanup(func() {
		if stack != nil {
			stack.Close()
		}
	})
	dir := t.TempDir()
	t.Run("worker", func(t *testing.T) { all.Merge(scrapeWorker(t, dir, &stack)) })
	if t.Failed() {
		return
	}
	t.Run("scheduler", func(t *testing.T) { all.Merge(scrapeScheduler(t, stack)) })
	if t.Failed() {
		return
	}
	t.Run("deploy", func(t *testing.T) { checkDeployFiles(t, all) })
}

type want struct {
	name    string
	labels  []string
	match   map[string]string
	nonZero bool
}

func check(t *testing.T, s Scrape, wants []want) {
	t.Helper()
	for _, w := range wants {
		v, ok := s.Sum(w.name, w.match)
		if !ok {
			t.Errorf("%s missing from the scrape", w.name)
			continue
		}
		if w.nonZero && v == 0 {
			t.Errorf("%s%v = 0, want non-zero", w.name, w.match)
		}
		have := s.Labels(w.name)
		for _, l := range w.labels {
			if !have[l] {
				t.Errorf("%s has no label %q (labels %v)", w.name, l, have)
			}
		}
		for l := range have {
			if strings.Contains(l, "customer") || strings.Contains(l, "pseudonym") {
				t.Errorf("%s has a customer label %q", w.name, l)
			}
		}
	}
}

func scrapeWorker(t *testing.T, dir string, stackOut **harness.Stack) Scrape {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stack, err := harness.Start(dir, harness.Options{Targets: 3, MinReplicas: 2, ReplicaGrace: 200 * time.Millisecond,
		RepairInterval: 300 * time.Millisecond,
		Extra:          "telemetry:\n  metrics_listen: 127.0.0.1:0\n  log_format: json\n"})
	if err != nil {
		t.Fatal(err)
	}
	*stackOut = stack
	// Target t2 is a file, not a directory: every write to it fails, so its replicas go to
	// the repair queue and stay there.
	if err := os.MkdirAll(filepath.Join(dir, "targets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "targets", "t2"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}

	// Worker a creates the shared consumer and leaves.
	a, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Kill()
	logged(t, a, "worker started", "")
	if err := a.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker a: %v\n%s", err, readTail(a.Log))
	}

	p, err := producer.New(stack.JS, "urn:test:metrics")
	if err != nil {
		t.Fatal(err)
	}
	meta := func(i int, class string) *custosv1.Meta {
		return &custosv1.Meta{EventId: fmt.Sprintf("ev-%d", i), Time: timestamppb.Now(), Tenant: "t1",
			CustomerId: fmt.Sprintf("cust-%d", i%7), DataClass: class}
	}
	for i := range 60 {
		class := []string{"critical", "important"}[i%2]
		if _, err := p.PublishPostTransaction(ctx, &custosv1.PostTransaction{Meta: meta(i, class),
			Record: &custosv1.Record{Key: fmt.Sprintf("rec-%d", i%5), Source: &custosv1.Record_Inline{Inline: []byte(fmt.Sprintf(`{"n":%d}`, i))}}}); err != nil {
			t.Fatal(err)
		}
	}
	// A class no worker knows: dead-lettered.
	if _, err := p.PublishPostTransaction(ctx, &custosv1.PostTransaction{Meta: meta(100, "no_such_class"),
		Record: &custosv1.Record{Key: "r", Source: &custosv1.Record_Inline{Inline: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	// Suspicious activity: an alert.
	if _, err := p.PublishAsync(ctx, &custosv1.SuspiciousActivity{Meta: meta(101, "critical"), Reason: "test",
		DetectedBy: "metrics test", Severity: "high",
		Records: []*custosv1.Record{{Key: "s", Source: &custosv1.Record_Inline{Inline: []byte("s")}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Take one event and never acknowledge it: the server redelivers it after ack_wait (2 s),
	// to worker b, which counts a redelivery.
	cons, err := stack.JS.Consumer(ctx, event.StreamName, "custos-workers")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}

	b, err := stack.StartWorker(bin, "worker-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("worker-b log:\n%s", readTail(b.Log))
		}
	}()
	url := "http://" + logged(t, b, "admin listener started", "addr") + "/metrics"
	var maxAckPending float64
	var s Scrape
	deadline := time.Now().Add(90 * time.Second)
	for settled := false; ; time.Sleep(200 * time.Millisecond) {
		if s, err = Get(url); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Sum("custos_consumer_ack_pending", nil); v > maxAckPending {
			maxAckPending = v
		}
		if !settled {
			settled, _ = stack.Settled(ctx)
		}
		missing, _ := s.Sum("custos_replicas_missing", nil)
		redelivered, _ := s.Sum("custos_events_redelivered_total", nil)
		if settled && missing > 0 && redelivered > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled with replicas missing and a redelivery in time (settled %v, missing %v, redelivered %v)",
				settled, missing, redelivered)
		}
	}
	// A restore drill of critical, once its packs are durable.
	if _, err := p.PublishScheduleTick(ctx, &custosv1.ScheduleTick{Meta: &custosv1.Meta{EventId: "drill-1",
		Time: timestamppb.Now(), Tenant: "t1", DataClass: "critical"}, Schedule: "drill", Method: event.MethodDrill}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if s, err = Get(url); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Sum("custos_drill_runs_total", nil); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no custos_drill_runs_total after a drill tick")
		}
	}
	if maxAckPending == 0 {
		t.Errorf("custos_consumer_ack_pending never above 0 while an event was held")
	}
	check(t, s, []want{
		{name: "custos_consumer_pending", labels: []string{"consumer"}},
		{name: "custos_consumer_ack_pending", labels: []string{"consumer"}},
		{name: "custos_events_acked_total", labels: []string{"type", "class"}, match: map[string]string{"type": "post_transaction", "class": "critical"}, nonZero: true},
		{name: "custos_events_redelivered_total", labels: []string{"type", "class"}, nonZero: true},
		{name: "custos_events_dead_lettered_total", labels: []string{"type"}, match: map[string]string{"type": "post_transaction"}, nonZero: true},
		{name: "custos_dead_letters", nonZero: true},
		{name: "custos_publish_to_durable_duration_seconds", labels: []string{"class"}, match: map[string]string{"class": "important"}, nonZero: true},
		{name: "custos_pack_commit_duration_seconds", labels: []string{"class"}, nonZero: true},
		{name: "custos_target_bytes_total", labels: []string{"target", "operation"}, match: map[string]string{"target": "fs:t0", "operation": "put"}, nonZero: true},
		{name: "custos_target_operations_total", labels: []string{"target", "operation"}, nonZero: true},
		{name: "custos_target_errors_total", labels: []string{"target", "operation"}, match: map[string]string{"target": "fs:t2"}, nonZero: true},
		{name: "custos_replicas_missing", labels: []string{"class"}, match: map[string]string{"target": "fs:t2"}, nonZero: true},
		{name: "custos_repair_queue_depth", nonZero: true},
		{name: "custos_alerts_total", labels: []string{"kind", "severity"}, match: map[string]string{"kind": "suspicious_activity"}, nonZero: true},
		{name: "custos_drill_runs_total", labels: []string{"class", "target", "outcome"}, nonZero: true},
		{name: "custos_drill_estimated_seconds", labels: []string{"class", "target"}},
		{name: "custos_drill_last_passed", labels: []string{"class", "target"}},
	})
	if f := s["target_info"]; f == nil || !strings.Contains(f.String(), "worker-b") {
		t.Errorf("target_info does not carry service.instance.id worker-b: %v", f)
	}
	if err := b.Stop(30 * time.Second); err != nil {
		t.Errorf("worker b: %v", err)
	}
	return s
}

// The scheduler's parts (schedule service and RPO monitor, as services/scheduler wires them)
// on a clock that runs an hour per second, exported through the admin listener.
func scrapeScheduler(t *testing.T, stack *harness.Stack) Scrape {
	ctx := context.Background()
	p, err := policy.Parse("policy.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	m, err := telemetry.NewMetrics(ctx, telemetry.Config{ServiceName: "custos-scheduler", InstanceID: "sched-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(ctx)
	clk := newFastClock(time.Date(2027, 1, 1, 1, 50, 0, 0, time.UTC), 3600)
	run := func(replica string) *schedule.Service {
		svc, err := schedule.New(stack.JS, schedule.Config{Policy: p, Replica: replica, Clock: clk, MeterProvider: m.Provider()})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Stop(ctx) })
		return svc
	}
	a := run("a")
	waitFor(t, "a tick fired", func() bool { return a.Stats().Fired > 0 })
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	clk.jump(20 * 24 * time.Hour) // down for 20 days: ticks older than the catch-up window are skipped
	b := run("b")
	waitFor(t, "a tick skipped", func() bool { return b.Stats().Skipped > 0 })
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	index, err := catalog.Open(ctx, stack.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	mon, err := rpo.New(rpo.Config{Index: index, Policy: p, MeterProvider: m.Provider()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Check(ctx); err != nil {
		t.Fatal(err)
	}

	admin := telemetry.NewAdmin(telemetry.AdminConfig{Listen: "127.0.0.1:0", Metrics: m.Handler()})
	if err := admin.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer admin.Stop(ctx)
	s, err := Get("http://" + admin.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	check(t, s, []want{
		{name: "custos_scheduler_fired_total", labels: []string{"class", "schedule"}, nonZero: true},
		{name: "custos_scheduler_skipped_total", nonZero: true},
		{name: "custos_rpo_age_seconds", labels: []string{"class"}, match: map[string]string{"class": "critical"}, nonZero: true},
		{name: "custos_rpo_breached", labels: []string{"class"}, match: map[string]string{"class": "archive"}, nonZero: true},
		{name: "custos_alerts_total", labels: []string{"kind", "severity"}, match: map[string]string{"kind": "rpo_breach"}, nonZero: true},
	})
	return s
}

// checkDeployFiles reads every YAML and JSON file under deploy/ (Prometheus rules, Grafana
// dashboards) and requires each custos_* name they use to be in a scrape.
func checkDeployFiles(t *testing.T, s Scrape) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string][]string{} // name -> files
	err = filepath.WalkDir(filepath.Join(root, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "emulators" || d.Name() == "tools" || d.Name() == "vulncheck" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if filepath.Ext(path) == ".json" && !json.Valid(b) {
			t.Errorf("%s: not valid JSON", path)
		}
		rel, _ := filepath.Rel(root, path)
		for _, n := range Names(string(b)) {
			used[n] = append(used[n], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d custos_* names used under deploy/", len(names))
	for _, n := range names {
		if !s.Has(n) {
			t.Errorf("%s (used in %v) is not in the scrape", n, used[n])
		}
	}
}

// logged waits for the worker's JSON log line with msg and returns its attribute key.
func logged(t *testing.T, w *harness.Worker, msg, key string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(w.Log)
		if err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var rec map[string]any
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
					f.Close()
					v, _ := rec[key].(string)
					return v
				}
			}
			f.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q in the log:\n%s", msg, readTail(w.Log))
	return ""
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// fastClock runs factor times faster than the wall clock, and jumps when told.
type fastClock struct {
	mu     sync.Mutex
	base   time.Time // fake time at realAt
	realAt time.Time
	factor float64
}

func newFastClock(start time.Time, factor float64) *fastClock {
	return &fastClock{base: start, realAt: time.Now(), factor: factor}
}

func (c *fastClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.Add(time.Duration(float64(time.Since(c.realAt)) * c.factor))
}

func (c *fastClock) jump(d time.Duration) {
	now := c.Now()
	c.mu.Lock()
	c.base, c.realAt = now.Add(d), time.Now()
	c.mu.Unlock()
}

func (c *fastClock) NewTimer(d time.Duration) schedule.Timer {
	return realTimer{time.NewTimer(time.Duration(float64(d) / c.factor))}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }
