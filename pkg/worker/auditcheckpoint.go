package worker

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/target"
)

// Periodic checkpoints (docs/audit.md, "Checkpoints"): every AuditCheckpointInterval a worker
// signs a checkpoint of the audit log and writes it, with the entries each target lacks, to
// every target, as `custos audit checkpoint` does (audit.WriteCheckpoint). The workers take
// turns through a lease in the key-value bucket audit.LeaseBucket (a compare-and-set on one key
// holding the time the turn ends), so one of them writes per interval. Without the bucket (a
// broker whose admin did not create it) a worker still skips the pass when the targets hold a
// checkpoint younger than the interval; two workers that write at once write the same tree,
// which the targets accept as a retry.

// checkpointLeaseKey is the lease's key in audit.LeaseBucket.
const checkpointLeaseKey = "checkpoint"

// checkpointLease is the lease's value.
type checkpointLease struct {
	// Until is when the turn of the worker that wrote it ends.
	Until time.Time `json:"until"`
}

// checkpointState is what the checkpoint loop keeps between passes.
type checkpointState struct {
	entries  [][]byte // the log as last read: later passes read only what was appended
	signer   note.Signer
	verifier note.Verifier
	kv       jetstream.KeyValue
	noKV     bool // the lease bucket could not be opened (logged once)
}

// checkpointPass writes a checkpoint when this worker's turn has come and the log has grown (or
// a target lacks the newest checkpoint).
func (w *Worker) checkpointPass(ctx context.Context) error {
	st := &w.auditw.cp
	if st.signer == nil {
		priv := w.signer.SigningKey(keys.PurposeAuditCheckpoint)
		signer, err := audit.NewSigner(priv)
		if err != nil {
			return err
		}
		verifier, err := audit.NewVerifier(priv.Public().(ed25519.PublicKey))
		if err != nil {
			return err
		}
		st.signer, st.verifier = signer, verifier
	}
	entries, err := audit.ReadEntriesAfter(ctx, w.deps.JS, st.entries)
	if err != nil {
		st.entries = nil // read the whole log again next time
		return err
	}
	st.entries = entries
	if len(entries) == 0 {
		return nil
	}
	now := w.cfg.Clock()
	held := audit.ReadTargetCheckpoints(ctx, w.cfg.Targets)
	for _, err := range held.Unreachable {
		w.log.Warn("audit checkpoint: a target did not answer", "err", err)
	}
	if rep, err := audit.Verify(entries, held.Data, st.verifier); err == nil {
		upToDate := rep.Head == int64(len(entries)) && len(held.Lagging) == 0 && len(held.Unreachable) == 0
		recent := rep.Head > 0 && now.Sub(rep.Time) < w.checkpointTurn()
		if upToDate || recent {
			return nil
		}
	}
	mine, err := w.takeCheckpointTurn(ctx, now)
	if err != nil || !mine {
		return err
	}
	var longest time.Duration
	for _, c := range w.cfg.Classes {
		longest = max(longest, c.Retain)
	}
	put := target.PutOptions{}
	if longest > 0 {
		put.RetainUntil = now.Add(longest)
	}
	res, err := audit.WriteCheckpoint(ctx, audit.CheckpointWrite{Entries: entries, Held: held, Targets: w.cfg.Targets,
		Signer: st.signer, Verifier: st.verifier, Now: now, Put: put})
	if err != nil {
		if errors.Is(err, audit.ErrNotVerified) {
			st.entries = nil
			return fmt.Errorf("%w (first bad entry %d: %s)", err, res.Report.FirstBad, res.Report.Problem)
		}
		return err
	}
	w.log.Info("audit checkpoint written", "size", res.Checkpoint.Size, "targets", res.Written, "failures", len(res.Failures))
	if len(res.Failures) > 0 {
		return fmt.Errorf("checkpoint of %d entries missing from %d targets (the next pass writes them): %w",
			res.Checkpoint.Size, len(res.Failures), errors.Join(res.Failures...))
	}
	return nil
}

// checkpointTurn is how long a worker's turn lasts: a little less than the interval, so the
// worker that took it can take it again at its next pass despite timer drift.
func (w *Worker) checkpointTurn() time.Duration {
	return w.cfg.AuditCheckpointInterval * 9 / 10
}

// takeCheckpointTurn reports whether this worker writes this interval's checkpoint: it takes the
// lease when the last turn has ended, with a compare-and-set against the other workers.
func (w *Worker) takeCheckpointTurn(ctx context.Context, now time.Time) (bool, error) {
	st := &w.auditw.cp
	if st.kv == nil && !st.noKV {
		kv, err := broker.EnsureKV(ctx, w.deps.JS, audit.LeaseConfig())
		if err != nil {
			st.noKV = true
			w.log.Warn("audit checkpoint: no lease bucket; taking turns by the checkpoints' time only", "err", err)
		}
		st.kv = kv
	}
	if st.kv == nil {
		return true, nil
	}
	val, err := json.Marshal(checkpointLease{Until: now.Add(w.checkpointTurn()).UTC()})
	if err != nil {
		return false, err
	}
	e, err := st.kv.Get(ctx, checkpointLeaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = st.kv.Create(ctx, checkpointLeaseKey, val)
	case err != nil:
		return false, fmt.Errorf("audit checkpoint lease: %w", err)
	default:
		var cur checkpointLease
		if json.Unmarshal(e.Value(), &cur) == nil && now.Before(cur.Until) {
			return false, nil // another worker's turn
		}
		_, err = st.kv.Update(ctx, checkpointLeaseKey, val, e.Revision())
	}
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		return false, nil // another worker took it first
	default:
		return false, fmt.Errorf("audit checkpoint lease: %w", err)
	}
}
