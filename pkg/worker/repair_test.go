package worker

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/target"
)

func minTwoOfThree(c *Config) {
	for name, cl := range c.Classes {
		cl.MinReplicas = 2
		cl.Retain = time.Hour
		c.Classes[name] = cl
	}
	c.ReplicaGrace = 100 * time.Millisecond
}

// missingGauge reads custos.replicas.missing for one target, summed over classes.
func missingGauge(t *testing.T, rd *sdkmetric.ManualReader, targetName string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "custos.replicas.missing" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
				if v, _ := dp.Attributes.Value("target"); v.AsString() == targetName {
					n, found = n+dp.Value, true
				}
			}
		}
	}
	if !found {
		t.Fatalf("no custos.replicas.missing point for %s", targetName)
	}
	return n
}

// A target that is down does not hold events up: they are acknowledged once two of three
// targets hold their packs, the third is queued for repair, shows in the metric, and is caught
// up from a healthy replica (skipping a corrupted one) when it comes back. Nothing is lost.
func TestTargetDownCaughtUp(t *testing.T) {
	b := setup(t, minTwoOfThree)
	down := b.faults[2]
	down.Down()
	w := b.startWorker()
	want := b.publish(300, 30)
	b.waitSettled()
	st := w.Stats()
	if st.DeadLettered != 0 || st.Events < 300 || st.ReplicasMissed == 0 {
		t.Fatalf("stats %+v: want 300 events acknowledged, none dead-lettered, replicas missed", st)
	}
	packs := objects(t, b.targets[0], "packs/")
	down.Up() // just to look
	if got := objects(t, down, "packs/"); len(got) != 0 {
		t.Fatalf("down target holds %d packs", len(got))
	}
	down.Down()
	queued, err := b.repairs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != len(packs) {
		t.Fatalf("%d repairs queued for %d packs", len(queued), len(packs))
	}
	// Restores work from the two replicas meanwhile.
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore during outage: %+v", rep)
	}
	b.checkRestored(out, want)

	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	r, err := repair.New(repair.Config{Queue: b.repairs, Targets: b.targets, Index: b.index,
		SpoolDir: t.TempDir(), MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Repaired != 0 || res.Pending != len(packs) {
		t.Fatalf("pass while down: %+v, want all %d pending", res, len(packs))
	}
	if n := missingGauge(t, rd, down.Name()); n != int64(len(packs)) {
		t.Fatalf("missing gauge %d during outage, want %d", n, len(packs))
	}

	down.Up()
	b.faults[0].Corrupt(packs[0]) // the first source of that pack must be refused
	res, err = r.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Repaired != len(packs) || res.Pending != 0 {
		t.Fatalf("pass after recovery: %+v, want %d repaired", res, len(packs))
	}
	if n := missingGauge(t, rd, down.Name()); n != 0 {
		t.Fatalf("missing gauge %d after repair", n)
	}
	if left, _ := b.repairs.List(context.Background()); len(left) != 0 {
		t.Fatalf("%d repairs still queued", len(left))
	}
	b.faults[0].Reset()
	ctx := context.Background()
	for _, name := range packs {
		id := name[len("packs/xx/"):]
		rec, err := b.index.Pack(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rec.Targets, down.Name()) {
			t.Fatalf("index of pack %s names %v, not the repaired target", id, rec.Targets)
		}
		for _, obj := range []string{name, pack.ManifestName(id)} {
			info, err := b.targets[1].Stat(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			sum := statSum(t, b.targets[1], obj)
			if ok, err := replica.Verify(ctx, down, obj, info.Size, sum); err != nil || !ok {
				t.Fatalf("repaired %s differs from the healthy replica (err %v)", obj, err)
			}
		}
	}
	// The repaired copies are as immutable as the others.
	if err := down.Delete(ctx, packs[0]); !errors.Is(err, target.ErrLocked) {
		t.Fatalf("Delete of a repaired pack = %v, want ErrLocked (retention copied)", err)
	}
	// Restoring from the repaired target alone gives everything back.
	only := &bundle{t: t, ns: b.ns, kms: b.kms, keys: b.keys, index: b.index, targets: []target.Target{down}}
	rep, out = only.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore from the repaired target: %+v", rep)
	}
	b.checkRestored(out, want)
}

func statSum(t *testing.T, tg target.Target, name string) [32]byte {
	t.Helper()
	rc, err := tg.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return sha(data)
}

// A target that hangs does not hold events for longer than the replica grace.
func TestSlowTargetDoesNotBlock(t *testing.T) {
	b := setup(t, minTwoOfThree)
	b.faults[2].Delay(time.Hour)
	w := b.startWorker()
	start := time.Now()
	b.publish(50, 5)
	b.waitSettled()
	if st := w.Stats(); st.DeadLettered != 0 || st.ReplicasMissed == 0 {
		t.Fatalf("stats %+v: want no dead letters and the slow target queued for repair", st)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("events took %v with one hanging target", d)
	}
}

// With every target required (the default), a target down fails the pack: events are retried,
// never acknowledged short of a replica.
func TestAllReplicasRequiredByDefault(t *testing.T) {
	b := setup(t, func(c *Config) { c.MaxDeliver = 100 })
	b.faults[1].Down()
	w := b.startWorker()
	b.publish(5, 1)
	time.Sleep(time.Second)
	if st := w.Stats(); st.Events != 0 || st.ReplicasMissed != 0 {
		t.Fatalf("stats %+v: nothing may be acknowledged while a required target is down", st)
	}
	b.faults[1].Up()
	b.waitSettled()
	if got := objects(t, b.targets[1], "packs/"); len(got) == 0 {
		t.Fatal("no pack written after the target came back")
	}
}

// A pack's memory is handed to later packs only when no write of it can still be reading it. A
// target whose write was abandoned after the quorum may, like an HTTP transport still sending a
// cancelled request's body, read the pack after the commit returned: what it reads must still
// be that pack's bytes while later packs are built.
func TestAbandonedWriteStillReadsItsPack(t *testing.T) {
	b := setup(t, minTwoOfThree, func(c *Config) { c.PackMaxItems = 5 })
	lagging := b.faults[2]
	lagging.HoldPuts()
	b.startWorker()
	want := b.publish(60, 6)
	b.waitSettled()
	changed, err := lagging.ReadHeld()
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 0 {
		t.Fatalf("%d abandoned writes read other bytes than their pack's, first %s", len(changed), changed[0])
	}
	if packs := objects(t, b.targets[0], "packs/"); len(packs) < 4 {
		t.Fatalf("%d packs written; the test needs several in a row", len(packs))
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore: %+v", rep)
	}
	b.checkRestored(out, want)
}
