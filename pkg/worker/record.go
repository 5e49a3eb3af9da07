package worker

import (
	"context"

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
