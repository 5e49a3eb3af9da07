// Package snapshot runs distributed snapshots from a real PostgreSQL source with real worker
// processes, and kills one of them in the middle of a task.
package snapshot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/postgres"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

const (
	customers  = 300
	keysPer    = 20
	rows       = customers * keysPer
	valueBytes = 1536 // random, base64: 2 KiB of text per row, ~12 MiB in all
	tasks      = 6
	tenant     = "acme"
)

// The class reads one table; the test reads it the same way to know what a restore must give.
var class = config.SourceClass{Tenant: tenant, Tables: []config.SourceTable{{
	Name: "items", Table: "items", CustomerColumn: "customer_id", KeyColumns: []string{"key"},
	ChangeColumn: "updated_at", DeletedColumn: "deleted",
}}}

// TestWorkerKilledDuringDistributedFullSnapshot is the acceptance check "a worker killed during a
// distributed full backup still ends in one complete snapshot": two worker processes share the
// tasks of a full snapshot of a real PostgreSQL table; one is SIGKILLed while both hold a task
// whose result is not recorded; the survivor finishes the job. The job commits exactly one
// snapshot that lists every task and every row, restores byte for byte to the table's content,
// and every object under a final name in every target is complete and accounted for.
func TestWorkerKilledDuringDistributedFullSnapshot(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dsn := startPostgres(t)
	want := fillTable(t, dsn)

	stack, err := harness.Start(t.TempDir(), harness.Options{
		// One task at a time per worker: two tasks in progress with two workers alive means
		// each holds one.
		AckWait: 2 * time.Second, PackMaxBytes: 256 << 10, TaskConcurrency: 1,
		Postgres: &harness.PostgresSource{DSN: dsn, Class: class, SnapshotTasks: tasks},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	// Open first: it creates the key file the workers load, and the snapshot store.
	parts, _, err := stack.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer parts.Close()
	store := parts.Snapshots

	a, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Kill()
	b, err := stack.StartWorker(bin, "worker-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Kill()
	dumpLogs := func() {
		t.Helper()
		if t.Failed() {
			t.Logf("worker-a log:\n%s\nworker-b log:\n%s", readLog(a.Log), readLog(b.Log))
		}
	}
	defer dumpLogs()

	p, err := producer.New(stack.JS, "urn:test:snapshot")
	if err != nil {
		t.Fatal(err)
	}
	eventID := "tick-full-1"
	if _, err := p.PublishScheduleTick(ctx, &custosv1.ScheduleTick{
		Meta:     &custosv1.Meta{EventId: eventID, Time: timestamppb.Now(), Tenant: tenant, DataClass: "critical"},
		Schedule: "daily", Method: string(source.Full)}); err != nil {
		t.Fatal(err)
	}
	id := snapshot.JobID(eventID)
	started := time.Now()

	// Kill worker-a once a task result is recorded and both workers hold a task that has none:
	// whichever worker is killed then dies in the middle of a task, with tasks left to do.
	q := &taskQueue{js: stack.JS, store: store, job: id}
	var atKill queueState
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no moment with a recorded result and two tasks in progress within 2m (last: %+v)", atKill)
		}
		if _, err := store.Get(ctx, id); err == nil {
			t.Fatalf("snapshot committed before a worker could be killed mid-task (last: %+v): make the table bigger", atKill)
		}
		st, err := q.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		atKill = st
		if st.planned && st.results >= 1 && st.ackPending == 2 && st.unfinished-st.pending >= 2 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	a.Kill()
	t.Logf("killed worker-a %v after the trigger: %d of %d task results recorded, %d tasks in progress, %d not delivered yet",
		time.Since(started).Round(time.Millisecond), atKill.results, tasks, atKill.ackPending, atKill.pending)
	if atKill.results >= tasks {
		t.Fatalf("every task was done when the worker was killed")
	}

	// The survivor finishes the job, including the task worker-a held once its ack wait passes.
	var sn snapshot.Snapshot
	redelivered := 0
	deadline = time.Now().Add(2 * time.Minute)
	for {
		if time.Now().After(deadline) {
			st, _ := q.state(ctx)
			t.Fatalf("snapshot %s not committed within 2m after the kill (%+v)", id, st)
		}
		if sn, err = store.Get(ctx, id); err == nil {
			break
		}
		if j, err := store.Job(ctx, id); err == nil && j.Failed != "" {
			t.Fatalf("snapshot job failed: %s", j.Failed)
		}
		if st, err := q.state(ctx); err == nil {
			redelivered = max(redelivered, st.redelivered)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("snapshot committed %v after the trigger (%d redelivered task seen in progress): %d records, %d uploaded, %d reused, %d bytes stored",
		time.Since(started).Round(time.Millisecond), redelivered, sn.Records, sn.Uploaded, sn.Reused, sn.Stored)
	if err := b.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker-b did not stop cleanly: %v", err)
	}

	// Exactly one committed snapshot of the class: the job's, full, with every task once.
	list, err := store.List(ctx, "critical")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("%d committed snapshots of the class, want exactly 1 (%s)", len(list), id)
	}
	j, err := store.Job(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Tasks) != tasks || j.Failed != "" {
		t.Fatalf("job planned %d tasks (failed: %q), want %d", len(j.Tasks), j.Failed, tasks)
	}
	if sn.Method != source.Full || sn.Partial || len(sn.Tasks) != tasks {
		t.Fatalf("snapshot: method %s, partial %v, %d task results; want full, not partial, %d", sn.Method, sn.Partial, len(sn.Tasks), tasks)
	}
	var sum int64
	for i, r := range sn.Tasks {
		if r.Task != i || r.Job != id {
			t.Fatalf("task result %d is task %d of job %s", i, r.Task, r.Job)
		}
		if r.Tombstones != 0 || r.Skipped != 0 {
			t.Errorf("task %d: %d tombstones, %d skipped; want none", i, r.Tombstones, r.Skipped)
		}
		if len(r.Targets) != len(stack.Targets) {
			t.Errorf("task %d: manifest in %v, want every target", i, r.Targets)
		}
		sum += r.Records
	}
	if sn.Records != rows || sum != rows {
		t.Fatalf("snapshot lists %d records (tasks sum to %d), the table has %d rows", sn.Records, sum, rows)
	}
	for _, r := range sn.Tasks {
		if r.Reused > 0 { // a fresh class: only a killed run of this job can have left its cache
			t.Logf("task %d reused %d of its %d records (uploaded %d): the killed worker had saved (some of) its dedup cache", r.Task, r.Reused, r.Records, r.Uploaded)
		}
	}
	if sn.Uploaded+sn.Reused != sn.Records {
		t.Errorf("%d uploaded + %d reused != %d records", sn.Uploaded, sn.Reused, sn.Records)
	}
	if head, err := store.Head(ctx, "critical"); err != nil || head.ID != id {
		t.Errorf("head of the class = %q, %v; want %s", head.ID, err, id)
	}

	// A restore of the snapshot is byte for byte the table's content.
	chain, err := store.Chain(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	readers := target.Readers(parts.Targets)
	out := t.TempDir()
	r := &restore.Restorer{Index: parts.Index, Targets: readers, Keys: parts.Keys, Pseudonyms: parts.KMS}
	rep, err := r.Snapshot(ctx, chain, "", restore.Options{Out: out})
	if err != nil || !rep.OK() {
		t.Fatalf("restore: %v, failures %v", err, rep.Failures)
	}
	if rep.Records != rows {
		t.Errorf("restored %d records, want %d", rep.Records, rows)
	}
	got := readTree(t, out)
	sameTree(t, sourceState(t, dsn, out), got)
	// And, independently of the source's reader, each restored row carries the value written.
	for k, v := range want {
		c, key, _ := strings.Cut(k, "/")
		var row struct {
			CustomerID string `json:"customer_id"`
			Key        string `json:"key"`
			Value      string `json:"value"`
			Deleted    bool   `json:"deleted"`
		}
		p := restore.Path(out, tenant, c, "items/"+key)
		if err := json.Unmarshal([]byte(got[p]), &row); err != nil {
			t.Fatalf("restored %s: %v", p, err)
		}
		if row.CustomerID != c || row.Key != key || row.Value != v || row.Deleted {
			t.Fatalf("restored %s holds another row", p)
		}
	}

	// Nothing partial or unaccounted for under a final name in any target.
	checkTargets(t, ctx, parts, stack.Targets, sn)
	t.Logf("total %v", time.Since(started).Round(time.Millisecond))
}

// startPostgres starts a throwaway PostgreSQL server for the test and returns a fresh
// database's DSN. A missing PostgreSQL fails the test with how to install it.
func startPostgres(t *testing.T) string {
	t.Helper()
	pg, err := devstack.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pg.Stop()
		if t.Failed() {
			t.Logf("postgres output:\n%s", pg.Output())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := pg.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// fillTable creates the table and its rows: every customer's keys with random values. It
// returns "customer/key" → value.
func fillTable(t *testing.T, dsn string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE items (
		customer_id text NOT NULL, key text NOT NULL, value text NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
		deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (customer_id, key))`); err != nil {
		t.Fatal(err)
	}
	want := make(map[string]string, rows)
	data := make([][]any, 0, rows)
	buf := make([]byte, valueBytes)
	for c := range customers {
		for k := range keysPer {
			rand.Read(buf)
			cust, key, v := fmt.Sprintf("cust-%03d", c), fmt.Sprintf("k%02d", k), base64.StdEncoding.EncodeToString(buf)
			want[cust+"/"+key] = v
			data = append(data, []any{cust, key, v})
		}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"customer_id", "key", "value"}, pgx.CopyFromRows(data))
	if err != nil || n != rows {
		t.Fatalf("fill table: %d rows, %v", n, err)
	}
	return want
}

// sourceState reads a full snapshot of the class straight from the source, the way the workers
// read it: path under out → bytes, what a restore must write.
func sourceState(t *testing.T, dsn, out string) map[string]string {
	t.Helper()
	ctx := context.Background()
	tables := make([]postgres.Table, len(class.Tables))
	for i, tb := range class.Tables {
		tables[i] = postgres.Table(tb)
	}
	src, err := postgres.New(postgres.Config{DSN: dsn, Classes: map[string]postgres.Class{
		"critical": {Tenant: class.Tenant, Tables: tables}}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sn, err := src.Snapshot(ctx, source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	state := map[string]string{}
	for {
		rec, err := sn.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		state[restore.Path(out, rec.Tenant, rec.CustomerID, rec.Key)] = string(rec.Data)
	}
	if len(state) != rows {
		t.Fatalf("the source lists %d records, the table has %d rows", len(state), rows)
	}
	return state
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

func sameTree(t *testing.T, want, got map[string]string) {
	t.Helper()
	bad := 0
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing from the restore", p)
			bad++
		} else if g != w {
			t.Errorf("%s restored with %d bytes differing from the source's %d", p, len(g), len(w))
			bad++
		}
		if bad > 10 {
			t.FailNow()
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s restored but not in the source", p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// checkTargets checks every object under a final name in every target directory: each pack and
// pack manifest is a committed pack of the index with the size and SHA-256 the index records,
// present in every target the index lists; each snapshot manifest is a task manifest of the
// snapshot with the size and SHA-256 its result records, present in every target the result
// lists, and names only packs the result lists. Every item the snapshot's manifests name is in
// an indexed pack, and every object under a final name opens or has the checksum recorded for
// it.
func checkTargets(t *testing.T, ctx context.Context, parts *config.Parts, roots []string, sn snapshot.Snapshot) {
	t.Helper()
	dirs := map[string]string{} // target name → root directory
	for _, root := range roots {
		dirs["fs:"+filepath.Base(root)] = root
	}
	for _, tg := range parts.Targets {
		if dirs[tg.Name()] == "" {
			t.Fatalf("target %s has no directory among %v", tg.Name(), roots)
		}
	}
	opener := repository.NewOpener(parts.KMS, parts.KMS.Fingerprint())
	packs, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expect := map[string]map[string]object{} // root → final name → what it must be
	add := func(name string, o object, targets []string) {
		t.Helper()
		if len(targets) == 0 {
			t.Errorf("%s is in no target", name)
		}
		for _, tn := range targets {
			root, ok := dirs[tn]
			if !ok {
				t.Fatalf("%s is said to be in unknown target %s", name, tn)
			}
			if expect[root] == nil {
				expect[root] = map[string]object{}
			}
			expect[root][name] = o
		}
	}
	indexed := map[string]bool{} // pack/item
	for _, pk := range packs {
		if pk.Class != "critical" {
			t.Errorf("pack %s of class %s: only the snapshot wrote packs", pk.Pack, pk.Class)
		}
		add(repository.PackName(pk.Pack), object{size: pk.Size, sha: pk.SHA256}, pk.Targets)
		add(repository.ManifestName(pk.Pack), object{pack: pk}, pk.Targets)
	}
	for _, r := range sn.Tasks {
		add(r.Manifest.Name, object{size: r.Manifest.Size, sha: r.Manifest.SHA256, task: &r}, r.Targets)
	}
	named := map[string]bool{} // pack/item the snapshot's manifests name
	checked := 0
	for _, root := range roots {
		leftovers, _ := os.ReadDir(filepath.Join(root, ".tmp"))
		if len(leftovers) > 0 {
			t.Logf("%s: %d staging files left in .tmp (not under a final name)", filepath.Base(root), len(leftovers))
		}
		found := map[string]bool{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				if rel == ".tmp" {
					return filepath.SkipDir
				}
				return nil
			}
			name := filepath.ToSlash(rel)
			o, ok := expect[root][name]
			if !ok && name == repository.SnapshotRecordName(sn.ID) {
				// The snapshot's own record, written before the broker committed it.
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if rec, err := opener.SnapshotRecord(ctx, sn.ID, b); err != nil || rec.ID != sn.ID || len(rec.Tasks) != len(sn.Tasks) {
					t.Errorf("%s: snapshot record %s = %+v, %v", filepath.Base(root), name, rec.ID, err)
				}
				checked++
				return nil
			}
			if !ok {
				if top, _, _ := strings.Cut(name, "/"); top == "packs" || top == "manifests" || top == "snapshots" {
					t.Errorf("%s: %s is stored under a final name but belongs to no indexed pack or task result", filepath.Base(root), name)
				}
				return nil
			}
			found[name] = true
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			checked++
			switch {
			case o.pack.Pack != "":
				m, err := opener.Manifest(ctx, o.pack.Pack, b)
				if err != nil {
					t.Errorf("%s: %s does not open: %v", filepath.Base(root), name, err)
					return nil
				}
				if m.Pack != o.pack.Pack || m.Size != o.pack.Size || m.SHA256 != o.pack.SHA256 || len(m.Items) != o.pack.Items {
					t.Errorf("%s: %s describes another pack than the index records", filepath.Base(root), name)
				}
				for _, it := range m.Items {
					indexed[m.Pack+"/"+it.ID] = true
				}
			default:
				s := sha256.Sum256(b)
				if int64(len(b)) != o.size || hex.EncodeToString(s[:]) != o.sha {
					t.Errorf("%s: %s has %d bytes, SHA-256 %x; want %d, %s", filepath.Base(root), name, len(b), s, o.size, o.sha)
					return nil
				}
				if o.task != nil {
					m, err := opener.TaskManifest(ctx, sn.ID, o.task.Task, b)
					if err != nil {
						t.Errorf("%s: %s does not open: %v", filepath.Base(root), name, err)
						return nil
					}
					if int64(len(m.Entries)) != o.task.Records {
						t.Errorf("%s: %s lists %d records, its result %d", filepath.Base(root), name, len(m.Entries), o.task.Records)
					}
					listed := map[string]bool{}
					for _, id := range o.task.Packs {
						listed[id] = true
					}
					for _, e := range m.Entries {
						named[e.Pack+"/"+e.Item.ID] = true
						if !listed[e.Pack] {
							t.Errorf("task %d names pack %s, which its result does not list (retention would not keep it)", o.task.Task, e.Pack)
							return nil
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for name := range expect[root] {
			if !found[name] {
				t.Errorf("%s: %s is missing", filepath.Base(root), name)
			}
		}
	}
	if len(named) != rows {
		t.Errorf("the snapshot's manifests name %d items, want %d", len(named), rows)
	}
	// No item indexed but named by no manifest: the re-run of the killed worker's task never
	// reuses its own job's items, so it rebuilds exactly the packs the first run wrote (the same
	// records in the same order give the same item ids, nonces and pack ids) and names them all.
	orphans := 0
	for k := range indexed {
		if !named[k] {
			orphans++
		}
	}
	if orphans > 0 {
		t.Errorf("%d indexed items are named by no task manifest: the re-run did not rebuild the killed run's packs", orphans)
	}
	for k := range named {
		if !indexed[k] {
			t.Errorf("item %s named by a task manifest is in no indexed pack", k)
			break
		}
	}
	t.Logf("%d packs indexed holding %d items; %d objects verified in %d targets", len(packs), len(indexed), checked, len(roots))
}

type object struct {
	size int64
	sha  string
	pack catalog.PackRecord   // set for a pack manifest
	task *snapshot.TaskResult // set for a task manifest
}

// taskQueue observes a job's tasks: results recorded, messages still in the work queue, and the
// shared consumer's deliveries.
type taskQueue struct {
	js    jetstream.JetStream
	store *snapshot.Store
	job   string
}

type queueState struct {
	planned     bool
	results     int // task results recorded
	unfinished  int // task messages of the job still in the queue without a result
	pending     int // messages not delivered yet
	ackPending  int // messages delivered and not acknowledged: tasks in progress
	redelivered int // messages delivered more than once and not acknowledged yet
}

func (q *taskQueue) state(ctx context.Context) (queueState, error) {
	var st queueState
	if _, err := q.store.Job(ctx, q.job); err != nil {
		if errors.Is(err, snapshot.ErrNotFound) {
			return st, nil
		}
		return st, err
	}
	st.planned = true
	rs, err := q.store.Results(ctx, q.job)
	if err != nil {
		return st, err
	}
	st.results = len(rs)
	done := map[int]bool{}
	for _, r := range rs {
		done[r.Task] = true
	}
	cons, err := q.js.Consumer(ctx, snapshot.TaskStream, worker.TaskConsumer)
	if err != nil {
		return st, nil // not created yet
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return st, err
	}
	st.pending, st.ackPending, st.redelivered = int(ci.NumPending), ci.NumAckPending, ci.NumRedelivered
	s, err := q.js.Stream(ctx, snapshot.TaskStream)
	if err != nil {
		return st, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return st, err
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // acknowledged: a work queue drops it
		}
		if err != nil {
			return st, err
		}
		var task snapshot.Task
		if json.Unmarshal(m.Data, &task) == nil && task.Job == q.job && !done[task.Task] {
			st.unfinished++
		}
	}
	return st, nil
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
