package repository_test

import (
	"bytes"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// An erasure record deleted from one target and damaged in another, and a snapshot record
// missing from one target of its class, are found and copied back from a good copy.
func TestCheckRecordsRepairsMissingAndDamaged(t *testing.T) {
	b := setupWriter(t)
	ctx := t.Context()
	gone := b.kms.Pseudonym("shop", "gone")
	if _, err := b.w.WriteErasure(ctx, repository.Placement{Targets: b.targets, MinReplicas: 1}, gone, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	sn := snapshot.Snapshot{ID: "0123456789abcdef0123456789abcdef", Class: "critical", Method: "full",
		Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Cursor: []byte("c")}
	if _, err := b.w.WriteSnapshotRecord(ctx, b.placement(0), sn); err != nil {
		t.Fatal(err)
	}
	erasure, record := repository.ErasureName(gone), repository.SnapshotRecordName(sn.ID)
	if err := b.targets[1].Delete(ctx, erasure); err != nil {
		t.Fatal(err)
	}
	if err := b.targets[2].Delete(ctx, erasure); err != nil {
		t.Fatal(err)
	}
	forged := []byte("CUSTOSC1 not a record")
	if err := b.targets[2].Put(ctx, erasure, bytes.NewReader(forged), int64(len(forged)), target.PutOptions{SHA256: sha256.Sum256(forged)}); err != nil {
		t.Fatal(err)
	}
	if err := b.targets[0].Delete(ctx, record); err != nil {
		t.Fatal(err)
	}
	opener := repository.NewOpener(b.kms, b.kms.Fingerprint())
	classes := map[string][]target.Target{"critical": b.targets}

	rep, err := repository.CheckRecords(ctx, b.targets, classes, opener, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Erasures != 1 || rep.Snapshots != 1 || len(rep.Problems) != 3 || rep.Remaining() != 3 {
		t.Fatalf("dry run = %+v, want 1 erasure, 1 snapshot and 3 problems", rep)
	}
	rep, err = repository.CheckRecords(ctx, b.targets, classes, opener, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 3 || rep.Remaining() != 0 {
		t.Fatalf("repair = %+v, want 3 problems repaired", rep)
	}
	for _, p := range rep.Problems {
		if p.Object == erasure && p.Target == b.targets[2].Name() && p.Missing {
			t.Errorf("the forged copy on %s was reported missing, not damaged", p.Target)
		}
	}
	// Each target alone now knows the erasure.
	for _, tg := range b.targets {
		r := repository.NewReader(opener, tg)
		if erased, err := r.Erased(ctx, gone); err != nil || !erased {
			t.Errorf("%s: Erased = %v, %v after the repair", tg.Name(), erased, err)
		}
	}
	rep, err = repository.CheckRecords(ctx, b.targets, classes, opener, false)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("second run = %+v, %v; want clean", rep, err)
	}
	// A target that does not answer is named, not repaired.
	b.faults[1].Down()
	rep, err = repository.CheckRecords(ctx, b.targets, classes, opener, false)
	if err != nil || len(rep.Unreachable) != 1 || len(rep.Problems) != 0 {
		t.Fatalf("with a target down = %+v, %v", rep, err)
	}
}
