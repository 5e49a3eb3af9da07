package drill_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/target"
	fstarget "github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/klauspost/compress/zstd.(*blockDec).startDecoder"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

// testPolicy has one class, critical, with an RTO of one hour.
const testPolicy = `version: 1
tenant: shop
targets:
  - {name: a, kind: fs}
  - {name: b, kind: s3}
  - {name: c, kind: s3, offsite: true}
classes:
  critical:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 30d, daily: 30}
    targets: [a, b, c]
    rpo: 48h
    rto: 1h
    drill: {sample: 10}
`

// clock is a fake clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// slow is a real target whose reads each take delay of the injected clock: a slow link, made
// visible to the drill without the test waiting.
type slow struct {
	target.Target
	clock *clock
	delay time.Duration
}

func (s slow) GetRange(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	s.clock.Advance(s.delay)
	return s.Target.GetRange(ctx, name, off, n)
}

// bundle is one test's stack: an embedded nats-server, the key file's keyring, the key store,
// the catalog, three fs targets and the audit log. A real worker wrote the backups.
type bundle struct {
	ns      *natstest.Server
	kms     *keys.LocalKMS
	keys    *keys.KVStore
	index   *catalog.Index
	log     *audit.Log
	roots   []string
	targets []target.Target
	policy  *policy.Policy
	clock   *clock
	metrics *sdkmetric.ManualReader
	logs    *logtest.Buffer
	alerted []drill.Result
}

func setup(t *testing.T, events int) *bundle {
	t.Helper()
	ctx := t.Context()
	b := &bundle{ns: natstest.Start(t), clock: &clock{now: time.Date(2027, 2, 15, 6, 0, 0, 0, time.UTC)},
		metrics: sdkmetric.NewManualReader(), logs: &logtest.Buffer{}}
	var err error
	if b.policy, err = policy.Parse("policy.yaml", []byte(testPolicy)); err != nil {
		t.Fatal(err)
	}
	if b.kms, err = keys.LoadOrCreateKeyFile(filepath.Join(t.TempDir(), "custos.key")); err != nil {
		t.Fatal(err)
	}
	if b.keys, err = keys.NewKVStore(ctx, b.ns.JS, b.kms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.keys.Close() })
	if b.index, err = catalog.Open(ctx, b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if b.log, err = audit.Open(ctx, b.ns.JS); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range []string{"a", "b", "c"} {
		root := filepath.Join(t.TempDir(), n)
		ft, err := fstarget.New(root, fstarget.WithLabel(n))
		if err != nil {
			t.Fatal(err)
		}
		b.roots = append(b.roots, root)
		b.targets = append(b.targets, ft)
		names = append(names, ft.Name())
	}
	b.backup(t, names, events)
	return b
}

// backup runs a worker until it has stored events post-transaction events of class critical.
func (b *bundle) backup(t *testing.T, names []string, events int) {
	t.Helper()
	ctx := context.Background()
	w, err := worker.New(worker.Deps{JS: b.ns.JS, Keys: b.keys, Pseudonyms: b.kms, Index: b.index},
		worker.Config{Classes: map[string]worker.Class{"critical": {Targets: names}}, Targets: b.targets,
			PackMaxItems: 8, PackMaxDelay: 20 * time.Millisecond, SpoolDir: t.TempDir(),
			Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(ctx)
	prod, err := producer.New(b.ns.JS, "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		msg := &custosv1.PostTransaction{
			Meta: &custosv1.Meta{EventId: fmt.Sprint("ev-", i), Time: timestamppb.Now(), Tenant: "shop",
				CustomerId: fmt.Sprint("cust-", i%5), DataClass: "critical"},
			Record: &custosv1.Record{Key: fmt.Sprint("order-", i), Source: &custosv1.Record_Inline{
				Inline: []byte(strings.Repeat(fmt.Sprintf("order %d;", i), 50))}},
		}
		if _, err := prod.PublishPostTransaction(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for w.Stats().Events < int64(events) {
		if time.Now().After(deadline) {
			t.Fatalf("worker stored %d of %d events", w.Stats().Events, events)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// driller returns a Driller over the bundle's targets, target i replaced by replace[i] when set.
func (b *bundle) driller(t *testing.T, scratch string, replace map[int]target.Reader) *drill.Driller {
	t.Helper()
	var readers []target.Reader
	for i, tg := range b.targets {
		if r, ok := replace[i]; ok {
			readers = append(readers, r)
			continue
		}
		readers = append(readers, tg)
	}
	d, err := drill.New(drill.Config{Policy: b.policy, Index: b.index, Targets: map[string][]target.Reader{"critical": readers},
		Keys: b.keys, Pseudonyms: b.kms, Audit: b.log, ScratchDir: scratch,
		Alert:  func(_ context.Context, r drill.Result) { b.alerted = append(b.alerted, r) },
		Logger: slog.New(slog.NewTextHandler(b.logs, nil)), Clock: b.clock.Now,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(b.metrics)),
		Rand:          rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// entries reads the drill entries of the audit log.
func (b *bundle) entries(t *testing.T) []audit.Entry {
	t.Helper()
	raw, err := audit.ReadEntries(t.Context(), b.ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, r := range raw {
		var e audit.Entry
		if err := json.Unmarshal(r, &e); err != nil {
			t.Fatal(err)
		}
		if e.Kind == audit.KindDrill {
			out = append(out, e)
		}
	}
	return out
}

// metrics returns every data point as "name{attrs}" -> value.
func (b *bundle) points(t *testing.T) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := b.metrics.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	enc := attribute.DefaultEncoder()
	key := func(name string, attrs attribute.Set) string { return name + "{" + attrs.Encoded(enc) + "}" }
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range data.DataPoints {
					out[key(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range data.DataPoints {
					out[key(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range data.DataPoints {
					out[key(m.Name, p.Attributes)] = p.Value
				}
			}
		}
	}
	return out
}

// TestDrillPasses: a drill of a healthy class restores its sample from every target, within the
// RTO; each target's result is an audit entry and metrics; the scratch directory is gone.
func TestDrillPasses(t *testing.T) {
	b := setup(t, 40)
	scratch := t.TempDir()
	results, err := b.driller(t, scratch, nil).Run(t.Context(), drill.Options{Class: "critical", EventID: "drill.shop.critical.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 {
		t.Fatalf("%d results", len(results))
	}
	for i, r := range results {
		f := r.Figures
		if !r.Passed() || r.Target != b.targets[i].Name() || f.Items != 10 || f.Bytes == 0 || r.Stored == 0 ||
			f.ChecksumFailures != 0 || f.ClassBytes < r.Stored || f.RTOSeconds != 3600 || r.Reason != "" {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Fatalf("scratch directory holds %d entries after the drill", len(left))
	}
	es := b.entries(t)
	if len(es) != 3 {
		t.Fatalf("%d drill entries", len(es))
	}
	for i, e := range es {
		if e.Outcome != audit.OutcomePassed || e.Class != "critical" || e.Targets[0] != b.targets[i].Name() ||
			e.EventID != "drill.shop.critical.1/"+b.targets[i].Name() || e.Figures == nil || e.Figures.Items != 10 || e.Count != 10 {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	pts := b.points(t)
	if v := pts[`custos.drill.runs{class=critical,outcome=passed,target=fs:a}`]; v != 1 {
		t.Fatalf("runs: %v", pts)
	}
	if v, ok := pts[`custos.drill.last_passed{class=critical,target=fs:c}`]; !ok || v != 1 {
		t.Fatalf("last_passed: %v", pts)
	}
	if _, ok := pts[`custos.drill.estimated{class=critical,target=fs:b}`]; !ok {
		t.Fatalf("estimated: %v", pts)
	}
	if len(b.alerted) != 0 || strings.Contains(b.logs.String(), "ALERT") {
		t.Fatalf("alerted: %v\n%s", b.alerted, b.logs)
	}

	// All of the class, from one target by its short name.
	results, err = b.driller(t, scratch, nil).Run(t.Context(), drill.Options{Class: "critical", Targets: []string{"b"}, Sample: &policy.Sample{All: true}})
	if err != nil || len(results) != 1 || results[0].Figures.Items != 40 || results[0].Target != "fs:b" || !results[0].Passed() {
		t.Fatalf("all from b: %+v, %v", results, err)
	}
}

// TestDrillSlowTarget: a target whose reads are slow gives an estimate over the RTO: that
// target's drill fails and alerts; the others pass.
func TestDrillSlowTarget(t *testing.T) {
	b := setup(t, 40)
	// Ten items sampled, a minute each: 10 minutes for a quarter of the class, about 40 for all
	// of it... so make each read 10 minutes: well over the 1 h RTO.
	d := b.driller(t, t.TempDir(), map[int]target.Reader{1: slow{Target: b.targets[1], clock: b.clock, delay: 10 * time.Minute}})
	results, err := d.Run(t.Context(), drill.Options{Class: "critical"})
	if err != nil {
		t.Fatal(err)
	}
	if !results[0].Passed() || !results[2].Passed() {
		t.Fatalf("fast targets: %+v", results)
	}
	r := results[1]
	// A restore reads each sampled pack once: ten minutes a pack.
	if r.Passed() || r.Figures.ChecksumFailures != 0 || r.Figures.EstimatedSeconds <= 3600 || r.Figures.Seconds < float64(r.Packs)*600 ||
		!strings.Contains(r.Reason, "exceeds the RTO 1h") {
		t.Fatalf("slow target: %+v", r)
	}
	// Extrapolated to the class's whole stored size at the measured rate.
	want := r.Figures.Seconds * float64(r.Figures.ClassBytes) / float64(r.Stored)
	if d := r.Figures.EstimatedSeconds - want; d > 1e-6 || d < -1e-6 {
		t.Fatalf("estimate %v, want %v", r.Figures.EstimatedSeconds, want)
	}
	if len(b.alerted) != 1 || b.alerted[0].Target != "fs:b" {
		t.Fatalf("alerted %+v", b.alerted)
	}
	if !strings.Contains(b.logs.String(), "level=ERROR msg=\"ALERT: restore drill failed\" class=critical target=fs:b") {
		t.Fatalf("logs:\n%s", b.logs)
	}
	pts := b.points(t)
	if pts[`custos.alerts{kind=drill_failed,severity=high}`] != 1 || pts[`custos.drill.runs{class=critical,outcome=failed,target=fs:b}`] != 1 ||
		pts[`custos.drill.last_passed{class=critical,target=fs:b}`] != 0 || pts[`custos.drill.last_passed{class=critical,target=fs:a}`] != 1 {
		t.Fatalf("metrics: %v", pts)
	}
	es := b.entries(t)
	if len(es) != 3 || es[1].Outcome != audit.OutcomeFailed || es[1].Reason != r.Reason || es[1].Figures.EstimatedSeconds != r.Figures.EstimatedSeconds {
		t.Fatalf("entries: %+v", es)
	}
}

// TestDrillCorruptTarget: a pack with a flipped byte in one target fails that target's drill
// with a checksum failure; the copies in the other targets pass.
func TestDrillCorruptTarget(t *testing.T) {
	b := setup(t, 24)
	corrupted := 0
	err := filepath.WalkDir(filepath.Join(b.roots[2], "packs"), func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || corrupted > 0 {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		raw[len(raw)/2] ^= 0x40
		corrupted++
		return os.WriteFile(path, raw, 0o600)
	})
	if err != nil || corrupted != 1 {
		t.Fatalf("corrupt a pack: %v (%d)", err, corrupted)
	}
	results, err := b.driller(t, t.TempDir(), nil).Run(t.Context(), drill.Options{Class: "critical", Sample: &policy.Sample{All: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !results[0].Passed() || !results[1].Passed() {
		t.Fatalf("good targets: %+v", results)
	}
	r := results[2]
	if r.Passed() || r.Figures.ChecksumFailures != 1 || r.Figures.Items != 23 || !strings.Contains(r.Reason, "1 of 24 sampled items failed their checksum") {
		t.Fatalf("corrupt target: %+v", r)
	}
	if len(b.alerted) != 1 {
		t.Fatalf("alerted %+v", b.alerted)
	}
	if es := b.entries(t); es[2].Outcome != audit.OutcomeFailed || es[2].Figures.ChecksumFailures != 1 {
		t.Fatalf("entry %+v", es[2])
	}
}

// TestDrillErrors: what cannot be drilled is an error, not a result; an empty class or a
// target that holds nothing fails.
func TestDrillErrors(t *testing.T) {
	b := setup(t, 4)
	d := b.driller(t, t.TempDir(), nil)
	if _, err := d.Run(t.Context(), drill.Options{Class: "archive"}); !errors.Is(err, drill.ErrUnknownClass) {
		t.Fatalf("unknown class: %v", err)
	}
	if _, err := d.Run(t.Context(), drill.Options{Class: "critical", Targets: []string{"z"}}); !errors.Is(err, drill.ErrUnknownTarget) {
		t.Fatalf("unknown target: %v", err)
	}
	if len(b.entries(t)) != 0 {
		t.Fatal("an entry for a drill that did not run")
	}
	// A fourth target the index names for no pack.
	extra, err := fstarget.New(t.TempDir(), fstarget.WithLabel("d"))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := drill.New(drill.Config{Policy: b.policy, Index: b.index, Targets: map[string][]target.Reader{"critical": {extra}},
		Keys: b.keys, Pseudonyms: b.kms, Audit: b.log, Clock: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	results, err := d2.Run(t.Context(), drill.Options{Class: "critical"})
	if err != nil || len(results) != 1 || results[0].Passed() || !strings.Contains(results[0].Reason, "names none of the class's") {
		t.Fatalf("empty target: %+v, %v", results, err)
	}
	if _, err := drill.New(drill.Config{Policy: b.policy}); err == nil {
		t.Fatal("New without parts")
	}
}
