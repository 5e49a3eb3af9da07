package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// setupPointInTime is a worker bundle with snapshots enabled and no source: every class is fed
// by events only.
func setupPointInTime(t *testing.T) *snapBundle {
	t.Helper()
	b := setup(t, func(c *Config) {
		cl := c.Classes["critical"]
		cl.SnapshotTasks = 3
		c.Classes["critical"] = cl
		c.CommitInterval = 200 * time.Millisecond
		c.PackMaxItems = 4 // the items of a class spread over several packs
	})
	sb := &snapBundle{bundle: b}
	var err error
	if sb.store, err = snapshot.Open(context.Background(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if sb.records, err = snapshot.OpenRecords(context.Background(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	return sb
}

func (sb *snapBundle) startEventFed() *Worker {
	sb.t.Helper()
	w, err := New(Deps{JS: sb.ns.JS, Keys: sb.keys, Pseudonyms: sb.kms, Index: sb.index, Repairs: sb.repairs,
		Snapshots: sb.store, Records: sb.records}, sb.cfg)
	if err != nil {
		sb.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		sb.t.Fatal(err)
	}
	sb.t.Cleanup(func() { w.Stop(context.Background()) })
	return w
}

func scheduleTick(id, class string, due time.Time) *custosv1.ScheduleTick {
	return &custosv1.ScheduleTick{
		Meta:     &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", DataClass: class},
		Schedule: class + "-daily", Method: "incremental", ScheduledFor: timestamppb.New(due)}
}

// redeliver makes the stream accept msg again (its duplicate window is shortened and left to
// pass) and publishes it: the worker receives the same event, same event id, a second time.
func (sb *snapBundle) redeliver(msg *custosv1.ScheduleTick) {
	sb.t.Helper()
	// The same event (same ce-id) under another message id, so the stream's de-duplication,
	// which would drop a true republish within its window, lets it through: the worker must
	// recognise it by its event id, as it would a redelivery.
	ev, err := event.New(msg, "urn:test:redeliver")
	if err != nil {
		sb.t.Fatal(err)
	}
	subject, hdr, data, err := event.Encode(ev, event.ContentTypeProtobuf)
	if err != nil {
		sb.t.Fatal(err)
	}
	hdr.Set(nats.MsgIdHdr, msg.GetMeta().GetEventId()+"/redelivered")
	if _, err := sb.ns.JS.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Header: hdr, Data: data}); err != nil {
		sb.t.Fatal(err)
	}
}

// TestPointInTimeSnapshotOfEventFedClass is the acceptance check of issue 10 item 1: a schedule
// tick of a class without a source commits one snapshot listing exactly the newest item of each
// record as of the tick's scheduled time, which restores byte for byte; a redelivered tick
// commits nothing new; a tick of an empty class commits an empty snapshot that RPO counts.
func TestPointInTimeSnapshotOfEventFedClass(t *testing.T) {
	sb := setupPointInTime(t)
	w1, w2 := sb.startEventFed(), sb.startEventFed()
	ctx := context.Background()
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second).UTC()
	asOf := t0.Add(time.Hour)
	n := 0
	put := func(customer, key, data string, at time.Time) {
		t.Helper()
		n++
		m := postTx(fmt.Sprintf("pit-%d", n), customer, "critical", key, []byte(data))
		m.Meta.Time = timestamppb.New(at)
		if _, err := sb.producer.PublishPostTransaction(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	atT := map[string]string{} // customer/key → bytes as of asOf
	for c := range 4 {
		for k := range 3 {
			cust, key := fmt.Sprintf("c%d", c), fmt.Sprintf("k%d", k)
			data := fmt.Sprintf(`{"v":1,"c":%q,"k":%q}`, cust, key)
			put(cust, key, data, t0.Add(time.Duration(c*3+k)*time.Second))
			atT[cust+"/"+key] = data
		}
	}
	// Updated before the scheduled time: the new version is the one as of it.
	for _, r := range [][2]string{{"c0", "k0"}, {"c1", "k1"}, {"c2", "k2"}} {
		data := `{"v":2,"r":"` + r[0] + r[1] + `"}`
		put(r[0], r[1], data, t0.Add(30*time.Minute))
		atT[r[0]+"/"+r[1]] = data
	}
	// A backfilled older version arrives last: the newer event time still wins.
	put("c2", "k0", `{"v":0,"stale":true}`, t0.Add(-time.Hour))
	// Changed and created after the scheduled time: not in the snapshot at these versions.
	after := map[string]string{"c0/k0": `{"v":3}`, "c3/k1": `{"v":3}`, "c1/k9": `{"new":true}`}
	for r, data := range after {
		c, k, _ := strings.Cut(r, "/")
		put(c, k, data, t0.Add(90*time.Minute))
	}
	// An erased customer never appears.
	put("gone", "k0", `{"secret":1}`, t0.Add(10*time.Minute))
	sb.waitSettled()
	if _, err := sb.producer.PublishDeletionRequest(ctx, deletion("del-gone", "gone", "dpo")); err != nil {
		t.Fatal(err)
	}
	gone := sb.kms.Pseudonym("t1", "gone")
	waitFor(t, 20*time.Second, "the erasure", func() bool {
		_, err := sb.keys.Lookup(ctx, gone)
		return errors.Is(err, keys.ErrDestroyed)
	})

	tick := scheduleTick("tick-pit-1", "critical", asOf)
	if _, err := sb.producer.PublishScheduleTick(ctx, tick); err != nil {
		t.Fatal(err)
	}
	sn := sb.waitCommitted(snapshot.JobID("tick-pit-1"))
	if sn.Method != "full" || sn.Partial || !sn.Time.Equal(asOf) || len(sn.Tasks) != 3 || sn.Records != int64(len(atT)) || sn.Uploaded != 0 {
		t.Fatalf("snapshot: method %s partial %v time %v, %d tasks, %d records, %d uploaded; want full, complete, %v, 3, %d, 0",
			sn.Method, sn.Partial, sn.Time, len(sn.Tasks), sn.Records, sn.Uploaded, asOf, len(atT))
	}
	// The manifests, read back from a target, list exactly one item per record, none after the
	// scheduled time, none of the erased customer, each in a pack the snapshot protects.
	rd := repository.NewReader(repository.NewOpener(sb.kms, sb.kms.Fingerprint(), target.Readers(sb.targets)...), target.Readers(sb.targets)...)
	refs := map[[2]string]bool{}
	for _, r := range sn.Tasks {
		m, err := rd.TaskManifest(ctx, sn.ID, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range m.Entries {
			if refs[[2]string{e.Customer, e.Ref}] {
				t.Errorf("record %s/%s listed twice", e.Customer, e.Ref)
			}
			refs[[2]string{e.Customer, e.Ref}] = true
			if e.Item.EventTime.After(asOf) || e.Customer == gone || e.Deleted || !contains(r.Packs, e.Pack) {
				t.Errorf("entry %+v: after the scheduled time, erased, deleted or in an unprotected pack %v", e, r.Packs)
			}
		}
	}
	if len(refs) != len(atT) {
		t.Errorf("manifests list %d records, want %d", len(refs), len(atT))
	}
	// Every target holds the task manifests and the snapshot record (design.md section 11).
	for _, tg := range sb.targets {
		if got := objects(t, tg, "snapshots/"+sn.ID[:2]+"/"+sn.ID+"/"); len(got) != 4 {
			t.Errorf("%s holds %v, want 3 task manifests and the record", tg.Name(), got)
		}
	}
	// Restoring the snapshot writes the records as they were at the scheduled time, byte for byte,
	// and the same tree as a restore of everything as of that time.
	out, rep := sb.restoreSnapshot(sn.ID)
	want := map[string]string{}
	for r, data := range atT {
		c, k, _ := strings.Cut(r, "/")
		want[restore.Path(out, "t1", c, k)] = data
	}
	sameTree(t, "point-in-time snapshot", want, readTree(t, out))
	if rep.Records != len(atT) || len(rep.Erased) != 0 {
		t.Errorf("restore: %d records, erased %v; want %d, none", rep.Records, rep.Erased, len(atT))
	}
	asOfOut := t.TempDir()
	r := &restore.Restorer{Index: sb.index, Targets: target.Readers(sb.targets), Keys: sb.keys, Pseudonyms: sb.kms}
	if _, err := r.All(ctx, restore.Options{Out: asOfOut, AsOf: asOf}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "snapshot against restore --as-of", relTree(t, asOfOut), relTree(t, out))

	// The tick again, as a redelivery: same job, nothing new committed.
	sb.redeliver(tick)
	sb.waitSettled()
	if list, err := sb.store.List(ctx, "critical"); err != nil || len(list) != 1 {
		t.Fatalf("%d snapshots after a redelivered tick (%v), want 1", len(list), err)
	}
	if again, err := sb.store.Get(ctx, sn.ID); err != nil || !again.Committed.Equal(sn.Committed) {
		t.Fatalf("snapshot after redelivery: %v, %v", again.Committed, err)
	}

	// A later tick sees the later versions; the record refs learned by the first are reused.
	if known, err := sb.records.LoadRefs(ctx, "critical", sb.kms.Pseudonym("t1", "c0")); err != nil || len(known) == 0 {
		t.Fatalf("item refs of c0 not cached: %v, %v", known, err)
	}
	now := time.Now().UTC()
	if _, err := sb.producer.PublishComplianceDeadline(ctx, &custosv1.ComplianceDeadline{
		Meta:     &custosv1.Meta{EventId: "deadline-1", Time: timestamppb.Now(), Tenant: "t1", DataClass: "critical"},
		Deadline: "end_of_month", Due: timestamppb.New(now)}); err != nil {
		t.Fatal(err)
	}
	sn2 := sb.waitCommitted(snapshot.JobID("deadline-1"))
	for r, data := range after {
		atT[r] = data
	}
	out2, _ := sb.restoreSnapshot(sn2.ID)
	want2 := map[string]string{}
	for r, data := range atT {
		c, k, _ := strings.Cut(r, "/")
		want2[restore.Path(out2, "t1", c, k)] = data
	}
	sameTree(t, "second point-in-time snapshot", want2, readTree(t, out2))

	// An empty class: an empty snapshot, which RPO counts as a backup of the class.
	empty := sb.waitCommitted(func() string {
		if _, err := sb.producer.PublishScheduleTick(ctx, scheduleTick("tick-empty", "important", now)); err != nil {
			t.Fatal(err)
		}
		return snapshot.JobID("tick-empty")
	}())
	if empty.Records != 0 || empty.Partial || empty.Class != "important" {
		t.Fatalf("empty class snapshot: %+v", empty)
	}
	snaps, err := sb.store.List(ctx, "important")
	if err != nil {
		t.Fatal(err)
	}
	if recs := rpo.WithSnapshots(nil, snaps); len(recs) != 1 || recs[0].Class != "important" || recs[0].Committed.IsZero() {
		t.Fatalf("RPO sees %+v, want one backup of class important", recs)
	}
	// Each task ran once, on whichever worker took it: the redelivered tick ran none again.
	if s1, s2 := w1.Stats().SnapshotTasks, w2.Stats().SnapshotTasks; s1+s2 != int64(3+3+len(empty.Tasks)) {
		t.Errorf("workers made %d + %d tasks durable, want %d", s1, s2, 3+3+len(empty.Tasks))
	}
}

// TestPointInTimeSnapshotOfOneCustomer: a tick naming a customer commits a partial snapshot of
// that customer only.
func TestPointInTimeSnapshotOfOneCustomer(t *testing.T) {
	sb := setupPointInTime(t)
	sb.startEventFed()
	ctx := context.Background()
	for i, c := range []string{"a", "b"} {
		if _, err := sb.producer.PublishPostTransaction(ctx, postTx(fmt.Sprintf("one-%d", i), c, "critical", "k", []byte("data of "+c))); err != nil {
			t.Fatal(err)
		}
	}
	sb.waitSettled()
	tick := scheduleTick("tick-one", "critical", time.Now())
	tick.Meta.CustomerId = "a"
	if _, err := sb.producer.PublishScheduleTick(ctx, tick); err != nil {
		t.Fatal(err)
	}
	sn := sb.waitCommitted(snapshot.JobID("tick-one"))
	if !sn.Partial || sn.Records != 1 {
		t.Fatalf("snapshot of one customer: partial %v, %d records; want partial, 1", sn.Partial, sn.Records)
	}
	out, _ := sb.restoreSnapshot(sn.ID)
	sameTree(t, "one customer", map[string]string{restore.Path(out, "t1", "a", "k"): "data of a"}, readTree(t, out))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// relTree is readTree with paths relative to dir, to compare two restored trees.
func relTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for p, v := range readTree(t, dir) {
		out[strings.TrimPrefix(p, dir)] = v
	}
	return out
}
