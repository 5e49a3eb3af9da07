package worker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/fanout"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Snapshots from sources (docs/design.md section 10). The worker that receives a trigger plans
// the job: it takes the class's cursor, splits the customers into ranges and publishes one task
// per range to CUSTOS_TASKS, then acknowledges the trigger. Every worker takes tasks from that
// work queue; a task reads its range from the source, stores the records that changed (unchanged
// ones point at their earlier item), writes its manifest to the class's targets and records its
// result. Whoever records the last result commits the snapshot; a periodic pass commits jobs
// whose last worker died in between.

// TaskConsumer is the durable consumer of the task queue that all workers share.
const TaskConsumer = "custos-tasks"

// hasSource reports whether scheduled snapshots of class read from a source.
func (w *Worker) hasSource(class string) bool {
	return w.deps.Snapshots != nil && w.deps.Sources[class] != nil
}

// planFor plans the snapshot a trigger asks for and acknowledges the trigger once the plan and
// its tasks are durable. A class without a source gets a point-in-time snapshot of the items its
// events stored (pointintime.go); without a snapshot store the trigger is only logged.
func (w *Worker) planFor(h *heldMsg, ev *event.Event) {
	meta := ev.Meta
	class := meta.GetDataClass()
	if !w.hasSource(class) {
		if w.deps.Snapshots != nil {
			w.planPointInTime(h, ev)
			return
		}
		w.log.Info("scheduled trigger received; snapshots are not enabled", "type", string(ev.Type), "class", class)
		w.finish(h)
		return
	}
	method := source.Incremental
	switch m := ev.Msg.(type) {
	case *custosv1.ScheduleTick:
		if m.GetMethod() == string(source.Full) {
			method = source.Full
		}
	}
	var customers []string
	if c := meta.GetCustomerId(); c != "" {
		customers = []string{c}
	}
	if err := w.plan(h, meta, string(ev.Type), method, customers, false); err != nil {
		w.planFailed(h, err)
		return
	}
	w.finish(h)
}

func (w *Worker) planFailed(h *heldMsg, err error) {
	if errors.Is(err, source.ErrPermanent) {
		w.deadLetter(h, "snapshot cannot be planned: "+err.Error())
		return
	}
	h.retryLater(err)
}

// plan records the job a trigger asks for (or finds the one an earlier delivery recorded) and
// publishes its tasks. customers, when set, limits the job to them (a partial snapshot, always
// full). With hold every object is written under legal hold.
func (w *Worker) plan(h *heldMsg, meta *custosv1.Meta, trigger string, method source.Method, customers []string, hold bool) error {
	ctx, span := w.tracer.Start(h.ctx, "snapshot.plan")
	defer span.End()
	class := meta.GetDataClass()
	store := w.deps.Snapshots
	id := snapshot.JobID(meta.GetEventId())
	span.SetAttributes(attribute.String("custos.snapshot.id", id), attribute.String("custos.class", class))
	h.snapshot = id
	if j, err := store.Job(ctx, id); err == nil {
		// A redelivered trigger: publish again whatever the first delivery may not have.
		return store.Publish(ctx, j)
	} else if !errors.Is(err, snapshot.ErrNotFound) {
		return err
	}
	src := w.deps.Sources[class]
	j := snapshot.Job{ID: id, Class: class, Method: method, Trigger: trigger, Time: w.cfg.Clock().UTC(),
		Hold: hold, Created: w.cfg.Clock().UTC()}
	if len(customers) > 0 {
		// Only the named customers: a range of exactly one id each. A partial snapshot is full
		// for its customers and never the base of an incremental.
		j.Method, j.Partial = source.Full, true
		sort.Strings(customers)
		for _, c := range customers {
			j.Tasks = append(j.Tasks, source.CustomerRange{From: c, To: c + "\x00"})
		}
	}
	if j.Method == source.Incremental {
		head, err := store.Head(ctx, class)
		switch {
		case errors.Is(err, snapshot.ErrNotFound):
			w.log.Info("no complete snapshot of the class yet; taking a full one", "class", class)
			j.Method = source.Full
		case err != nil:
			return err
		default:
			j.Base, j.BaseCursor = head.ID, head.Cursor
		}
	}
	req := source.Request{DataClass: class, Method: j.Method, Cursor: j.BaseCursor}
	if err := req.Validate(); err != nil {
		return err
	}
	// The cursor is taken before any task reads: a write committed later is either read by a
	// task or found by the next incremental, never neither. Sources that cannot give one up front
	// run as a single task, whose snapshot reports it.
	exp, canExport := src.(source.Exporter)
	if canExport && !j.Partial {
		e, err := exp.Export(ctx, req)
		if err != nil {
			return err
		}
		j.NextCursor = e.Cursor()
		_ = e.Close()
	}
	if len(j.Tasks) == 0 {
		j.Tasks = []source.CustomerRange{{}}
		n := w.cfg.Classes[class].SnapshotTasks
		if sp, ok := src.(source.Splitter); ok && canExport && n > 1 {
			ranges, err := sp.Split(ctx, class, n)
			if err != nil {
				return err
			}
			j.Tasks = ranges
		}
	}
	stored, created, err := store.Plan(ctx, j)
	if err != nil {
		return err
	}
	if created {
		w.log.Info("snapshot planned", "snapshot", id, "class", class, "method", string(j.Method), "tasks", len(j.Tasks),
			"base", j.Base, "partial", j.Partial)
	}
	return store.Publish(ctx, stored)
}

// taskLoop takes tasks from the shared queue one at a time while the worker runs.
func (w *Worker) taskLoop(cons jetstream.Consumer) {
	defer w.wg.Done()
	for w.runCtx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if w.runCtx.Err() == nil {
				w.log.Warn("fetch task failed", "err", err)
				sleep(w.runCtx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			w.runTaskMsg(msg)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// runTaskMsg runs one task, heartbeating while it works, and settles its message: ack when the
// task is durable, nak (retry, maybe elsewhere) on failure, and after MaxDeliver deliveries the
// job is marked failed so that it is visibly given up rather than stuck.
func (w *Worker) runTaskMsg(msg jetstream.Msg) {
	var t snapshot.Task
	if err := json.Unmarshal(msg.Data(), &t); err != nil || t.Job == "" {
		w.log.Error("malformed task message dropped", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	md, _ := msg.Metadata()
	var delivered uint64
	if md != nil {
		delivered = md.NumDelivered
	}
	// Read the headers before the heartbeat goroutine touches the message.
	ctx, cancel := context.WithCancel(telemetry.Extract(w.workCtx, msg.Headers()))
	defer cancel()
	l := &lease{msg: msg}
	stop := keepAlive(ctx, l, w.cfg.AckWait/3)
	err := w.runTask(ctx, t)
	stop()
	settle := func(outcome string, f func() error) {
		if _, err := l.settle(f); err != nil {
			w.log.Warn("settle task", "outcome", outcome, "snapshot", t.Job, "task", t.Task, "err", err)
		}
	}
	switch {
	case err == nil:
		settle("ack", msg.Ack)
		w.tryCommit(t.Job)
	case w.workCtx.Err() != nil:
		settle("nak", msg.Nak) // stopping: another worker takes it now
	case delivered >= uint64(w.cfg.MaxDeliver) || errors.Is(err, source.ErrPermanent):
		reason := fmt.Sprintf("task %d failed: %v", t.Task, err)
		w.log.Error("snapshot job failed", "snapshot", t.Job, "task", t.Task, "err", err)
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		ferr := w.deps.Snapshots.Fail(fctx, t.Job, reason)
		fcancel()
		if ferr != nil {
			settle("nak", func() error { return msg.NakWithDelay(retryDelay(delivered)) })
			return
		}
		w.count(func(s *Stats) { s.SnapshotsFailed++ })
		settle("term", msg.Term)
	default:
		w.log.Warn("snapshot task failed; will retry", "snapshot", t.Job, "task", t.Task, "err", err)
		settle("nak", func() error { return msg.NakWithDelay(retryDelay(delivered)) })
	}
}

// tryCommit commits a job if all its tasks are durable; otherwise it leaves it to the worker
// that records the last result (or to the periodic pass).
func (w *Worker) tryCommit(job string) {
	ctx, cancel := context.WithTimeout(w.workCtx, 30*time.Second)
	defer cancel()
	sn, err := w.deps.Snapshots.CommitWith(ctx, job, w.cfg.Clock(), w.writeSnapshotRecord)
	switch {
	case err == nil:
		w.log.Info("snapshot committed", "snapshot", sn.ID, "class", sn.Class, "method", string(sn.Method),
			"records", sn.Records, "uploaded", sn.Uploaded, "reused", sn.Reused)
		w.auditSnapshot(sn) // its backup_commit entry (auditcommit.go)
	case errors.Is(err, snapshot.ErrIncomplete), errors.Is(err, snapshot.ErrFailed):
	default:
		w.log.Warn("snapshot commit failed; will retry", "snapshot", job, "err", err)
	}
}

// commitPending commits every job whose tasks are all durable but whose snapshot is not
// committed: the worker that recorded the last result may have died before committing.
func (w *Worker) commitPending(ctx context.Context) error {
	jobs, err := w.deps.Snapshots.Jobs(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.Failed != "" {
			continue
		}
		if _, err := w.deps.Snapshots.Get(ctx, j.ID); err == nil {
			continue
		}
		w.tryCommit(j.ID)
	}
	return nil
}

// taskRun is the state of one task while it runs.
type taskRun struct {
	w     *Worker
	job   snapshot.Job
	task  int
	res   snapshot.TaskResult
	man   snapshot.Manifest
	items []pack.Item
	refs  []snapshot.Entry // entries of items, filled in when their pack is written
	bytes int
	cache map[string]map[string]snapshot.Known // customer's dedup key (snapshot.CacheKey) → ref → known
	dirty map[string]bool
	// cachedEntries counts the entries in cache, bounded by maxEntries as its customers are
	// bounded by maxShards.
	cachedEntries int
	// evictions counts how often cache was written back and emptied; a prefetch begun before
	// one is not merged (its shards may be older than what was written).
	evictions int
	packOK    map[string]bool
	deks      map[string][]byte
	packs     map[string]bool // every pack the manifest lists
	// pending is the pack being written, whose items are listed once it is durable (settle).
	pending *pendingPack
	// reported is when the task last reported its progress; the first report follows the
	// first batch, so a task is visible as soon as it has read something.
	reported time.Time
}

// runTask runs task t of its job; it returns nil once the task's result is durable.
func (w *Worker) runTask(ctx context.Context, t snapshot.Task) error {
	store := w.deps.Snapshots
	if _, err := store.TaskResult(ctx, t.Job, t.Task); err == nil {
		return nil // done already (a duplicate message)
	}
	j, err := store.Job(ctx, t.Job)
	if err != nil {
		return err
	}
	if j.Failed != "" || t.Task < 0 || t.Task >= len(j.Tasks) {
		return nil // given up, or not a task of this job: nothing to do
	}
	if j.PointInTime {
		return w.runPointInTime(ctx, j, t.Task)
	}
	src := w.deps.Sources[j.Class]
	if src == nil || w.cfg.Classes[j.Class].Targets == nil {
		return fmt.Errorf("%w: this worker has no source or targets for class %q", source.ErrPermanent, j.Class)
	}
	ctx, span := w.tracer.Start(ctx, "snapshot.task", trace.WithAttributes(
		attribute.String("custos.snapshot.id", j.ID), attribute.Int("custos.snapshot.task", t.Task),
		attribute.String("custos.class", j.Class), attribute.String("custos.snapshot.method", string(j.Method))))
	defer span.End()
	r := &taskRun{w: w, job: j, task: t.Task,
		res:   snapshot.TaskResult{Job: j.ID, Task: t.Task},
		man:   snapshot.Manifest{V: 1, Snapshot: j.ID, Class: j.Class, Task: t.Task, Method: string(j.Method)},
		cache: map[string]map[string]snapshot.Known{}, dirty: map[string]bool{}, packOK: map[string]bool{},
		deks: map[string][]byte{}, packs: map[string]bool{}}
	err = r.run(ctx, src)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "task not durable")
		return err
	}
	span.SetAttributes(attribute.Int64("custos.snapshot.records", r.res.Records),
		attribute.Int64("custos.snapshot.uploaded", r.res.Uploaded), attribute.Int64("custos.snapshot.reused", r.res.Reused))
	w.count(func(s *Stats) { s.SnapshotTasks++ })
	return nil
}

func (r *taskRun) run(ctx context.Context, src source.Source) error {
	w, j := r.w, r.job
	sn, err := src.Snapshot(ctx, source.Request{DataClass: j.Class, Method: j.Method, Cursor: j.BaseCursor,
		Range: j.Tasks[r.task]})
	if err != nil {
		return err
	}
	defer sn.Close()
	defer func() { // an error may leave a pack being written: wait for it
		if r.pending != nil {
			<-r.pending.done
		}
	}()
	// Records are read ahead in small batches so that the data keys of the batch's new
	// customers are fetched or created together, with their key-store round trips overlapping,
	// rather than one customer at a time (the source's Data is the caller's to keep). Three
	// stages overlap: the next batch is read from the source, and the keys and dedup-cache
	// shards of the one after this are fetched, while this one is sealed and written.
	rctx, stop := context.WithCancel(ctx)
	batches := make(chan readBatch, 1)
	go readBatches(rctx, sn, r.w.deps.Pseudonyms, batches)
	defer func() { // before sn.Close: the reader must be done with sn
		stop()
		for range batches {
		}
	}()
	var pf *prefetch
	defer func() { // no fetch outlives the task
		if pf != nil {
			<-pf.done
		}
	}()
	cur, ok := <-batches
	if ok && cur.err == nil {
		pf = r.startPrefetch(ctx, cur)
	}
	for ok {
		if cur.err != nil {
			return cur.err
		}
		if err := r.merge(ctx, pf); err != nil {
			return err
		}
		pf = nil
		next, more := <-batches
		if more && next.err == nil {
			pf = r.startPrefetch(ctx, next)
		}
		if err := r.addBatch(ctx, cur); err != nil {
			return err
		}
		r.reportProgress(ctx)
		cur, ok = next, more
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.flush(ctx); err != nil {
		return err
	}
	if err := r.settle(ctx); err != nil {
		return err
	}
	if len(j.NextCursor) == 0 {
		if r.res.Cursor, err = sn.Cursor(); err != nil {
			return err
		}
	}
	if err := r.saveCache(ctx); err != nil {
		w.log.Warn("dedup cache not saved; unchanged records may be uploaded again", "snapshot", j.ID, "err", err)
	}
	return r.writeManifest(ctx)
}

// progressEvery is how often a running task reports its progress (custos jobs).
const progressEvery = 2 * time.Second

// reportProgress records how far the task has got, at most every progressEvery. A failed
// report is logged and the task goes on: progress is advisory.
func (r *taskRun) reportProgress(ctx context.Context) {
	now := r.w.cfg.Clock()
	if now.Sub(r.reported) < progressEvery {
		return
	}
	r.reported = now
	err := r.w.deps.Snapshots.ReportProgress(ctx, snapshot.Progress{Job: r.job.ID, Task: r.task,
		Records: r.res.Records, Bytes: r.res.Bytes, Stored: r.res.Stored, Updated: now.UTC()})
	if err != nil {
		r.w.log.Warn("snapshot progress not recorded", "snapshot", r.job.ID, "task", r.task, "err", err)
	}
}

// readBatch is a batch of records read from a source, or the error that ended the reading.
type readBatch struct {
	recs []source.Record
	ids  []recordIDs // of each record, computed on the reading goroutine
	err  error
}

// recordIDs are a record's keyed names, computed once on the reading goroutine so that they
// overlap the sealing of the batch before and neither the prefetch nor prepare computes them
// again.
type recordIDs struct {
	pseudo string // the customer's pseudonym; "" without a customer id
	ref    string // the record's pseudonym within the customer; "" without a key
	// digest is the keyed digest of Data that deduplication compares; "" for a tombstone, a
	// record without a customer, or one streamed through Open (prepare reads it then).
	digest string
}

func idsOf(ps keys.Pseudonymizer, rec source.Record) recordIDs {
	var id recordIDs
	if rec.CustomerID != "" {
		id.pseudo = ps.Pseudonym(rec.Tenant, rec.CustomerID)
		if rec.Key != "" {
			id.ref = ps.Pseudonym("record:"+id.pseudo, rec.Key)
		}
	}
	if id.pseudo != "" && rec.Open == nil && !rec.Deleted {
		id.digest = contentDigest(ps, id.pseudo, rec.Data)
	}
	return id
}

// contentDigest is a record's digest for deduplication: the customer's keyed pseudonym of the
// SHA-256 of its bytes, so equal records of different customers never compare equal.
func contentDigest(ps keys.Pseudonymizer, pseudo string, data []byte) string {
	sum := sha(data)
	return ps.Pseudonym("content:"+pseudo, hex.EncodeToString(sum[:]))
}

// readBatches reads sn to its end in batches of readAhead records (or readAheadBytes), each
// record with its ids (idsOf, keyed with ps), and sends them to out, then closes it. A read
// error is sent as the last batch; a cancelled ctx stops it without sending more.
func readBatches(ctx context.Context, sn source.Snapshot, ps keys.Pseudonymizer, out chan<- readBatch) {
	defer close(out)
	for eof := false; !eof; {
		batch := make([]source.Record, 0, readAhead)
		ids := make([]recordIDs, 0, readAhead)
		batchBytes := 0
		var err error
		for len(batch) < readAhead && batchBytes < readAheadBytes {
			var rec source.Record
			rec, err = sn.Next(ctx)
			if errors.Is(err, io.EOF) {
				eof, err = true, nil
				break
			}
			if err != nil {
				break
			}
			batch = append(batch, rec)
			batchBytes += len(rec.Data)
			ids = append(ids, idsOf(ps, rec))
		}
		select {
		case out <- readBatch{recs: batch, ids: ids, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// readAhead and readAheadBytes bound the records a task holds before sealing them.
const (
	readAhead      = 256
	readAheadBytes = 8 << 20
)

// prefetch holds the key-store and dedup-cache reads one batch needs, made on their own
// goroutine while the task seals the batch before it.
type prefetch struct {
	done      chan struct{}
	evictions int // r.evictions when it began
	deks      map[string][]byte
	shards    map[string]map[string]snapshot.Known
	err       error
}

// startPrefetch fetches, in the background, the data keys of batch's customers that r.deks
// lacks (in one pipelined batch, keys.DataKeys; a destroyed customer maps to nil, as prepare
// expects) and then the dedup-cache shards of its records that r.cache lacks, shardsInFlight at
// a time (one per customer, see snapshot.CacheKey). What to fetch is decided here on
// the task's goroutine; the fetching goroutine touches nothing of r's, and merge adds what it
// got.
func (r *taskRun) startPrefetch(ctx context.Context, batch readBatch) *prefetch {
	p := &prefetch{done: make(chan struct{}), evictions: r.evictions}
	deps := r.w.deps
	var scopes []string
	asked := map[string]bool{}
	type shardOf struct{ pseudo, shard string }
	var shards []shardOf
	for i, rec := range batch.recs {
		pseudo, ref := batch.ids[i].pseudo, batch.ids[i].ref
		if pseudo == "" {
			continue // prepare reports it
		}
		dek, known := r.deks[pseudo]
		if !known && !asked[pseudo] {
			asked[pseudo] = true
			scopes = append(scopes, pseudo)
		}
		if deps.Records == nil || ref == "" || rec.Deleted || (known && dek == nil) {
			continue // no cache, malformed, a tombstone (listed without the cache) or erased
		}
		shard := snapshot.CacheKey(r.job.Class, pseudo)
		if _, ok := r.cache[shard]; !ok {
			shards = append(shards, shardOf{pseudo, shard})
		}
	}
	go func() {
		defer close(p.done)
		if len(scopes) > 0 {
			got, err := keys.DataKeys(ctx, deps.Keys, scopes)
			if err != nil {
				p.err = fmt.Errorf("data key: %w", err)
				return
			}
			p.deks = got
		}
		want := map[string]bool{}
		for _, s := range shards {
			if dek, ok := p.deks[s.pseudo]; ok && dek == nil {
				continue // erased: skipped
			}
			want[s.shard] = true
		}
		names := slices.Collect(maps.Keys(want))
		got := make([]map[string]snapshot.Known, len(names))
		errs := make([]error, len(names))
		fanout.Each(len(names), shardsInFlight, func(i int) { got[i], errs[i] = deps.Records.Load(ctx, names[i]) })
		if err := errors.Join(errs...); err != nil {
			p.err = err
			return
		}
		p.shards = make(map[string]map[string]snapshot.Known, len(names))
		for i, n := range names {
			p.shards[n] = got[i]
		}
	}()
	return p
}

// merge waits for p and adds what it fetched to r, keeping whatever the task loaded or changed
// meanwhile. Shards fetched before the cache was last written back are dropped (prepare loads
// them again), and so are all of them when they would overfill the cache, which is then
// written back and emptied.
func (r *taskRun) merge(ctx context.Context, p *prefetch) error {
	if p == nil {
		return nil
	}
	<-p.done
	if p.err != nil {
		return p.err
	}
	for k, v := range p.deks {
		if _, ok := r.deks[k]; !ok {
			r.deks[k] = v
		}
	}
	if p.evictions != r.evictions {
		return nil
	}
	entries := 0
	for k, m := range p.shards {
		if _, ok := r.cache[k]; !ok {
			entries += len(m)
		}
	}
	if len(r.cache)+len(p.shards) > r.maxShards() || r.cachedEntries+entries > r.maxEntries() {
		return r.evict(ctx)
	}
	for k, m := range p.shards {
		if _, ok := r.cache[k]; !ok {
			r.cache[k] = m
		}
	}
	r.cachedEntries += entries
	return nil
}

// toSeal is a record of a batch that must be sealed into the task's pack.
type toSeal struct {
	dek    []byte
	pseudo string
	id     string
	meta   pack.ItemMeta
	data   []byte
	entry  snapshot.Entry
	sealed []byte
	err    error
}

// addBatch stores a batch of records in source order. Deciding what each record needs (a
// tombstone, a reference to an unchanged earlier item, or a new item) is cheap and done in
// order; sealing the new items, the costly part (zstd and AES-GCM), runs on every core; the
// sealed items then join the pack in source order, so the packs are the same as if they had
// been sealed one after another.
func (r *taskRun) addBatch(ctx context.Context, batch readBatch) error {
	var seal []*toSeal
	for i, rec := range batch.recs {
		ts, err := r.prepare(ctx, rec, batch.ids[i])
		if err != nil {
			return err
		}
		if ts != nil {
			seal = append(seal, ts)
		}
	}
	sealAll(r.w, r.job.Class, seal)
	for _, ts := range seal {
		if ts.err != nil {
			return ts.err
		}
		r.items = append(r.items, pack.Item{ID: ts.id, Customer: ts.pseudo, EventTime: ts.meta.EventTime, Sealed: ts.sealed})
		r.refs = append(r.refs, ts.entry)
		r.bytes += len(ts.sealed)
		if r.bytes >= r.w.cfg.PackMaxBytes || len(r.items) >= r.w.cfg.PackMaxItems {
			if err := r.flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// sealAll seals every item of seal, on as many goroutines as there are cores.
func sealAll(w *Worker, class string, seal []*toSeal) {
	fanout.Each(len(seal), runtime.GOMAXPROCS(0), func(i int) {
		ts := seal[i]
		ts.sealed, ts.err = w.codec.SealItem(ts.dek, ts.pseudo, class, ts.id, ts.meta, ts.data)
	})
}

// prepare decides what one record needs: a tombstone or an unchanged record is listed in the
// manifest at once (nil is returned), anything else is returned to be sealed into the pack.
func (r *taskRun) prepare(ctx context.Context, rec source.Record, ids recordIDs) (*toSeal, error) {
	w, j := r.w, r.job
	if rec.CustomerID == "" || rec.Key == "" {
		return nil, fmt.Errorf("%w: a record without customer or key", source.ErrMalformed)
	}
	pseudo, ref, digest := ids.pseudo, ids.ref, ids.digest
	dek, ok := r.deks[pseudo]
	if !ok {
		var err error
		dek, err = w.deps.Keys.DataKey(ctx, pseudo)
		if errors.Is(err, keys.ErrDestroyed) {
			dek = nil // erased: its records are never stored again
		} else if err != nil {
			return nil, fmt.Errorf("data key: %w", err)
		}
		r.deks[pseudo] = dek
	}
	if dek == nil {
		r.res.Skipped++
		return nil, nil
	}
	r.res.Records++
	if rec.Deleted {
		r.res.Tombstones++
		r.man.Entries = append(r.man.Entries, snapshot.Entry{Customer: pseudo, Ref: ref, Deleted: true})
		return nil, nil
	}
	data, err := readRecord(ctx, rec, w.cfg.MaxRecordBytes)
	if err != nil {
		return nil, err
	}
	r.res.Bytes += int64(len(data))
	if digest == "" { // a streamed record: its bytes were read just now
		digest = contentDigest(w.deps.Pseudonyms, pseudo, data)
	}
	shard := snapshot.CacheKey(j.Class, pseudo)
	known, err := r.shard(ctx, shard)
	if err != nil {
		return nil, err
	}
	if k, ok := known[ref]; ok && k.Digest == digest && k.Job != j.ID && !j.Hold && r.packExists(ctx, k.Pack) {
		r.res.Reused++
		r.packs[k.Pack] = true
		r.man.Entries = append(r.man.Entries, snapshot.Entry{Customer: pseudo, Ref: ref, Digest: digest, Pack: k.Pack, Item: k.Item})
		return nil, nil
	}
	// The id is derived from the job and the content: a re-run of the task seals the same item
	// with the same derived nonce, so it rebuilds the same pack and its writes are idempotent.
	id := w.deps.Pseudonyms.Pseudonym("snapshot-item:"+pseudo, j.ID+"/"+ref+"/"+digest)
	im := pack.ItemMeta{Tenant: rec.Tenant, CustomerID: rec.CustomerID, RecordKey: rec.Key,
		EventID: "snapshot:" + j.ID, EventTime: j.Time, ContentType: rec.ContentType}
	return &toSeal{dek: dek, pseudo: pseudo, id: id, meta: im, data: data,
		entry: snapshot.Entry{Customer: pseudo, Ref: ref, Digest: digest, Item: pack.Entry{ID: id}}}, nil
}

func readRecord(ctx context.Context, rec source.Record, limit int64) ([]byte, error) {
	if rec.Open == nil {
		if int64(len(rec.Data)) > limit {
			return nil, fmt.Errorf("%w: a record of %d bytes, limit %d", source.ErrTooLarge, len(rec.Data), limit)
		}
		return rec.Data, nil
	}
	rc, err := rec.Body(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: a record over %d bytes", source.ErrTooLarge, limit)
	}
	return data, nil
}

func (r *taskRun) shard(ctx context.Context, key string) (map[string]snapshot.Known, error) {
	if m, ok := r.cache[key]; ok {
		return m, nil
	}
	if r.w.deps.Records == nil {
		return map[string]snapshot.Known{}, nil
	}
	if len(r.cache) >= r.maxShards() || r.cachedEntries >= r.maxEntries() {
		if err := r.evict(ctx); err != nil {
			return nil, err
		}
	}
	m, err := r.w.deps.Records.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	r.cache[key] = m
	r.cachedEntries += len(m)
	return m, nil
}

// evict bounds memory on large ranges: it writes back what changed in the cache and empties it.
func (r *taskRun) evict(ctx context.Context) error {
	if err := r.saveCache(ctx); err != nil {
		return err
	}
	r.cache, r.dirty, r.cachedEntries = map[string]map[string]snapshot.Known{}, map[string]bool{}, 0
	r.evictions++
	return nil
}

// maxCachedShards bounds the customers whose dedup-cache entries a task holds in memory, and
// maxCachedEntries those entries (about 500 bytes each in memory): with one cache key per
// customer, a few thousand large customers would otherwise hold gigabytes.
const (
	maxCachedShards  = 4096
	maxCachedEntries = 1 << 18
)

func (r *taskRun) maxEntries() int {
	if n := r.w.cfg.testMaxCachedEntries; n > 0 {
		return n
	}
	return maxCachedEntries
}

func (r *taskRun) maxShards() int {
	if n := r.w.cfg.testMaxCachedShards; n > 0 {
		return n
	}
	return maxCachedShards
}

// shardsInFlight bounds the dedup-cache reads or writes a task has in flight at once.
const shardsInFlight = 32

// saveCache writes the changed shards of the dedup cache, shardsInFlight at a time.
func (r *taskRun) saveCache(ctx context.Context) error {
	if r.w.deps.Records == nil {
		return nil
	}
	keys := slices.Collect(maps.Keys(r.dirty))
	errs := make([]error, len(keys))
	fanout.Each(len(keys), shardsInFlight, func(i int) { errs[i] = r.w.deps.Records.Store(ctx, keys[i], r.cache[keys[i]]) })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.dirty = map[string]bool{}
	return nil
}

// packExists reports whether the index still names a pack (retention may have removed it).
func (r *taskRun) packExists(ctx context.Context, id string) bool {
	ok, seen := r.packOK[id]
	if !seen {
		_, err := r.w.deps.Index.Pack(ctx, id)
		ok = err == nil
		r.packOK[id] = ok
	}
	return ok
}

// flush writes the current pack with the ordering rules of design.md section 5 and lists its
// items in the manifest.
func (r *taskRun) flush(ctx context.Context) error {
	if err := r.settle(ctx); err != nil {
		return err
	}
	if len(r.items) == 0 {
		return nil
	}
	w, j := r.w, r.job
	items := r.items
	p := &pendingPack{refs: r.refs, items: len(items), done: make(chan error, 1)}
	// The pack is built and written while the task seals the next one; settle (at the next
	// flush, or at the end of the task) waits for it and lists its items. Nothing is listed
	// before its pack is durable, and the manifest is written after every pack.
	go func() {
		p.built = pack.Build(j.Class, items) // read by settle only after done
		everywhere, err := w.writePack(ctx, j.Class, j.Hold, p.built.Manifest, p.built.Sum, replica.BytesSource(p.built.Data))
		if everywhere { // no write of it was abandoned: nothing can still be sending its bytes
			p.built.Release()
		}
		p.done <- err
	}()
	r.pending = p
	r.items, r.refs, r.bytes = nil, nil, 0
	return nil
}

// pendingPack is a pack being written by flush.
type pendingPack struct {
	built pack.Built
	refs  []snapshot.Entry
	items int
	done  chan error
}

// settle waits for the pack flush started, if any, and lists its items in the manifest and the
// dedup cache.
func (r *taskRun) settle(ctx context.Context) error {
	p := r.pending
	if p == nil {
		return nil
	}
	r.pending = nil
	if err := <-p.done; err != nil {
		return err
	}
	j, built := r.job, p.built
	byID := make(map[string]pack.Entry, len(built.Manifest.Items))
	for _, e := range built.Manifest.Items {
		byID[e.ID] = e
	}
	for _, e := range p.refs {
		e.Pack, e.Item = built.Manifest.Pack, byID[e.Item.ID]
		r.man.Entries = append(r.man.Entries, e)
		shard := snapshot.CacheKey(j.Class, e.Customer)
		if m, err := r.shard(ctx, shard); err == nil {
			if _, ok := m[e.Ref]; !ok {
				r.cachedEntries++
			}
			m[e.Ref] = snapshot.Known{Digest: e.Digest, Pack: e.Pack, Item: e.Item, Job: j.ID}
			r.dirty[shard] = true
		}
	}
	r.packOK[built.Manifest.Pack] = true
	r.packs[built.Manifest.Pack] = true
	r.res.Uploaded += int64(p.items)
	r.res.Stored += built.Manifest.Size
	r.w.count(func(s *Stats) { s.Items += int64(p.items) })
	return nil
}

// writeManifest writes the task manifest to the class's targets (at least min_replicas of them)
// and then records the task's result: only then is the task durable.
func (r *taskRun) writeManifest(ctx context.Context) error {
	w, j := r.w, r.job
	// A target that missed the manifest is queued for repair, like a missed pack.
	obj, wr, err := w.repo.WriteTaskManifest(ctx, w.placement(j.Class, j.Hold), r.man)
	if err != nil {
		return err
	}
	w.count(func(s *Stats) { s.ReplicasMissed += int64(wr.Missed) })
	r.res.Targets = append(r.res.Targets, wr.Targets...)
	r.res.Manifest = obj
	for id := range r.packs {
		r.res.Packs = append(r.res.Packs, id)
	}
	sort.Strings(r.res.Packs)
	r.res.Done = w.cfg.Clock().UTC()
	if hook := w.cfg.testBeforeTaskDone; hook != nil {
		if err := hook(j.ID, r.task); err != nil {
			return err
		}
	}
	if err := w.deps.Snapshots.Done(ctx, r.res); err != nil {
		return err
	}
	if !r.reported.IsZero() {
		if err := w.deps.Snapshots.ClearProgress(ctx, j.ID, r.task); err != nil {
			w.log.Warn("snapshot progress not cleared", "snapshot", j.ID, "task", r.task, "err", err)
		}
	}
	return nil
}

// startTasks joins the shared task queue when snapshots are enabled.
func (w *Worker) startTasks(ctx context.Context) error {
	if w.deps.Snapshots == nil {
		return nil
	}
	cons, err := w.joinConsumer(ctx, snapshot.TaskStream, jetstream.ConsumerConfig{
		Durable:       TaskConsumer,
		Description:   "Custos workers taking snapshot tasks",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    -1, // runTaskMsg gives the job up after cfg.MaxDeliver deliveries itself
		MaxAckPending: 1 << 16,
	})
	if err != nil {
		return fmt.Errorf("worker: task consumer: %w", err)
	}
	for range w.cfg.TaskConcurrency {
		w.wg.Add(1)
		go w.taskLoop(cons)
	}
	w.commitLoop = &periodic.Loop{Interval: w.cfg.CommitInterval, Run: w.commitPending,
		OnError: func(err error) { w.log.Warn("snapshot commit pass failed", "err", err) }}
	return w.commitLoop.Start(w.runCtx)
}
