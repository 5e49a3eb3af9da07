// Package snapshot holds the records of scheduled backups read from sources: jobs split into
// tasks that every worker shares, the task results, the committed snapshots that chain
// incrementals to their full, and the per-record cache that lets unchanged records be referenced
// instead of uploaded again. docs/design.md section 10 states the format and ordering rules.
//
// Where things live:
//
//   - stream CUSTOS_TASKS (work queue): one message per task, subject custos.v1.tasks.<job id>;
//   - KV CUSTOS_JOBS: job.<id> (the plan) and task.<job id>.<n> (a durable task's result);
//   - KV CUSTOS_SNAPSHOTS: snap.<id> (a committed snapshot) and head.<class> (the newest
//     complete snapshot of the class, the base of the next incremental);
//   - KV CUSTOS_RECORDS: the dedup cache (state.go);
//   - in every target of the class: one sealed task manifest per task (manifest.go).
//
// A snapshot is committed only when every task's manifest is durable: Commit is idempotent and any
// worker may run it, so a worker dying at any step never stalls the job.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/telemetry"
)

// Names of the stream and buckets.
const (
	TaskStream      = "CUSTOS_TASKS"
	TaskSubject     = "custos.v1.tasks."
	JobsBucket      = "CUSTOS_JOBS"
	SnapshotsBucket = "CUSTOS_SNAPSHOTS"
)

// Named errors, matched with errors.Is.
var (
	// ErrNotFound: no such job or snapshot.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrIncomplete: Commit found tasks that are not durable yet.
	ErrIncomplete = errors.New("snapshot: tasks not all durable yet")
	// ErrFailed: the job was given up (a task failed every delivery).
	ErrFailed = errors.New("snapshot: job failed")
)

// Job is the plan of one snapshot: written once, before any task is published.
type Job struct {
	ID     string        `json:"id"`
	Class  string        `json:"class"`
	Method source.Method `json:"method"`
	// Trigger is the event type that asked for the job (schedule_tick, manual...).
	Trigger string `json:"trigger"`
	// Time is the snapshot time: every item the job stores carries it as its event time.
	Time time.Time `json:"time"`
	// Base is the snapshot an incremental reads changes since; BaseCursor is its cursor.
	Base       string `json:"base,omitempty"`
	BaseCursor []byte `json:"base_cursor,omitempty"`
	// NextCursor is this snapshot's cursor when the source gave one at planning time (before any
	// task read, so nothing written later is missed); otherwise the single task reports it.
	NextCursor []byte `json:"next_cursor,omitempty"`
	// Tasks are the customer ranges, one per task; they cover the job's customers exactly once.
	Tasks []source.CustomerRange `json:"tasks"`
	// Partial marks a snapshot of chosen customers only: it is never the base of an incremental.
	Partial bool `json:"partial,omitempty"`
	// Hold puts every object the job writes under legal hold and disables reuse of older items.
	Hold    bool      `json:"hold,omitempty"`
	Created time.Time `json:"created"`
	// Failed holds the reason the job was given up, if it was.
	Failed string `json:"failed,omitempty"`
	// PointInTime marks a snapshot of an event-fed class taken from the index as of Time, not
	// read from a source (docs/design.md section 10); its tasks are pseudonym ranges.
	PointInTime bool `json:"point_in_time,omitempty"`
}

// Object is a stored object with its checksum.
type Object struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// TaskResult says that one task is durable: its items are in indexed packs and its manifest is
// in Targets.
type TaskResult struct {
	Job        string   `json:"job"`
	Task       int      `json:"task"`
	Records    int64    `json:"records"`    // records listed in the manifest (tombstones included)
	Uploaded   int64    `json:"uploaded"`   // items stored by this task
	Reused     int64    `json:"reused"`     // unchanged records pointing at an earlier item
	Tombstones int64    `json:"tombstones"` // records deleted at the source
	Skipped    int64    `json:"skipped"`    // records of erased customers, not stored
	Bytes      int64    `json:"bytes"`      // record bytes read from the source
	Stored     int64    `json:"stored"`     // encrypted bytes written (per target)
	Manifest   Object   `json:"manifest"`
	Targets    []string `json:"targets"`
	// Packs are the packs holding the items the manifest lists (new and reused): retention keeps
	// them while the snapshot exists.
	Packs []string `json:"packs"`
	// Cursor is the source's cursor for this task, used when the job has none.
	Cursor []byte    `json:"cursor,omitempty"`
	Done   time.Time `json:"done"`
}

// Snapshot is a committed snapshot.
type Snapshot struct {
	ID      string        `json:"id"`
	Class   string        `json:"class"`
	Method  source.Method `json:"method"`
	Base    string        `json:"base,omitempty"`
	Time    time.Time     `json:"time"`
	Cursor  []byte        `json:"cursor,omitempty"`
	Partial bool          `json:"partial,omitempty"`
	Hold    bool          `json:"hold,omitempty"`
	// Tasks are the durable task results, in task order.
	Tasks     []TaskResult `json:"tasks"`
	Records   int64        `json:"records"`
	Uploaded  int64        `json:"uploaded"`
	Reused    int64        `json:"reused"`
	Stored    int64        `json:"stored"`
	Committed time.Time    `json:"committed"`
}

// Task is the body of a task message.
type Task struct {
	Job  string `json:"job"`
	Task int    `json:"task"`
}

// JobID derives a job's id from the id of the event that triggered it, so a redelivered
// trigger plans the same job.
func JobID(eventID string) string {
	s := sha256.Sum256([]byte("custos-job-v1\x00" + eventID))
	return hex.EncodeToString(s[:16])
}

// Store reads and writes jobs and snapshots.
type Store struct {
	js    jetstream.JetStream
	jobs  jetstream.KeyValue
	snaps jetstream.KeyValue
}

// Open creates the stream and buckets if needed.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	replicas = max(replicas, 1)
	_, err := broker.Ensure(ctx, js, jetstream.StreamConfig{
		Name: TaskStream, Description: "Custos snapshot tasks, shared by every worker",
		Subjects: []string{TaskSubject + ">"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: replicas, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: task stream: %w", err)
	}
	s := &Store{js: js}
	if s.jobs, err = broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: JobsBucket, Description: "Custos snapshot jobs and task results", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return nil, fmt.Errorf("snapshot: jobs bucket: %w", err)
	}
	if s.snaps, err = broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: SnapshotsBucket, Description: "Custos committed snapshots", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return nil, fmt.Errorf("snapshot: snapshots bucket: %w", err)
	}
	return s, nil
}

func jobKey(id string) string            { return "job." + id }
func taskKey(job string, n int) string   { return "task." + job + "." + strconv.Itoa(n) }
func snapKey(id string) string           { return "snap." + id }
func headKey(class string) string        { return "head." + hex.EncodeToString([]byte(class)) }
func taskMsgID(job string, n int) string { return job + "." + strconv.Itoa(n) }
func getJSON(b []byte, v any, what string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("snapshot: corrupt %s: %w", what, err)
	}
	return nil
}

// Plan records j unless a job with its id exists, and returns the stored job: a redelivered
// trigger gets the plan made the first time. created says whether this call made it.
func (s *Store) Plan(ctx context.Context, j Job) (stored Job, created bool, err error) {
	if len(j.Tasks) == 0 {
		return Job{}, false, errors.New("snapshot: a job needs at least one task")
	}
	b, err := json.Marshal(j)
	if err != nil {
		return Job{}, false, err
	}
	if _, err := s.jobs.Create(ctx, jobKey(j.ID), b); err == nil {
		return j, true, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return Job{}, false, fmt.Errorf("snapshot: record job: %w", err)
	}
	stored, err = s.Job(ctx, j.ID)
	return stored, false, err
}

// Publish publishes every task of j that has no result yet. Message ids make a re-publish within
// the stream's duplicate window a no-op; a task published twice after that finds its result and
// is acknowledged without work.
func (s *Store) Publish(ctx context.Context, j Job) error {
	for n := range j.Tasks {
		if _, err := s.TaskResult(ctx, j.ID, n); err == nil {
			continue
		}
		b, _ := json.Marshal(Task{Job: j.ID, Task: n})
		hdr := nats.Header{nats.MsgIdHdr: []string{taskMsgID(j.ID, n)}}
		// The task carries the trigger's trace context, so its spans join the trigger's trace.
		telemetry.Inject(ctx, hdr)
		if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: TaskSubject + j.ID, Data: b, Header: hdr}); err != nil {
			return fmt.Errorf("snapshot: publish task %d of job %s: %w", n, j.ID, err)
		}
	}
	return nil
}

// Job returns a job's plan.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	e, err := s.jobs.Get(ctx, jobKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("snapshot: job %s: %w", id, err)
	}
	var j Job
	return j, getJSON(e.Value(), &j, "job "+id)
}

// Fail marks a job given up with a reason; it will never commit.
func (s *Store) Fail(ctx context.Context, id, reason string) error {
	for {
		e, err := s.jobs.Get(ctx, jobKey(id))
		if err != nil {
			return fmt.Errorf("snapshot: job %s: %w", id, err)
		}
		var j Job
		if err := getJSON(e.Value(), &j, "job "+id); err != nil {
			return err
		}
		if j.Failed != "" {
			return nil
		}
		j.Failed = reason
		b, _ := json.Marshal(j)
		if _, err := s.jobs.Update(ctx, jobKey(id), b, e.Revision()); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("snapshot: fail job %s: %w", id, err)
		}
	}
}

// Done records a task's result. Recording it again is a no-op: the first result stands.
func (s *Store) Done(ctx context.Context, r TaskResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.jobs.Create(ctx, taskKey(r.Job, r.Task), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("snapshot: record task %d of job %s: %w", r.Task, r.Job, err)
	}
	return nil
}

// TaskResult returns a task's result, or ErrNotFound while it is not durable.
func (s *Store) TaskResult(ctx context.Context, job string, n int) (TaskResult, error) {
	e, err := s.jobs.Get(ctx, taskKey(job, n))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return TaskResult{}, fmt.Errorf("%w: task %d of job %s", ErrNotFound, n, job)
	}
	if err != nil {
		return TaskResult{}, fmt.Errorf("snapshot: task %d of job %s: %w", n, job, err)
	}
	var r TaskResult
	return r, getJSON(e.Value(), &r, "task result")
}

// Results returns the durable task results of a job, in task order.
func (s *Store) Results(ctx context.Context, job string) ([]TaskResult, error) {
	var out []TaskResult
	err := s.each(ctx, s.jobs, "task."+job+".*", func(b []byte) error {
		var r TaskResult
		if err := getJSON(b, &r, "task result"); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Task < out[j].Task })
	return out, err
}

// Jobs returns every job, newest first.
func (s *Store) Jobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := s.each(ctx, s.jobs, "job.*", func(b []byte) error {
		var j Job
		if err := getJSON(b, &j, "job"); err != nil {
			return err
		}
		out = append(out, j)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// each calls f with the value of every key matching filter.
func (s *Store) each(ctx context.Context, kv jetstream.KeyValue, filter string, f func([]byte) error) error {
	lister, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return fmt.Errorf("snapshot: list %s: %w", filter, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed since it was listed
		}
		if err != nil {
			return fmt.Errorf("snapshot: read %s: %w", k, err)
		}
		if err := f(e.Value()); err != nil {
			return err
		}
	}
	return nil
}

// Commit commits job id's snapshot once every task is durable, and moves the class's head to it
// unless it is partial or older than the head. It is idempotent: committing twice returns the
// same snapshot. It returns ErrIncomplete while tasks are missing, ErrFailed for a failed job.
func (s *Store) Commit(ctx context.Context, id string, now time.Time) (Snapshot, error) {
	return s.CommitWith(ctx, id, now, nil)
}

// CommitWith is Commit with a step run after the snapshot is assembled and before its record is
// created: the worker writes the snapshot record to the targets there (docs/design.md section
// 11), so the broker never names a snapshot the targets do not. The record's Committed time is
// the time its last task became durable, so an assembly retried after a crash is identical.
func (s *Store) CommitWith(ctx context.Context, id string, now time.Time, before func(context.Context, Snapshot) error) (Snapshot, error) {
	if sn, err := s.Get(ctx, id); err == nil {
		return sn, s.advanceHead(ctx, sn)
	} else if !errors.Is(err, ErrNotFound) {
		return Snapshot{}, err
	}
	j, err := s.Job(ctx, id)
	if err != nil {
		return Snapshot{}, err
	}
	if j.Failed != "" {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrFailed, j.Failed)
	}
	rs, err := s.Results(ctx, id)
	if err != nil {
		return Snapshot{}, err
	}
	if len(rs) < len(j.Tasks) {
		return Snapshot{}, fmt.Errorf("%w: %d of %d", ErrIncomplete, len(rs), len(j.Tasks))
	}
	sn := Snapshot{ID: j.ID, Class: j.Class, Method: j.Method, Base: j.Base, Time: j.Time, Cursor: j.NextCursor,
		Partial: j.Partial, Hold: j.Hold, Tasks: rs, Committed: now.UTC()}
	if len(sn.Cursor) == 0 && len(rs) == 1 {
		sn.Cursor = rs[0].Cursor
	}
	for _, r := range rs {
		sn.Records += r.Records
		sn.Uploaded += r.Uploaded
		sn.Reused += r.Reused
		sn.Stored += r.Stored
	}
	var last time.Time
	for _, r := range rs {
		if r.Done.After(last) {
			last = r.Done.UTC()
		}
	}
	if !last.IsZero() {
		sn.Committed = last
	}
	if before != nil {
		if err := before(ctx, sn); err != nil {
			return Snapshot{}, err
		}
	}
	b, err := json.Marshal(sn)
	if err != nil {
		return Snapshot{}, err
	}
	if _, err := s.snaps.Create(ctx, snapKey(id), b); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Snapshot{}, fmt.Errorf("snapshot: commit %s: %w", id, err)
		}
		// Another worker committed it first: use its record.
		if sn, err = s.Get(ctx, id); err != nil {
			return Snapshot{}, err
		}
	}
	return sn, s.advanceHead(ctx, sn)
}

// advanceHead points head.<class> at sn when sn is complete and newer than the current head.
func (s *Store) advanceHead(ctx context.Context, sn Snapshot) error {
	if !IsHead(sn) {
		return nil
	}
	for {
		e, err := s.snaps.Get(ctx, headKey(sn.Class))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			_, err = s.snaps.Create(ctx, headKey(sn.Class), []byte(sn.ID))
			if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
				return wrap(err, "snapshot: head of %s", sn.Class)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("snapshot: head of %s: %w", sn.Class, err)
		}
		cur := string(e.Value())
		if cur == sn.ID {
			return nil
		}
		if old, err := s.Get(ctx, cur); err == nil && !old.Time.Before(sn.Time) {
			return nil // a newer snapshot is already the head
		}
		_, err = s.snaps.Update(ctx, headKey(sn.Class), []byte(sn.ID), e.Revision())
		if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
			return wrap(err, "snapshot: head of %s", sn.Class)
		}
	}
}

func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Get returns a committed snapshot.
func (s *Store) Get(ctx context.Context, id string) (Snapshot, error) {
	e, err := s.snaps.Get(ctx, snapKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s", ErrNotFound, id)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %s: %w", id, err)
	}
	var sn Snapshot
	return sn, getJSON(e.Value(), &sn, "snapshot "+id)
}

// Head returns the newest complete snapshot of a class, or ErrNotFound.
func (s *Store) Head(ctx context.Context, class string) (Snapshot, error) {
	e, err := s.snaps.Get(ctx, headKey(class))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Snapshot{}, fmt.Errorf("%w: no snapshot of class %q yet", ErrNotFound, class)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: head of %s: %w", class, err)
	}
	return s.Get(ctx, string(e.Value()))
}

// List returns the committed snapshots of a class (every class when class is empty), oldest
// first.
func (s *Store) List(ctx context.Context, class string) ([]Snapshot, error) {
	var out []Snapshot
	err := s.each(ctx, s.snaps, "snap.*", func(b []byte) error {
		var sn Snapshot
		if err := getJSON(b, &sn, "snapshot"); err != nil {
			return err
		}
		if class == "" || sn.Class == class {
			out = append(out, sn)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

// Chain returns the snapshots a restore of id reads, oldest first: the full snapshot it builds
// on, then every incremental up to id.
func (s *Store) Chain(ctx context.Context, id string) ([]Snapshot, error) {
	return ChainOf(id, func(id string) (Snapshot, error) { return s.Get(ctx, id) })
}

// ChainOf resolves the chain of id with get, for any place snapshots are held (the KV bucket,
// or records read from a target).
func ChainOf(id string, get func(id string) (Snapshot, error)) ([]Snapshot, error) {
	var chain []Snapshot
	seen := map[string]bool{}
	for id != "" {
		if seen[id] {
			return nil, fmt.Errorf("snapshot: chain of %s loops", strings.Join(keysOf(seen), ","))
		}
		seen[id] = true
		sn, err := get(id)
		if err != nil {
			return nil, fmt.Errorf("snapshot: chain: %w", err)
		}
		chain = append(chain, sn)
		if sn.Method == source.Full {
			break
		}
		if sn.Base == "" {
			return nil, fmt.Errorf("snapshot: incremental %s names no base", sn.ID)
		}
		id = sn.Base
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	return chain, nil
}

// Put records a committed snapshot read back from a target (catalog rebuild): create-only, a
// record already present is kept; then the head of its class moves to it if it is newer.
func (s *Store) Put(ctx context.Context, sn Snapshot) error {
	b, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	if _, err := s.snaps.Create(ctx, snapKey(sn.ID), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("snapshot: record %s: %w", sn.ID, err)
	}
	return s.advanceHead(ctx, sn)
}

// IsHead reports whether sn can be the head of its class: complete (not partial) and with a
// cursor an incremental can start from.
func IsHead(sn Snapshot) bool { return !sn.Partial && len(sn.Cursor) > 0 }

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Delete removes a committed snapshot's record (retention). The caller removes its objects.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.snaps.Delete(ctx, snapKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("snapshot: delete %s: %w", id, err)
	}
	return nil
}
