package worker

import (
	"context"
	"time"

	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// placement says where a class's records go and how they are locked.
func (w *Worker) placement(class string, hold bool) repository.Placement {
	return repository.Placement{Class: class, Targets: w.classTargets(class),
		MinReplicas: w.cfg.Classes[class].minReplicas(), Put: w.putOptions(class, hold)}
}

// writeSnapshotRecord writes a snapshot's record to its class's targets (at least min_replicas)
// before the broker records the snapshot.
func (w *Worker) writeSnapshotRecord(ctx context.Context, sn snapshot.Snapshot) error {
	wr, err := w.repo.WriteSnapshotRecord(ctx, w.placement(sn.Class, sn.Hold), sn)
	w.count(func(s *Stats) { s.ReplicasMissed += int64(wr.Missed) })
	return err
}

// writeErasure writes a customer's erasure record to every configured target that answers; at
// least one must hold it. Erasure records are never locked: an erasure is final, and a later
// KEK rotation needs nothing from them but their presence.
func (w *Worker) writeErasure(ctx context.Context, pseudonym string, requested time.Time) error {
	wr, err := w.repo.WriteErasure(ctx, repository.Placement{Targets: w.cfg.Targets, MinReplicas: 1}, pseudonym, requested)
	w.count(func(s *Stats) { s.ReplicasMissed += int64(wr.Missed) })
	return err
}
