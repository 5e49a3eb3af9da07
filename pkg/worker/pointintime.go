package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Point-in-time snapshots of event-fed classes (docs/design.md section 10). A class without a
// source is backed up by its events; a schedule tick (or compliance deadline) for it commits a
// snapshot that lists, for every record, the newest item the index holds as of the tick's time.
// Nothing is stored again: the entries point at the items the events stored. The job, its tasks
// (ranges of customer pseudonyms), their manifests in the targets and the commit are those of
// source snapshots, so restore, RPO and retention treat the result like any other snapshot.

// maxPointInTimeTasks: a task covers at least one index shard (256 of them).
const maxPointInTimeTasks = 256

// ErrNoDataKey: an indexed customer has no data key in the key store (a damaged store); its
// items' records cannot be identified until `custos catalog rebuild` restores the key.
var ErrNoDataKey = errors.New("worker: indexed customer has no data key")

// tickTime is the time a trigger's snapshot is taken as of: the time the schedule was due (or
// the compliance deadline), else the event's time.
func tickTime(ev *event.Event) time.Time {
	switch m := ev.Msg.(type) {
	case *custosv1.ScheduleTick:
		if m.GetScheduledFor() != nil {
			return m.GetScheduledFor().AsTime().UTC()
		}
	case *custosv1.ComplianceDeadline:
		if m.GetDue() != nil {
			return m.GetDue().AsTime().UTC()
		}
	}
	return ev.Meta.GetTime().AsTime().UTC()
}

// planPointInTime plans the point-in-time snapshot a trigger asks for and acknowledges the
// trigger once the plan and its tasks are durable. A redelivered trigger finds its job (the id
// derives from the event id) and only publishes again what may be missing.
func (w *Worker) planPointInTime(h *heldMsg, ev *event.Event) {
	meta := ev.Meta
	class := meta.GetDataClass()
	if len(w.cfg.Classes[class].Targets) == 0 {
		w.deadLetter(h, fmt.Sprintf("snapshot cannot be planned: class %q has no targets on this worker", class))
		return
	}
	ctx, span := w.tracer.Start(h.ctx, "snapshot.plan")
	defer span.End()
	store := w.deps.Snapshots
	id := snapshot.JobID(meta.GetEventId())
	span.SetAttributes(attribute.String("custos.snapshot.id", id), attribute.String("custos.class", class))
	h.snapshot = id
	err := func() error {
		if j, err := store.Job(ctx, id); err == nil {
			return store.Publish(ctx, j)
		} else if !errors.Is(err, snapshot.ErrNotFound) {
			return err
		}
		now := w.cfg.Clock().UTC()
		j := snapshot.Job{ID: id, Class: class, Method: source.Full, Trigger: string(ev.Type), Time: tickTime(ev),
			Created: now, PointInTime: true}
		if c := meta.GetCustomerId(); c != "" {
			// One customer: a partial snapshot of exactly its pseudonym.
			p := w.pseudonym(meta)
			j.Partial, j.Tasks = true, []source.CustomerRange{{From: p, To: p + "\x00"}}
		} else {
			j.Tasks = shardRanges(w.cfg.Classes[class].SnapshotTasks)
		}
		stored, created, err := store.Plan(ctx, j)
		if err != nil {
			return err
		}
		if created {
			w.log.Info("point-in-time snapshot planned", "snapshot", id, "class", class, "as_of", j.Time,
				"tasks", len(j.Tasks), "partial", j.Partial)
		}
		return store.Publish(ctx, stored)
	}()
	if err != nil {
		span.RecordError(err)
		w.planFailed(h, err)
		return
	}
	w.finish(h)
}

// shardRanges splits the 256 index shards into n ranges of customer pseudonyms ("p" and two hex
// digits), the last one open-ended.
func shardRanges(n int) []source.CustomerRange {
	n = min(max(n, 1), maxPointInTimeTasks)
	out := make([]source.CustomerRange, n)
	for i := range n {
		if i > 0 {
			out[i].From = fmt.Sprintf("p%02x", i*256/n)
		}
		if i < n-1 {
			out[i].To = fmt.Sprintf("p%02x", (i+1)*256/n)
		}
	}
	return out
}

func inRange(r source.CustomerRange, pseudo string) bool {
	return pseudo >= r.From && (r.To == "" || pseudo < r.To)
}

// shardsOf lists the index shards that may hold pseudonyms of r.
func shardsOf(r source.CustomerRange) []string {
	var out []string
	for i := range 256 {
		s := fmt.Sprintf("%02x", i)
		first, last := "p"+s, "p"+s+"~" // '~' sorts after every hex digit
		if last >= r.From && (r.To == "" || first < r.To) {
			out = append(out, s)
		}
	}
	return out
}

// candidate is one indexed item that may be its record's version as of the snapshot's time.
type candidate struct {
	pack  string
	order int // position in restore's reading order: packs by id, then manifest order
	entry pack.Entry
	ref   string
}

// runPointInTime runs task n of a point-in-time job: it lists, for every record of the task's
// customers, the newest item as of the job's time, writes the task manifest to the class's
// targets and records the result. It is deterministic for a given index, so a re-run after a
// crash writes the same manifest bytes.
func (w *Worker) runPointInTime(ctx context.Context, j snapshot.Job, n int) error {
	if w.cfg.Classes[j.Class].Targets == nil {
		return fmt.Errorf("%w: this worker has no targets for class %q", source.ErrPermanent, j.Class)
	}
	ctx, span := w.tracer.Start(ctx, "snapshot.task", trace.WithAttributes(
		attribute.String("custos.snapshot.id", j.ID), attribute.Int("custos.snapshot.task", n),
		attribute.String("custos.class", j.Class), attribute.String("custos.snapshot.method", "point_in_time")))
	defer span.End()
	res, err := w.pointInTimeTask(ctx, j, n)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "task not durable")
		return err
	}
	span.SetAttributes(attribute.Int64("custos.snapshot.records", res.Records))
	w.count(func(s *Stats) { s.SnapshotTasks++ })
	return nil
}

func (w *Worker) pointInTimeTask(ctx context.Context, j snapshot.Job, n int) (snapshot.TaskResult, error) {
	rng := j.Tasks[n]
	res := snapshot.TaskResult{Job: j.ID, Task: n}
	man := snapshot.Manifest{V: 1, Snapshot: j.ID, Class: j.Class, Task: n, Method: string(j.Method), Entries: []snapshot.Entry{}}
	// Only packs the index held when the job was planned: a re-run of the task sees the same
	// items even if late events have been stored since.
	packs, err := w.deps.Index.Packs(ctx)
	if err != nil {
		return res, err
	}
	inCut := map[string]bool{}
	for _, p := range packs {
		if p.Class == j.Class && !p.Committed.After(j.Created) {
			inCut[p.Pack] = true
		}
	}
	shards := map[string]bool{}
	for _, s := range shardsOf(rng) {
		shards[s] = true
	}
	recs, err := w.deps.Index.Shards(ctx, func(s string) bool { return shards[s] })
	if err != nil {
		return res, err
	}
	sort.SliceStable(recs, func(a, b int) bool { return recs[a].Pack < recs[b].Pack })
	// Restore's rules (design.md section 7): one copy per item id (the first met in pack order),
	// nothing after the snapshot's time; live lists every indexed item id of the customer, to
	// keep the ref cache to items that still exist.
	byCustomer := map[string][]*candidate{}
	live := map[string]map[string]bool{}
	seen := map[string]bool{}
	order := 0
	for _, rec := range recs {
		if rec.Class != j.Class {
			continue
		}
		for _, e := range rec.Items {
			if !inRange(rng, e.Customer) {
				continue
			}
			if live[e.Customer] == nil {
				live[e.Customer] = map[string]bool{}
			}
			live[e.Customer][e.ID] = true
			order++
			if !inCut[rec.Pack] || e.EventTime.After(j.Time) || seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			byCustomer[e.Customer] = append(byCustomer[e.Customer], &candidate{pack: rec.Pack, order: order, entry: e})
		}
	}
	customers := make([]string, 0, len(byCustomer))
	for c := range byCustomer {
		customers = append(customers, c)
	}
	sort.Strings(customers)
	used := map[string]bool{}
	for _, c := range customers {
		cands := byCustomer[c]
		dek, err := w.deps.Keys.Lookup(ctx, c)
		switch {
		case errors.Is(err, keys.ErrDestroyed):
			res.Skipped += int64(len(cands)) // erased: never listed
			continue
		case errors.Is(err, keys.ErrNotFound):
			return res, fmt.Errorf("%w (customer %s)", ErrNoDataKey, c)
		case err != nil:
			return res, fmt.Errorf("data key: %w", err)
		}
		if err := w.learnRefs(ctx, j.Class, c, dek, cands, live[c]); err != nil {
			return res, err
		}
		// The newest version wins: by event time, then stream sequence, then reading order.
		sort.SliceStable(cands, func(a, b int) bool {
			x, y := cands[a], cands[b]
			if !x.entry.EventTime.Equal(y.entry.EventTime) {
				return x.entry.EventTime.Before(y.entry.EventTime)
			}
			if x.entry.Seq != y.entry.Seq {
				return x.entry.Seq < y.entry.Seq
			}
			return x.order < y.order
		})
		newest := map[string]*candidate{}
		for _, cd := range cands {
			newest[cd.ref] = cd
		}
		for ref, cd := range newest {
			man.Entries = append(man.Entries, snapshot.Entry{Customer: c, Ref: ref, Pack: cd.pack, Item: cd.entry})
			used[cd.pack] = true
		}
	}
	res.Records = int64(len(man.Entries))
	res.Reused = res.Records
	obj, wr, err := w.repo.WriteTaskManifest(ctx, w.placement(j.Class, j.Hold), man)
	if err != nil {
		return res, err
	}
	w.count(func(s *Stats) { s.ReplicasMissed += int64(wr.Missed) })
	res.Targets, res.Manifest = wr.Targets, obj
	res.Packs = []string{}
	for p := range used {
		res.Packs = append(res.Packs, p)
	}
	sort.Strings(res.Packs)
	res.Done = w.cfg.Clock().UTC()
	if hook := w.cfg.testBeforeTaskDone; hook != nil {
		if err := hook(j.ID, n); err != nil {
			return res, err
		}
	}
	return res, w.deps.Snapshots.Done(ctx, res)
}

// learnRefs sets the record ref of every candidate: from the ref cache, or by opening the item's
// meta in a target of the class (the first one whose copy authenticates). The record bytes are
// not kept; only the meta's record key is used, as the ref design.md section 10 defines.
func (w *Worker) learnRefs(ctx context.Context, class, customer string, dek []byte, cands []*candidate, live map[string]bool) error {
	known := snapshot.ItemRefs{}
	if w.deps.Records != nil {
		var err error
		if known, err = w.deps.Records.LoadRefs(ctx, class, customer); err != nil {
			return err
		}
	}
	dirty := false
	for _, cd := range cands {
		if ref, ok := known[cd.entry.ID]; ok {
			cd.ref = ref
			continue
		}
		key, err := w.recordKey(ctx, class, dek, cd)
		if err != nil {
			return err
		}
		cd.ref = w.deps.Pseudonyms.Pseudonym("record:"+customer, key)
		known[cd.entry.ID] = cd.ref
		dirty = true
	}
	for id := range known {
		if !live[id] { // its pack was removed by retention
			delete(known, id)
			dirty = true
		}
	}
	if dirty && w.deps.Records != nil {
		if err := w.deps.Records.StoreRefs(ctx, class, customer, known); err != nil {
			w.log.Warn("item refs not cached; item metas will be read again", "class", class, "err", err)
		}
	}
	return nil
}

// recordKey opens an item far enough to authenticate and read its meta, and returns its record
// key. It reads from the first target of the class whose copy opens.
func (w *Worker) recordKey(ctx context.Context, class string, dek []byte, cd *candidate) (string, error) {
	if !pack.ValidID(cd.pack) {
		return "", fmt.Errorf("malformed pack id %q in the index", cd.pack)
	}
	var errs []error
	for _, t := range w.classTargets(class) {
		if t == nil {
			continue
		}
		key, err := func() (string, error) {
			rc, err := t.GetRange(ctx, repository.PackName(cd.pack), cd.entry.Offset, cd.entry.Length)
			if err != nil {
				return "", err
			}
			defer rc.Close()
			ir, err := pack.OpenItemStream(rc, dek, cd.entry.Customer, class, cd.entry.ID)
			if err != nil {
				return "", err
			}
			defer ir.Close()
			return ir.Meta.RecordKey, nil
		}()
		if err == nil {
			return key, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
	}
	return "", fmt.Errorf("item %s of pack %s: meta not readable: %w", cd.entry.ID, cd.pack, errors.Join(errs...))
}
