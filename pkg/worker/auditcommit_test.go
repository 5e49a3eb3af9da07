package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/target/fs"
)

// commitEntries returns the backup_commit entries of the log.
func (b *bundle) commitEntries() []audit.Entry {
	b.t.Helper()
	entries, err := audit.List(context.Background(), b.ns.JS, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range entries {
		if e.Kind == audit.KindBackupCommit {
			out = append(out, e)
		}
	}
	return out
}

// indexedPacks returns the ids of every pack in the index, sorted.
func (b *bundle) indexedPacks() []string {
	b.t.Helper()
	ps, err := b.index.Packs(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.Pack)
	}
	slices.Sort(ids)
	return ids
}

// Packs committed in an interval are summed up per class in one backup_commit entry that lists
// them. While the log cannot be appended to, the summaries are kept (and the failure logged);
// once it can, one entry covers every pack committed meanwhile, and none is lost.
func TestBackupCommitEntriesKeptUntilWritten(t *testing.T) {
	logs := &logtest.Buffer{}
	b := setup(t, func(c *Config) {
		c.AuditCommitInterval = 50 * time.Millisecond
		c.PackMaxItems = 4 // several packs
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	w := b.startWorker()
	ctx := context.Background()
	// The log is gone (an operator's mistake, a broker being rebuilt): appends fail.
	if err := b.ns.JS.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	b.publish(30, 5)
	b.waitSettled()
	waitFor(t, 5*time.Second, "a failed append logged", func() bool {
		return strings.Contains(logs.String(), "backup_commit entries not written")
	})
	if err := audit.EnsureStream(ctx, b.ns.JS); err != nil {
		t.Fatal(err)
	}
	var entries []audit.Entry
	waitFor(t, 5*time.Second, "the kept summary written", func() bool {
		entries = b.commitEntries()
		return len(entries) > 0
	})
	if len(entries) != 1 {
		t.Fatalf("%d backup_commit entries, want one covering the interval: %+v", len(entries), entries)
	}
	e := entries[0]
	packs := slices.Sorted(slices.Values(e.Packs))
	if e.Class != "critical" || e.Count != 30 || e.Bytes <= 0 || e.Outcome != OutcomeCommitted ||
		!slices.Equal(packs, b.indexedPacks()) || len(packs) < 8 || int64(w.Stats().Packs) != int64(len(packs)) {
		t.Fatalf("entry %+v; index %v", e, b.indexedPacks())
	}

	// Commits of another class after that get their own entry.
	for i := range 3 {
		if _, err := b.producer.PublishPostTransaction(ctx, postTx(fmt.Sprintf("imp-%d", i), "c-1", "important", "k", []byte("v"))); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	waitFor(t, 5*time.Second, "the important class's entry", func() bool {
		return len(b.commitEntries()) == 2
	})
	if e := b.commitEntries()[1]; e.Class != "important" || e.Count != 3 {
		t.Fatalf("second entry %+v", e)
	}
}

// With a long interval the entry is written by Stop, and an interval with more packs than an
// entry lists names them all in its count.
func TestBackupCommitEntryFlushedAtStop(t *testing.T) {
	b := setup(t, func(c *Config) {
		c.AuditCommitInterval = time.Hour
		c.PackMaxItems = 1
	})
	defer func(n int) { maxAuditPacks = n }(maxAuditPacks)
	maxAuditPacks = 5
	w := b.startWorker()
	n := maxAuditPacks + 4
	b.publish(n, 9)
	b.waitSettled()
	if got := b.commitEntries(); len(got) != 0 {
		t.Fatalf("entries before the interval ended: %+v", got)
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries := b.commitEntries()
	if len(entries) != 1 {
		t.Fatalf("%d entries after Stop, want 1", len(entries))
	}
	e := entries[0]
	want := fmt.Sprintf("%d packs committed; the first %d are listed", n, maxAuditPacks)
	if e.Count != int64(n) || len(e.Packs) != maxAuditPacks || e.Reason != want {
		t.Fatalf("entry: count %d, %d packs listed, reason %q; want %d, %d, %q", e.Count, len(e.Packs), e.Reason, n, maxAuditPacks, want)
	}
}

// A committed snapshot gets one backup_commit entry naming it, although two workers race to
// commit it.
func TestSnapshotCommitAudited(t *testing.T) {
	sb := setupSnapshots(t)
	for c := range 6 {
		sb.pg.put(fmt.Sprintf("c-%02d", c), "k", "v")
	}
	sb.start(sb.cfg)
	sb.start(sb.cfg)
	sn := sb.waitCommitted(sb.tick("tick-audit", source.Full))
	var snaps []audit.Entry
	waitFor(t, 5*time.Second, "the snapshot's entry", func() bool {
		snaps = nil
		for _, e := range sb.commitEntries() {
			if e.Snapshot != "" {
				snaps = append(snaps, e)
			}
		}
		return len(snaps) > 0
	})
	time.Sleep(300 * time.Millisecond) // a duplicate would have been appended by now
	n := 0
	for _, e := range sb.commitEntries() {
		if e.Snapshot == sn.ID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("snapshot %s has %d backup_commit entries, want 1", sn.ID, n)
	}
	e := snaps[0]
	if e.Snapshot != sn.ID || e.Class != "critical" || e.Count != 6 || e.Bytes <= 0 || e.Outcome != OutcomeCommitted {
		t.Fatalf("snapshot entry %+v, snapshot %+v", e, sn)
	}
}

// Workers write signed checkpoints of the log, with the entries, to every target, one worker per
// turn; what they write verifies from any one target, and an entry edited in a target is named.
func TestCheckpointsWrittenByWorkers(t *testing.T) {
	dirs := map[string]string{}
	b := setup(t, func(c *Config) {
		c.AuditCommitInterval = 50 * time.Millisecond
		c.AuditCheckpointInterval = 300 * time.Millisecond
		c.Targets = nil
		var names []string
		for _, n := range []string{"ca", "cb"} {
			dirs[n] = filepath.Join(t.TempDir(), n)
			tg, err := fs.New(dirs[n], fs.WithLabel(n))
			if err != nil {
				t.Fatal(err)
			}
			c.Targets = append(c.Targets, tg)
			names = append(names, tg.Name())
		}
		c.Classes = map[string]Class{"critical": {Targets: names, Retain: time.Hour}}
	})
	w1, w2 := b.startWorker(), b.startWorker()
	b.publish(20, 4)
	b.waitSettled()
	priv := b.kms.SigningKey(keys.PurposeAuditCheckpoint)
	v, err := audit.NewVerifier(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Once the commits are logged, a checkpoint of the whole log is in both targets.
	waitFor(t, 10*time.Second, "a checkpoint of every entry in both targets", func() bool {
		entries, err := audit.ReadEntries(ctx, b.ns.JS)
		if err != nil || len(entries) == 0 {
			return false
		}
		for _, tg := range b.cfg.Targets {
			cps, err := repository.ReadAuditCheckpoints(ctx, tg)
			if err != nil || len(cps) == 0 || cps[len(cps)-1].Size != int64(len(entries)) {
				return false
			}
		}
		return true
	})
	if err := w1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var all [][]byte
	for _, tg := range b.cfg.Targets {
		cps, err := repository.ReadAuditCheckpoints(ctx, tg)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cps {
			all = append(all, c.Data)
		}
	}
	fromA, err := repository.ReadAuditEntries(ctx, b.cfg.Targets[0])
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(fromA, all, v)
	if err != nil || rep.Head != int64(len(fromA)) || len(fromA) == 0 {
		t.Fatalf("verify from target ca: %+v, %v", rep, err)
	}
	var kinds []string
	for _, e := range fromA {
		var x audit.Entry
		if err := json.Unmarshal(e, &x); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, x.Kind)
	}
	if !slices.Contains(kinds, audit.KindBackupCommit) {
		t.Fatalf("exported kinds %v", kinds)
	}

	// Edit entry 0 in target ca's export: it is named.
	matches, _ := filepath.Glob(filepath.Join(dirs["ca"], filepath.FromSlash(repository.AuditEntriesPrefix), "*"))
	if len(matches) == 0 {
		t.Fatal("no export in target ca")
	}
	slices.Sort(matches)
	p := matches[0]
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(data, []byte(`"critical"`), []byte(`"critica!"`), 1)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	fromA, err = repository.ReadAuditEntries(ctx, b.cfg.Targets[0])
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(fromA, all, v); err == nil || rep.FirstBad != 0 {
		t.Fatalf("verify of the edited export: %+v, %v; want entry 0 named", rep, err)
	}
}

// One worker at a time takes the checkpoint turn: the lease is a compare-and-set.
func TestCheckpointTurnTakenByOne(t *testing.T) {
	b := setup(t, func(c *Config) { c.AuditCheckpointInterval = time.Hour })
	w1, err := New(Deps{JS: b.ns.JS, Keys: b.keys, Pseudonyms: b.kms, Index: b.index, Repairs: b.repairs}, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := New(Deps{JS: b.ns.JS, Keys: b.keys, Pseudonyms: b.kms, Index: b.index, Repairs: b.repairs}, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		w    *Worker
		at   time.Duration
		want bool
	}{
		{w1, 0, true},                 // first turn
		{w2, 0, false},                // taken
		{w1, 30 * time.Minute, false}, // not over yet, not even for its holder
		{w2, 55 * time.Minute, true},  // 0.9 of the interval has passed
		{w1, 56 * time.Minute, false},
	} {
		got, err := step.w.takeCheckpointTurn(ctx, now.Add(step.at))
		if err != nil || got != step.want {
			t.Fatalf("turn at +%v: %v, %v; want %v", step.at, got, err, step.want)
		}
	}
}
