package audit_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
)

// ReadEntriesAfter reads what ReadEntries reads, reusing the entries it was given.
func TestReadEntriesAfter(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	if got, err := audit.ReadEntriesAfter(ctx, ns.JS, nil); err != nil || len(got) != 0 {
		t.Fatalf("before the stream exists: %d entries, %v", len(got), err)
	}
	log, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(from, n int) {
		for i := from; i < from+n; i++ {
			if err := log.Append(ctx, audit.Entry{Time: time.Now(), Kind: audit.KindRetentionExpiry, Class: "critical",
				Count: int64(i + 1), Outcome: "expired"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, 5)
	first, err := audit.ReadEntriesAfter(ctx, ns.JS, nil)
	if err != nil || len(first) != 5 {
		t.Fatalf("%d entries, %v", len(first), err)
	}
	appendN(5, 3)
	all, err := audit.ReadEntriesAfter(ctx, ns.JS, first)
	if err != nil {
		t.Fatal(err)
	}
	want, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(all, want, bytes.Equal) || len(all) != 8 {
		t.Fatalf("%d entries read after the first 5, want the %d ReadEntries reads", len(all), len(want))
	}
	if _, err := audit.ReadEntriesAfter(ctx, ns.JS, append(all, []byte("{}"))); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("more entries known than the stream holds: %v, want ErrTampered", err)
	}
}

// WriteCheckpoint writes the entries and a checkpoint to every target; a target that missed a
// checkpoint is named as lagging and caught up by the next; a log that no longer verifies
// against what the targets hold is refused and nothing is written.
func TestWriteCheckpoint(t *testing.T) {
	t.Parallel()
	k := newKey(t, 7)
	ctx := context.Background()
	var targets []target.Target
	for _, n := range []string{"a", "b"} {
		tg, err := fs.New(t.TempDir(), fs.WithLabel(n))
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	log := chain(t, 12)
	write := func(entries [][]byte, to []target.Target) (audit.CheckpointResult, error) {
		return audit.WriteCheckpoint(ctx, audit.CheckpointWrite{Entries: entries, Held: audit.ReadTargetCheckpoints(ctx, targets),
			Targets: to, Signer: k.signer, Verifier: k.verifier, Now: time.Now()})
	}
	if res, err := write(nil, targets); err != nil || res.Signed != nil {
		t.Fatalf("empty log: %+v, %v", res, err)
	}
	if res, err := write(log[:5], targets[:1]); err != nil || res.Written != 1 || res.Checkpoint.Size != 5 {
		t.Fatalf("first checkpoint: %+v, %v", res, err)
	}
	held := audit.ReadTargetCheckpoints(ctx, targets)
	if held.Sizes != 1 || held.Lagging["fs:b"] != 0 || len(held.Lagging) != 1 {
		t.Fatalf("after a checkpoint written to a only: %+v", held)
	}
	res, err := write(log, targets)
	if err != nil || res.Written != 2 || len(res.Failures) != 0 || res.Checkpoint.Size != 12 {
		t.Fatalf("second checkpoint: %+v, %v", res, err)
	}
	held = audit.ReadTargetCheckpoints(ctx, targets)
	if len(held.Data) != 2 || len(held.Lagging) != 1 { // b missed the first: it is not copied to it
		t.Fatalf("held: %d checkpoints, lagging %v", len(held.Data), held.Lagging)
	}
	if rep, err := audit.Verify(log, held.Data, k.verifier); err != nil || rep.Head != 12 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}

	// Entry 3 rewritten: refused, nothing written.
	bad := slices.Clone(log)
	bad[3] = bytes.Replace(bad[3], []byte("critical"), []byte("critica!"), 1)
	res, err = write(append(bad, chain(t, 13)[12]), targets)
	if !errors.Is(err, audit.ErrNotVerified) || res.Report.FirstBad != 3 || res.Signed != nil {
		t.Fatalf("rewritten log: %+v, %v; want ErrNotVerified naming entry 3", res.Report, err)
	}
	if after := audit.ReadTargetCheckpoints(ctx, targets); len(after.Data) != 2 {
		t.Fatalf("%d checkpoints after a refused write, want 2", len(after.Data))
	}
	if got := audit.Name("s3:bucket/prefix"); got != "s3:bucket_prefix" {
		t.Fatal(got)
	}
	if got := audit.Name(""); got != "_" {
		t.Fatal(got)
	}
}
