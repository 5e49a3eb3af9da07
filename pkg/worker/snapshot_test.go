package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/internal/pgtest"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/postgres"
	"github.com/custos-dev/custos/pkg/target"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// pgFixture is a real PostgreSQL table that a "critical" class is backed up from.
type pgFixture struct {
	t    *testing.T
	conn *pgx.Conn
	src  *postgres.Source
}

func newPGFixture(t *testing.T) *pgFixture {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.StartDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE TABLE items (
		customer_id text NOT NULL, key text NOT NULL, value text NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
		deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (customer_id, key))`); err != nil {
		t.Fatal(err)
	}
	src, err := postgres.New(postgres.Config{DSN: dsn, InFlightWait: time.Second, Classes: map[string]postgres.Class{
		"critical": {Tenant: "acme", Tables: []postgres.Table{{Name: "items", Table: "items", CustomerColumn: "customer_id",
			KeyColumns: []string{"key"}, ChangeColumn: "updated_at", DeletedColumn: "deleted"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &pgFixture{t: t, conn: conn, src: src}
}

func (f *pgFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.conn.Exec(context.Background(), sql, args...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *pgFixture) put(customer, key, value string) {
	f.exec(`INSERT INTO items (customer_id, key, value) VALUES ($1, $2, $3)
		ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value, updated_at = clock_timestamp(), deleted = false`,
		customer, key, value)
}

// state is the source's content now, as restore would write it: path → bytes. It reads a full
// snapshot straight from the source, so it is what the source says the class holds.
func (f *pgFixture) state(out string) map[string]string {
	f.t.Helper()
	ctx := context.Background()
	sn, err := f.src.Snapshot(ctx, source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		f.t.Fatal(err)
	}
	defer sn.Close()
	got := map[string]string{}
	for {
		rec, err := sn.Next(ctx)
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			f.t.Fatal(err)
		}
		got[restore.Path(out, rec.Tenant, rec.CustomerID, rec.Key)] = string(rec.Data)
	}
}

// readTree returns every regular file under dir: path → bytes.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		got[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func sameTree(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s missing from the restore", what, p)
		} else if g != w {
			t.Errorf("%s: %s restored as %q, source had %q", what, p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s restored but not in the source", what, p)
		}
	}
}

// snapBundle adds snapshots from a PostgreSQL source to a worker bundle.
type snapBundle struct {
	*bundle
	pg      *pgFixture
	store   *snapshot.Store
	records *snapshot.Records
}

func setupSnapshots(t *testing.T, tweak ...func(*Config)) *snapBundle {
	t.Helper()
	b := setup(t, append([]func(*Config){func(c *Config) {
		cl := c.Classes["critical"]
		cl.SnapshotTasks = 3
		c.Classes["critical"] = cl
		c.CommitInterval = 200 * time.Millisecond
		c.PackMaxItems = 7 // several packs per task
	}}, tweak...)...)
	sb := &snapBundle{bundle: b, pg: newPGFixture(t)}
	var err error
	if sb.store, err = snapshot.Open(context.Background(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if sb.records, err = snapshot.OpenRecords(context.Background(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	return sb
}

func (sb *snapBundle) deps() Deps {
	return Deps{JS: sb.ns.JS, Keys: sb.keys, Pseudonyms: sb.kms, Index: sb.index, Repairs: sb.repairs,
		Snapshots: sb.store, Records: sb.records, Sources: map[string]source.Source{"critical": sb.pg.src}}
}

func (sb *snapBundle) start(cfg Config) *Worker {
	sb.t.Helper()
	w, err := New(sb.deps(), cfg)
	if err != nil {
		sb.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		sb.t.Fatal(err)
	}
	sb.t.Cleanup(func() { w.Stop(context.Background()) })
	return w
}

// tick publishes a schedule tick and returns the id of the job it plans.
func (sb *snapBundle) tick(id string, method source.Method) string {
	sb.t.Helper()
	_, err := sb.producer.PublishScheduleTick(context.Background(), &custosv1.ScheduleTick{
		Meta:     &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "acme", DataClass: "critical"},
		Schedule: "daily", Method: string(method)})
	if err != nil {
		sb.t.Fatal(err)
	}
	return snapshot.JobID(id)
}

func (sb *snapBundle) waitCommitted(id string) snapshot.Snapshot {
	sb.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if sn, err := sb.store.Get(context.Background(), id); err == nil {
			return sn
		}
		if j, err := sb.store.Job(context.Background(), id); err == nil && j.Failed != "" {
			sb.t.Fatalf("snapshot %s failed: %s", id, j.Failed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sb.t.Fatalf("snapshot %s not committed in time", id)
	return snapshot.Snapshot{}
}

func (sb *snapBundle) restoreSnapshot(id string) (string, restore.Report) {
	sb.t.Helper()
	ctx := context.Background()
	chain, err := sb.store.Chain(ctx, id)
	if err != nil {
		sb.t.Fatal(err)
	}
	out := sb.t.TempDir()
	r := &restore.Restorer{Index: sb.index, Targets: target.Readers(sb.targets), Keys: sb.keys, Pseudonyms: sb.kms}
	rep, err := r.Snapshot(ctx, chain, "", restore.Options{Out: out})
	if err != nil {
		sb.t.Fatal(err)
	}
	if !rep.OK() {
		sb.t.Fatalf("restore of %s: %v", id, rep.Failures)
	}
	return out, rep
}

// TestSnapshotFullAndIncremental is the acceptance check of issue 4 item 5: a full snapshot and
// incrementals of a real PostgreSQL table restore to exactly the source state at each snapshot,
// unchanged records are not uploaded again, and two workers share the tasks.
func TestSnapshotFullAndIncremental(t *testing.T) {
	sb := setupSnapshots(t)
	for c := range 20 {
		for k := range 3 {
			sb.pg.put(fmt.Sprintf("c-%02d", c), fmt.Sprintf("k%d", k), fmt.Sprintf("v1-%d-%d", c, k))
		}
	}
	w1, w2 := sb.start(sb.cfg), sb.start(sb.cfg)

	type point struct {
		id   string
		want map[string]string
	}
	var points []point
	check := func(p point) {
		t.Helper()
		out, _ := sb.restoreSnapshot(p.id)
		want := map[string]string{}
		for path, v := range p.want {
			rel, _ := filepath.Rel("/want", path)
			want[filepath.Join(out, rel)] = v
		}
		sameTree(t, "snapshot "+p.id, want, readTree(t, out))
	}

	full := sb.waitCommitted(sb.tick("tick-1", source.Full))
	points = append(points, point{full.ID, sb.pg.state("/want")})
	if full.Method != source.Full || len(full.Tasks) != 3 || full.Records != 60 || full.Uploaded != 60 || full.Reused != 0 {
		t.Fatalf("full snapshot: method %s, %d tasks, %d records, %d uploaded, %d reused; want full, 3, 60, 60, 0",
			full.Method, len(full.Tasks), full.Records, full.Uploaded, full.Reused)
	}

	// Change 5 records, add 3, delete 2 (soft): the incremental stores the 8 new versions only.
	for c := range 5 {
		sb.pg.put(fmt.Sprintf("c-%02d", c), "k0", fmt.Sprintf("v2-%d", c))
	}
	for c := range 3 {
		sb.pg.put(fmt.Sprintf("c-new-%d", c), "k0", "fresh")
	}
	sb.pg.exec(`UPDATE items SET deleted = true, updated_at = clock_timestamp() WHERE customer_id IN ('c-10', 'c-11') AND key = 'k2'`)
	inc := sb.waitCommitted(sb.tick("tick-2", source.Incremental))
	points = append(points, point{inc.ID, sb.pg.state("/want")})
	var tombstones int64
	for _, r := range inc.Tasks {
		tombstones += r.Tombstones
	}
	if inc.Method != source.Incremental || inc.Base != full.ID || inc.Uploaded != 8 || tombstones != 2 {
		t.Fatalf("incremental: method %s base %s, %d uploaded, %d tombstones; want incremental on %s, 8, 2",
			inc.Method, inc.Base, inc.Uploaded, tombstones, full.ID)
	}

	// A second incremental with one change, then a full: the full lists every record but uploads
	// only the one that changed since.
	sb.pg.put("c-15", "k1", "v3")
	inc2 := sb.waitCommitted(sb.tick("tick-3", source.Incremental))
	points = append(points, point{inc2.ID, sb.pg.state("/want")})
	if inc2.Base != inc.ID || inc2.Uploaded != 1 {
		t.Fatalf("second incremental: base %s, %d uploaded; want %s, 1", inc2.Base, inc2.Uploaded, inc.ID)
	}
	sb.pg.put("c-16", "k1", "v3")
	sb.pg.exec(`DELETE FROM items WHERE customer_id = 'c-17'`) // a hard delete: only a full sees it
	full2 := sb.waitCommitted(sb.tick("tick-4", source.Full))
	points = append(points, point{full2.ID, sb.pg.state("/want")})
	if full2.Records != 58 || full2.Uploaded != 1 || full2.Reused != 57 {
		t.Fatalf("second full: %d records, %d uploaded, %d reused; want 58, 1, 57", full2.Records, full2.Uploaded, full2.Reused)
	}

	for _, p := range points {
		check(p)
	}
	// Retention keeps what a snapshot lists: every pack holding one of its items is named.
	for _, sn := range []snapshot.Snapshot{full, full2} {
		named := map[string]bool{}
		for _, r := range sn.Tasks {
			for _, p := range r.Packs {
				named[p] = true
			}
		}
		if len(named) == 0 {
			t.Errorf("snapshot %s names no packs", sn.ID)
		}
		if sn.ID == full2.ID {
			// Its items are nearly all reused from the first full, so it names those packs.
			for _, r := range full.Tasks {
				hit := false
				for _, p := range r.Packs {
					hit = hit || named[p]
				}
				if !hit {
					t.Errorf("second full names none of the packs of task %d of the first", r.Task)
				}
			}
		}
	}
	if s1, s2 := w1.Stats().SnapshotTasks, w2.Stats().SnapshotTasks; s1+s2 < 4*3 {
		t.Errorf("workers made %d + %d tasks durable, want at least 12", s1, s2)
	}
	head, err := sb.store.Head(context.Background(), "critical")
	if err != nil || head.ID != full2.ID {
		t.Errorf("head = %v, %v; want %s", head.ID, err, full2.ID)
	}
	// A redelivered trigger plans the same job and changes nothing.
	sb.tick("tick-4", source.Full)
	time.Sleep(300 * time.Millisecond)
	if list, _ := sb.store.List(context.Background(), "critical"); len(list) != 4 {
		t.Errorf("%d snapshots after a duplicate trigger, want 4", len(list))
	}
}

// TestSnapshotDedupCacheEvictions: with room for two customers' dedup-cache entries, or for ten
// entries, a task writes the cache back and empties it over and over, both when the next batch's
// fetched entries would overfill it and while records are added. Nothing fetched before an
// eviction is used after it, so a second full snapshot still finds every unchanged record,
// uploads only the changed one, and restores.
func TestSnapshotDedupCacheEvictions(t *testing.T) {
	t.Run("customers", func(t *testing.T) { dedupCacheEvictions(t, func(c *Config) { c.testMaxCachedShards = 2 }) })
	t.Run("entries", func(t *testing.T) { dedupCacheEvictions(t, func(c *Config) { c.testMaxCachedEntries = 10 }) })
}

func dedupCacheEvictions(t *testing.T, bound func(*Config)) {
	sb := setupSnapshots(t, bound)
	// 900 records in 3 tasks: each task reads more than one batch (readAhead), so a batch's
	// shards are fetched while the task evicts for the batch before.
	sb.pg.exec(`INSERT INTO items (customer_id, key, value)
		SELECT 'c-' || lpad(c::text, 3, '0'), 'k' || k, 'v1-' || c || '-' || k
		FROM generate_series(0, 149) AS c, generate_series(0, 5) AS k`)
	sb.start(sb.cfg)
	full := sb.waitCommitted(sb.tick("tick-evict-1", source.Full))
	if full.Uploaded != 900 {
		t.Fatalf("first full uploaded %d, want 900", full.Uploaded)
	}
	sb.pg.put("c-007", "k1", "v2")
	full2 := sb.waitCommitted(sb.tick("tick-evict-2", source.Full))
	if full2.Records != 900 || full2.Uploaded != 1 || full2.Reused != 899 {
		t.Fatalf("second full: %d records, %d uploaded, %d reused; want 900, 1, 899", full2.Records, full2.Uploaded, full2.Reused)
	}
	sb.restoresSource("after evictions", full2, 900)
}

// TestSnapshotTaskCrash: a worker that dies after writing a task's manifest but before recording
// its result leaves the task to another worker; the job still ends in one complete snapshot that
// restores exactly.
func TestSnapshotTaskCrash(t *testing.T) {
	sb := setupSnapshots(t)
	sb.putRows(12)
	id := sb.crashBeforeTaskDone("tick-crash")
	if _, err := sb.store.Get(context.Background(), id); err == nil {
		t.Fatal("snapshot committed while a task had no result")
	}
	sb.start(sb.cfg) // the survivor
	sb.restoresSource("after crash", sb.waitCommitted(id), 12)
	if list, _ := sb.store.List(context.Background(), "critical"); len(list) != 1 {
		t.Errorf("%d snapshots, want exactly 1", len(list))
	}
}

// TestSnapshotTaskCrashThenChange: a task whose manifest was written by a worker that died
// before recording the result is run again after the rows changed. The second run reads other
// bytes, so its manifest differs from the one already in the targets; the job must still commit,
// and every record restores as one of its two versions.
func TestSnapshotTaskCrashThenChange(t *testing.T) {
	sb := setupSnapshots(t)
	sb.putRows(12)
	before := sb.pg.state("/s")
	id := sb.crashBeforeTaskDone("tick-crash-change")
	for c := range 12 {
		sb.pg.put(fmt.Sprintf("c-%02d", c), "k", fmt.Sprintf("changed-%d", c))
	}
	after := sb.pg.state("/s")
	sb.start(sb.cfg)
	sn := sb.waitCommitted(id)
	out, rep := sb.restoreSnapshot(sn.ID)
	got := readTree(t, out)
	if len(got) != 12 || rep.Records != 12 {
		t.Fatalf("restored %d files, %d records; want 12", len(got), rep.Records)
	}
	for p, v := range got {
		rel, _ := filepath.Rel(out, p)
		k := filepath.Join("/s", rel)
		if v != before[k] && v != after[k] {
			t.Errorf("%s restored as %q: neither %q nor %q", rel, v, before[k], after[k])
		}
	}
}

// crashBeforeTaskDone starts a worker that dies after writing a task's manifest and before
// recording the task's result, triggers a full snapshot with the event id, stops the worker
// once it has died so, and returns the snapshot's id.
func (sb *snapBundle) crashBeforeTaskDone(eventID string) string {
	sb.t.Helper()
	var crashed atomic.Int32
	crashCfg := sb.cfg
	crashCfg.testBeforeTaskDone = func(job string, task int) error {
		crashed.Add(1)
		return errors.New("simulated crash before the task result")
	}
	crasher := sb.start(crashCfg)
	id := sb.tick(eventID, source.Full)
	deadline := time.Now().Add(20 * time.Second)
	for crashed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if crashed.Load() == 0 {
		sb.t.Fatal("the crashing worker never reached a task")
	}
	crasher.Stop(context.Background())
	return id
}

// putRows puts n customers with one record each into the source.
func (sb *snapBundle) putRows(n int) {
	for c := range n {
		sb.pg.put(fmt.Sprintf("c-%02d", c), "k", fmt.Sprintf("v-%d", c))
	}
}

// A pack that fails to be written while the task seals the next one fails the task; the task is
// run again and the snapshot restores exactly, with no pack's items listed before it was
// durable (the written packs of the failed run are reused or rewritten, never half-listed).
func TestSnapshotPackWriteFails(t *testing.T) {
	sb := setupSnapshots(t)
	sb.putRows(40)
	var writes atomic.Int32
	cfg := sb.cfg
	cfg.testAfterIndex = func(string) error {
		if n := writes.Add(1); n == 2 || n == 5 {
			return errors.New("simulated target failure")
		}
		return nil
	}
	sb.start(cfg)
	id := sb.tick("tick-fail", source.Full)
	sn := sb.waitCommitted(id)
	if writes.Load() < 5 {
		t.Fatalf("%d pack writes: the failures were not reached", writes.Load())
	}
	sb.restoresSource("after failed pack writes", sn, 40)
}

// restoresSource restores snapshot sn and checks that it gives the source's current rows, n
// records.
func (sb *snapBundle) restoresSource(what string, sn snapshot.Snapshot, n int64) {
	sb.t.Helper()
	want := sb.pg.state("/want")
	out, rep := sb.restoreSnapshot(sn.ID)
	wantOut := map[string]string{}
	for p, v := range want {
		rel, _ := filepath.Rel("/want", p)
		wantOut[filepath.Join(out, rel)] = v
	}
	sameTree(sb.t, what, wantOut, readTree(sb.t, out))
	if int64(rep.Records) != n || int64(sn.Records) != n {
		sb.t.Errorf("%s: restored %d records, snapshot lists %d; want %d", what, rep.Records, sn.Records, n)
	}
}

// A running task reports its progress (custos jobs shows it) and removes the report once its
// result is recorded.
func TestSnapshotTaskProgress(t *testing.T) {
	sb := setupSnapshots(t)
	sb.putRows(30)
	var seen atomic.Int64
	cfg := sb.cfg
	cfg.testBeforeTaskDone = func(job string, task int) error {
		ps, err := sb.store.Progress(context.Background(), job)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Task == task && p.Records > 0 && p.Bytes > 0 {
				seen.Add(p.Records)
			}
		}
		return nil
	}
	sb.start(cfg)
	id := sb.tick("tick-progress", source.Full)
	sn := sb.waitCommitted(id)
	if seen.Load() != sn.Records {
		t.Fatalf("progress reports before the results counted %d records, the snapshot %d", seen.Load(), sn.Records)
	}
	if ps, err := sb.store.Progress(context.Background(), id); err != nil || len(ps) != 0 {
		t.Fatalf("progress left after the tasks were durable: %v, %v", ps, err)
	}
}
