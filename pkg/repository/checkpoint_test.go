package repository_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
)

func TestAuditNames(t *testing.T) {
	t.Parallel()
	if got := repository.AuditCheckpointName(42); got != "audit/checkpoints/00000000000000000042" {
		t.Fatalf("AuditCheckpointName = %s", got)
	}
	if got := repository.AuditEntriesName(0, 4095); got != "audit/entries/00000000000000000000-00000000000000004095" {
		t.Fatalf("AuditEntriesName = %s", got)
	}
	for _, n := range []int64{0, 1, 4096, 1 << 40} {
		if err := target.ValidateName(repository.AuditCheckpointName(n)); err != nil {
			t.Fatal(err)
		}
		if got, ok := repository.ParseAuditCheckpointName(repository.AuditCheckpointName(n)); !ok || got != n {
			t.Fatalf("ParseAuditCheckpointName(%d) = %d, %v", n, got, ok)
		}
		if f, l, ok := repository.ParseAuditEntriesName(repository.AuditEntriesName(n, n+7)); !ok || f != n || l != n+7 {
			t.Fatalf("ParseAuditEntriesName(%d) = %d, %d, %v", n, f, l, ok)
		}
	}
	for _, name := range []string{"audit/checkpoints/42", "audit/checkpoints/0000000000000000004x", "audit/checkpoints/000000000000000000042",
		"audit/entries/00000000000000000005-00000000000000000004", "audit/entries/00000000000000000000_00000000000000000004",
		"audit/other/00000000000000000001"} {
		_, ok1 := repository.ParseAuditCheckpointName(name)
		_, _, ok2 := repository.ParseAuditEntriesName(name)
		if ok1 || ok2 {
			t.Fatalf("%s parsed as an audit object", name)
		}
	}
}

func lines(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, fmt.Appendf(nil, `{"index":%d}`, i))
	}
	return out
}

// WriteAudit exports what a target lacks, then the checkpoint; a second run exports only the new
// entries; a retry is accepted; ReadAuditEntries gives back the entries by position.
func TestWriteAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tg, err := fs.New(t.TempDir(), fs.WithLabel("a"))
	if err != nil {
		t.Fatal(err)
	}
	entries := lines(0, repository.AuditExportEntries+10)
	w := repository.AuditWrite{Entries: entries[:7], Size: 7, Checkpoint: []byte("cp 7\n")}
	for range 2 { // the second time finds every object and accepts it
		if err := repository.WriteAudit(ctx, tg, w); err != nil {
			t.Fatal(err)
		}
	}
	w = repository.AuditWrite{Entries: entries, Size: int64(len(entries)), Checkpoint: []byte("cp big\n")}
	if err := repository.WriteAudit(ctx, tg, w); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := tg.List(ctx, "audit/", func(in target.Info) error { names = append(names, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	n := int64(len(entries))
	want := []string{repository.AuditCheckpointName(7), repository.AuditCheckpointName(n),
		repository.AuditEntriesName(0, 6), repository.AuditEntriesName(7, 7+repository.AuditExportEntries-1),
		repository.AuditEntriesName(7+repository.AuditExportEntries, n-1)}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("objects:\n%q\nwant\n%q", names, want)
	}
	got, err := repository.ReadAuditEntries(ctx, tg)
	if err != nil || len(got) != len(entries) {
		t.Fatalf("ReadAuditEntries = %d entries, %v", len(got), err)
	}
	for i := range got {
		if !bytes.Equal(got[i], entries[i]) {
			t.Fatalf("entry %d = %q", i, got[i])
		}
	}
	cps, err := repository.ReadAuditCheckpoints(ctx, tg)
	if err != nil || len(cps) != 2 || cps[0].Size != 7 || string(cps[1].Data) != "cp big\n" {
		t.Fatalf("ReadAuditCheckpoints = %+v, %v", cps, err)
	}
	// Another checkpoint of a size already stored is a conflict, unless Same says it is the same tree.
	w = repository.AuditWrite{Entries: entries[:7], Size: 7, Checkpoint: []byte("cp 7 later\n")}
	if err := repository.WriteAudit(ctx, tg, w); !errors.Is(err, repository.ErrAuditCheckpointConflict) {
		t.Fatalf("a conflicting checkpoint: %v", err)
	}
	w.Same = func(stored, cp []byte) bool { return bytes.HasPrefix(cp, bytes.TrimSuffix(stored, []byte("\n"))) }
	if err := repository.WriteAudit(ctx, tg, w); err != nil {
		t.Fatalf("the same tree signed later: %v", err)
	}
	// A log with a hole is not exported.
	holey := lines(0, 3)
	holey[1] = nil
	other, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := repository.WriteAudit(ctx, other, repository.AuditWrite{Entries: holey, Size: 3, Checkpoint: []byte("x\n")}); err == nil {
		t.Fatal("a log with a missing entry was exported")
	}
}

// ReadAuditEntries places each export's lines from its first entry on: a line removed from an
// export moves the export's later lines down one place and leaves a hole before the next
// export; a missing export leaves holes; overlapping exports are read once.
func TestReadAuditEntriesAlignment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	tg, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(first, last int, body [][]byte) {
		t.Helper()
		b := append(bytes.Join(body, []byte("\n")), '\n')
		name := repository.AuditEntriesName(int64(first), int64(last))
		if err := tg.Put(ctx, name, bytes.NewReader(b), int64(len(b)), target.PutOptions{SHA256: sha256.Sum256(b)}); err != nil {
			t.Fatal(err)
		}
	}
	all := lines(0, 20)
	put(0, 4, slices.Delete(slices.Clone(all[:5]), 2, 3)) // line 2 removed
	put(5, 9, all[5:10])
	put(8, 12, all[8:13]) // overlaps the one before
	put(15, 19, all[15:20])
	got, err := repository.ReadAuditEntries(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{all[0], all[1], all[3], all[4], nil, all[5], all[6], all[7], all[8], all[9],
		all[10], all[11], all[12], nil, nil, all[15], all[16], all[17], all[18], all[19]}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) || (got[i] == nil) != (want[i] == nil) {
			t.Fatalf("entry %d = %q, want %q", i, got[i], want[i])
		}
	}
	// Files that are not audit objects are ignored.
	if err := os.WriteFile(filepath.Join(dir, "audit", "entries", "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if again, err := repository.ReadAuditEntries(ctx, tg); err != nil || len(again) != len(want) {
		t.Fatalf("with a stray file: %d, %v", len(again), err)
	}
	if next, err := repository.AuditExported(ctx, tg); err != nil || next != 20 {
		t.Fatalf("AuditExported = %d, %v", next, err)
	}
}
