package worker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func inline(key, data string) *custosv1.Record {
	return &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: []byte(data)}}
}

// auditEntries reads the whole audit stream, raw and parsed.
func (b *bundle) auditEntries() ([]audit.Entry, [][]byte) {
	b.t.Helper()
	ctx := context.Background()
	s, err := b.ns.JS.Stream(ctx, audit.StreamName)
	if err != nil {
		b.t.Fatal(err)
	}
	var raw [][]byte
	st := s.CachedInfo().State
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			b.t.Fatal(err)
		}
		raw = append(raw, m.Data)
	}
	entries, err := audit.List(ctx, b.ns.JS, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	return entries, raw
}

// A suspicious-activity event is backed up at once (long before the pack age limit) into a pack
// that is under legal hold on every target; an ordinary event of the same class in the same run
// is packed apart and not held. Both triggers that are
// audited (manual, suspicious) leave exactly one audit entry, naming the customer only by its
// pseudonym, and the alert is logged and counted.
func TestSuspiciousActivityHeldAndAudited(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	logs := &logtest.Buffer{}
	b := setup(t, func(c *Config) {
		c.PackMaxDelay = 5 * time.Second // a held pack must not wait for it
		c.MeterProvider = mp
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	w := b.startWorker()
	ctx := context.Background()
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("ord-1", "c-ordinary", "critical", "orders/1", []byte("ordinary"))); err != nil {
		t.Fatal(err)
	}
	sus := &custosv1.SuspiciousActivity{
		Meta:   &custosv1.Meta{EventId: "sus-1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c-suspect", DataClass: "critical"},
		Reason: "mass deletion of orders", DetectedBy: "deletion-guard", Severity: "critical",
		Records: []*custosv1.Record{inline("orders/7", "seven"), inline("orders/8", "eight")},
	}
	start := time.Now()
	if _, err := b.producer.PublishSuspiciousActivity(ctx, sus); err != nil {
		t.Fatal(err)
	}
	// The held pack is written at once: its audit entry appears before the ordinary pack's age.
	waitFor(t, 4*time.Second, "suspicious activity audited", func() bool {
		entries, _ := b.auditEntries()
		return len(entries) == 1
	})
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("suspicious records took %v", d)
	}
	man := &custosv1.ManualRequest{
		Meta:   &custosv1.Meta{EventId: "man-1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c-manual", DataClass: "important"},
		Reason: "before schema migration", RequestedBy: "ops@example.com",
		Records: []*custosv1.Record{inline("profile", "manual")},
	}
	if _, err := b.producer.PublishManualRequest(ctx, man); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	if st := w.Stats(); st.Events != 3 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}

	entries, raw := b.auditEntries()
	if len(entries) != 2 {
		t.Fatalf("%d audit entries, want 2: %+v", len(entries), entries)
	}
	for _, r := range raw {
		for _, id := range []string{"c-suspect", "c-manual", "c-ordinary", "orders/7", "seven"} {
			if bytes.Contains(r, []byte(id)) {
				t.Fatalf("audit entry %s holds %q", r, id)
			}
		}
	}
	se, me := entries[0], entries[1]
	if se.Kind != audit.KindSuspicious || se.EventID != "sus-1" || se.Class != "critical" ||
		se.Customer != b.kms.Pseudonym("t1", "c-suspect") || se.Severity != "critical" ||
		se.DetectedBy != "deletion-guard" || se.Reason != sus.Reason || se.Outcome != audit.OutcomeBackedUp || len(se.Packs) != 1 {
		t.Fatalf("suspicious entry %+v", se)
	}
	if me.Kind != audit.KindManual || me.EventID != "man-1" || me.Customer != b.kms.Pseudonym("t1", "c-manual") ||
		me.RequestedBy != "ops@example.com" || me.Reason != man.Reason || me.Outcome != audit.OutcomeBackedUp || len(me.Packs) != 1 {
		t.Fatalf("manual entry %+v", me)
	}

	// Every object of the held pack is locked on every target; the ordinary packs are not.
	held := se.Packs[0]
	packs, err := b.index.Packs(ctx)
	if err != nil || len(packs) != 3 {
		t.Fatalf("index holds %d packs (%v), want 3", len(packs), err)
	}
	for _, tg := range b.targets {
		for _, p := range packs {
			for _, name := range []string{pack.ObjectName(p.Pack), pack.ManifestName(p.Pack)} {
				err := tg.Delete(ctx, name)
				if p.Pack == held && !errors.Is(err, target.ErrLocked) {
					t.Errorf("%s: Delete of held %s = %v, want ErrLocked", tg.Name(), name, err)
				}
				if p.Pack != held && err != nil {
					t.Errorf("%s: Delete of ordinary %s = %v, want nil (not held)", tg.Name(), name, err)
				}
			}
		}
	}
	rec, err := b.index.Pack(ctx, held)
	if err != nil || rec.Items != 2 {
		t.Fatalf("held pack %+v (%v): want exactly the 2 suspicious items", rec, err)
	}

	// The alert: one WARN line naming the pseudonym, class and severity, and the counter.
	out := logs.String()
	if !bytes.Contains([]byte(out), []byte("level=WARN msg=\"ALERT: suspicious activity")) ||
		!bytes.Contains([]byte(out), []byte("customer="+se.Customer)) || !bytes.Contains([]byte(out), []byte("severity=critical")) ||
		bytes.Contains([]byte(out), []byte("c-suspect")) {
		t.Fatalf("alert log:\n%s", out)
	}
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var alerts int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != AlertsMetric {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				kind, _ := dp.Attributes.Value("kind")
				sev, _ := dp.Attributes.Value("severity")
				if kind.AsString() != audit.KindSuspicious || sev.AsString() != "critical" || dp.Attributes.Len() != 2 {
					t.Fatalf("alert point attributes %v", dp.Attributes.ToSlice())
				}
				alerts += dp.Value
			}
		}
	}
	if alerts != 1 {
		t.Fatalf("custos.alerts = %d, want 1", alerts)
	}
}

// With a class retention, every pack of the class is retained; when the retention is over the
// ordinary pack may go while the held one stays held.
func TestLegalHoldOutlivesRetention(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	b := setup(t, func(c *Config) {
		var names []string
		c.Targets = nil
		for _, n := range []string{"ra", "rb"} {
			tg, err := fs.New(filepath.Join(t.TempDir(), n), fs.WithLabel(n), fs.WithClock(clock))
			if err != nil {
				t.Fatal(err)
			}
			c.Targets = append(c.Targets, tg)
			names = append(names, tg.Name())
		}
		c.Classes = map[string]Class{"critical": {Targets: names, Retain: time.Hour}}
	})
	b.startWorker()
	ctx := context.Background()
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("ord-1", "c-ordinary", "critical", "k", []byte("ordinary"))); err != nil {
		t.Fatal(err)
	}
	sus := &custosv1.SuspiciousActivity{
		Meta:   &custosv1.Meta{EventId: "sus-1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c-suspect", DataClass: "critical"},
		Reason: "ransomware pattern", DetectedBy: "guard", Records: []*custosv1.Record{inline("k", "held")},
	}
	if _, err := b.producer.PublishSuspiciousActivity(ctx, sus); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	entries, _ := b.auditEntries()
	if len(entries) != 1 || entries[0].Severity != "high" || len(entries[0].Packs) != 1 {
		t.Fatalf("audit %+v, want one suspicious entry with the default severity", entries)
	}
	held := entries[0].Packs[0]
	packs, err := b.index.Packs(ctx)
	if err != nil || len(packs) != 2 {
		t.Fatalf("index holds %d packs (%v), want 2", len(packs), err)
	}
	for _, tg := range b.cfg.Targets {
		for _, p := range packs {
			if err := tg.Delete(ctx, pack.ObjectName(p.Pack)); !errors.Is(err, target.ErrLocked) {
				t.Fatalf("%s: Delete of %s within retention = %v, want ErrLocked", tg.Name(), p.Pack, err)
			}
		}
	}
	now.Add(int64(2 * time.Hour))
	for _, tg := range b.cfg.Targets {
		for _, p := range packs {
			err := tg.Delete(ctx, pack.ObjectName(p.Pack))
			if p.Pack == held && !errors.Is(err, target.ErrLocked) {
				t.Fatalf("%s: Delete of the held pack after retention = %v, want ErrLocked", tg.Name(), err)
			}
			if p.Pack != held && err != nil {
				t.Fatalf("%s: Delete of the ordinary pack after retention = %v, want nil", tg.Name(), err)
			}
		}
	}
}
