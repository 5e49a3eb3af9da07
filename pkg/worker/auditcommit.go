package worker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// backup_commit entries (docs/audit.md): one per pack would make the log as long as the
// catalog, so the worker sums up what it committed per class and interval. A summary is only
// dropped once its entry is in the log: an append that fails keeps it for the next interval.

// maxAuditPacks bounds the pack ids one backup_commit entry lists; beyond it the entry's reason
// gives the number of packs. A variable so that tests can lower it.
var maxAuditPacks = 256

// OutcomeCommitted is the outcome of backup_commit entries.
const OutcomeCommitted = "committed"

// commitSummary is what one class committed since its last entry.
type commitSummary struct {
	packs []string // the first maxAuditPacks pack ids
	total int64    // packs, listed or not
	items int64
	bytes int64
}

func (s *commitSummary) merge(o *commitSummary) {
	s.packs = append(s.packs, o.packs[:min(len(o.packs), maxAuditPacks-len(s.packs))]...)
	s.total += o.total
	s.items += o.items
	s.bytes += o.bytes
}

// auditWork is the worker's part of the audit log: the commit summaries and the periodic
// checkpoints. The zero value is ready; start runs its loops.
type auditWork struct {
	mu      sync.Mutex
	pending map[string]*commitSummary // by class
	snaps   []audit.Entry             // snapshot entries waiting for a retry

	commitLoop     *periodic.Loop
	checkpointLoop *periodic.Loop
	cp             checkpointState // used by the checkpoint loop only
}

// auditPack records a pack this worker made durable (after its index entry), for the class's
// next backup_commit entry. Bytes are the items' plaintext as stored (compressed, before
// encryption): the manifest knows no other size.
func (w *Worker) auditPack(class string, m pack.Manifest) {
	s := &commitSummary{packs: []string{m.Pack}, total: 1, items: int64(len(m.Items))}
	for _, e := range m.Items {
		if n, err := crypto.PlaintextSize(e.Length); err == nil {
			s.bytes += n
		}
	}
	a := &w.auditw
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = map[string]*commitSummary{}
	}
	if cur := a.pending[class]; cur != nil {
		cur.merge(s)
	} else {
		a.pending[class] = s
	}
}

// auditSnapshot appends the backup_commit entry of a committed snapshot. Its event id is the
// job id, so that the workers that raced to commit it (each is told it is committed) log it
// once. An entry that cannot be appended now is retried with the next summaries.
func (w *Worker) auditSnapshot(sn snapshot.Snapshot) {
	e := audit.Entry{Time: w.cfg.Clock(), Kind: audit.KindBackupCommit, EventID: sn.ID, Class: sn.Class,
		Snapshot: sn.ID, Count: sn.Records, Outcome: OutcomeCommitted}
	for _, t := range sn.Tasks {
		e.Bytes += t.Bytes
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	if err := w.audit.Append(ctx, e); err != nil {
		w.log.Error("could not write the audit entry of a committed snapshot; will retry", "snapshot", sn.ID, "err", err)
		w.auditw.mu.Lock()
		w.auditw.snaps = append(w.auditw.snaps, e)
		w.auditw.mu.Unlock()
	}
}

// flushCommits appends one backup_commit entry per class with commits pending, and the snapshot
// entries waiting for a retry. What fails to append stays pending, merged with what comes next.
func (w *Worker) flushCommits(ctx context.Context) error {
	a := &w.auditw
	a.mu.Lock()
	pending, snaps := a.pending, a.snaps
	a.pending, a.snaps = nil, nil
	a.mu.Unlock()
	var failed []audit.Entry
	var lastErr error
	for _, e := range snaps {
		if err := w.appendAudit(ctx, e); err != nil {
			failed, lastErr = append(failed, e), err
		}
	}
	classes := make([]string, 0, len(pending))
	for c := range pending {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	kept := map[string]*commitSummary{}
	for _, class := range classes {
		s := pending[class]
		e := audit.Entry{Time: w.cfg.Clock(), Kind: audit.KindBackupCommit, Class: class, Packs: slices.Clone(s.packs),
			Count: s.items, Bytes: s.bytes, Outcome: OutcomeCommitted}
		if s.total > int64(len(s.packs)) {
			e.Reason = fmt.Sprintf("%d packs committed; the first %d are listed", s.total, len(s.packs))
		}
		if err := w.appendAudit(ctx, e); err != nil {
			kept[class], lastErr = s, err
		}
	}
	if len(failed) == 0 && len(kept) == 0 {
		return nil
	}
	a.mu.Lock()
	a.snaps = append(failed, a.snaps...)
	for class, s := range kept {
		if cur := a.pending[class]; cur != nil {
			s.merge(cur) // the older commits first
		}
		if a.pending == nil {
			a.pending = map[string]*commitSummary{}
		}
		a.pending[class] = s
	}
	a.mu.Unlock()
	return fmt.Errorf("%d backup_commit entries not written; kept for the next interval: %w", len(failed)+len(kept), lastErr)
}

func (w *Worker) appendAudit(ctx context.Context, e audit.Entry) error {
	ctx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	return w.audit.Append(ctx, e)
}

// startAudit starts the commit summaries and, when configured, the periodic checkpoints.
func (w *Worker) startAudit(ctx context.Context) error {
	a := &w.auditw
	a.commitLoop = &periodic.Loop{Interval: w.cfg.AuditCommitInterval, Run: w.flushCommits,
		OnError: func(err error) { w.log.Error("audit: backup_commit entries not written", "err", err) }}
	if err := a.commitLoop.Start(ctx); err != nil {
		return err
	}
	if w.cfg.AuditCheckpointInterval > 0 {
		a.checkpointLoop = &periodic.Loop{Interval: w.cfg.AuditCheckpointInterval, Run: w.checkpointPass,
			OnError: func(err error) { w.log.Error("audit checkpoint not written", "err", err) }}
		return a.checkpointLoop.Start(ctx)
	}
	return nil
}

// stopAudit ends the loops and appends the summaries still pending; it runs once no commit is in
// progress. A summary that cannot be appended now is logged with its figures, so it is not lost
// silently.
func (w *Worker) stopAudit(ctx context.Context) {
	a := &w.auditw
	for _, l := range []*periodic.Loop{a.checkpointLoop, a.commitLoop} {
		if l != nil {
			_ = l.Stop(ctx)
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*auditTimeout)
	defer cancel()
	if err := w.flushCommits(fctx); err != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		for class, s := range a.pending {
			w.log.Error("audit: backup_commit entry lost at stop", "class", class, "packs", s.total, "items", s.items,
				"bytes", s.bytes, "listed", s.packs, "err", err)
		}
		for _, e := range a.snaps {
			w.log.Error("audit: snapshot backup_commit entry lost at stop", "class", e.Class, "snapshot", e.Snapshot, "err", err)
		}
	}
}
