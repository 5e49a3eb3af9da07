package worker

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// writeSnapshotRecord writes a snapshot's record to its class's targets (at least min_replicas)
// before the broker records the snapshot, and queues the targets that missed it for repair.
func (w *Worker) writeSnapshotRecord(ctx context.Context, sn snapshot.Snapshot) error {
	sealed, err := w.sealer.SnapshotRecord(sn)
	if err != nil {
		return err
	}
	sum := sha(sealed)
	obj := repair.Object{Name: repository.SnapshotRecordName(sn.ID), Size: int64(len(sealed)), SHA256: hex.EncodeToString(sum[:])}
	cl := w.cfg.Classes[sn.Class]
	targets := w.classTargets(sn.Class)
	opts := w.putOptions(sn.Class, sn.Hold)
	held, reasons, err := w.replicate(ctx, "write snapshot record", cl.minReplicas(), targets, obj, replica.BytesSource(sealed), opts)
	if err != nil {
		return err
	}
	return w.queueMissing(ctx, "snapshot."+sn.ID, sn.Class, targets, held, reasons, opts, obj)
}

// writeErasure writes a customer's erasure record to every configured target that answers. It
// fails unless at least one holds it; the others are queued for repair.
func (w *Worker) writeErasure(ctx context.Context, pseudonym string) error {
	sealed, err := w.sealer.Erasure(pseudonym, w.cfg.Clock())
	if err != nil {
		return err
	}
	sum := sha(sealed)
	obj := repair.Object{Name: repository.ErasureName(pseudonym), Size: int64(len(sealed)), SHA256: hex.EncodeToString(sum[:])}
	all := make([]target.Target, 0, len(w.cfg.Targets))
	all = append(all, w.cfg.Targets...)
	// Erasure records are never locked: an erasure is final, and a later rotation needs nothing
	// from them but their presence.
	held, reasons, err := w.replicate(ctx, "write erasure record", 1, all, obj, replica.BytesSource(sealed), target.PutOptions{})
	if err != nil {
		return err
	}
	return w.queueMissing(ctx, "erasure."+pseudonym, "", all, held, reasons, target.PutOptions{}, obj)
}

// queueMissing records in the repair queue every target of all that does not hold the objects.
// id names the entry ("erasure.<pseudonym>", "snapshot.<job>"); the repairer copies the objects
// and, as id is not a pack, leaves the index alone.
func (w *Worker) queueMissing(ctx context.Context, id, class string, all, held []target.Target, reasons map[string]string, opts target.PutOptions, objs ...repair.Object) error {
	if len(held) == len(all) {
		return nil
	}
	if w.deps.Repairs == nil {
		return fmt.Errorf("%s is missing from %d targets and no repair queue is configured", id, len(all)-len(held))
	}
	names := make([]string, len(held))
	for i, t := range held {
		names[i] = t.Name()
	}
	for _, t := range all {
		if slices.Contains(names, t.Name()) {
			continue
		}
		miss := repair.Missing{Pack: id, Class: class, Target: t.Name(), Objects: objs, From: names,
			Since: w.cfg.Clock().UTC(), Reason: reasons[t.Name()], RetainUntil: opts.RetainUntil, LegalHold: opts.LegalHold}
		if err := w.deps.Repairs.Add(ctx, miss); err != nil {
			return err
		}
		w.count(func(s *Stats) { s.ReplicasMissed++ })
		w.log.Warn("replica missed; queued for repair", "object", id, "target", t.Name(), "err", reasons[t.Name()])
	}
	return nil
}
