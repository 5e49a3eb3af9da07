package audit_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
)

// The log exported to an fs target verifies from that target alone; editing, deleting or
// reordering one entry in the target's export files, or dropping its newest export, is found
// and the first bad entry named.
func TestTargetTampering(t *testing.T) {
	t.Parallel()
	k := newKey(t, 1)
	log := chain(t, 30)
	cp12, cp30 := k.checkpoint(t, log[:12]), k.checkpoint(t, log)
	write := func(t *testing.T) (string, target.Target) {
		dir := t.TempDir()
		tg, err := fs.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []repository.AuditWrite{{Entries: log, Size: 12, Checkpoint: cp12}, {Entries: log, Size: 30, Checkpoint: cp30}} {
			w.Same = audit.SameTree
			if err := repository.WriteAudit(context.Background(), tg, w); err != nil {
				t.Fatal(err)
			}
		}
		return dir, tg
	}
	// rewrite changes the lines of the export holding entries first … last.
	rewrite := func(t *testing.T, dir string, first, last int64, change func([][]byte) [][]byte) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(repository.AuditEntriesName(first, last)))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ls := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
		ls = change(ls)
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, append(bytes.Join(ls, []byte("\n")), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		bad    int64
	}{
		{"untouched", func(*testing.T, string) {}, -1},
		{"edit entry 5", func(t *testing.T, dir string) {
			rewrite(t, dir, 0, 11, func(ls [][]byte) [][]byte {
				ls[5] = bytes.Replace(ls[5], []byte("committed"), []byte("abandoned"), 1)
				return ls
			})
		}, 5},
		{"edit entry 29", func(t *testing.T, dir string) {
			rewrite(t, dir, 12, 29, func(ls [][]byte) [][]byte {
				ls[17] = bytes.Replace(ls[17], []byte("critical"), []byte("archived"), 1)
				return ls
			})
		}, 29},
		{"delete entry 20", func(t *testing.T, dir string) {
			rewrite(t, dir, 12, 29, func(ls [][]byte) [][]byte { return append(ls[:8:8], ls[9:]...) })
		}, 20},
		{"reorder entries 3 and 4", func(t *testing.T, dir string) {
			rewrite(t, dir, 0, 11, func(ls [][]byte) [][]byte { ls[3], ls[4] = ls[4], ls[3]; return ls })
		}, 3},
		{"drop the newest export and its checkpoint", func(t *testing.T, dir string) {
			for _, name := range []string{repository.AuditEntriesName(12, 29), repository.AuditCheckpointName(30)} {
				if err := os.Remove(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
					t.Fatal(err)
				}
			}
		}, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, tg := write(t)
			_, other := write(t) // another target, untouched: its checkpoints count too
			tc.tamper(t, dir)
			ctx := context.Background()
			entries, err := repository.ReadAuditEntries(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			var cps [][]byte
			for _, r := range []target.Reader{tg, other} {
				got, err := repository.ReadAuditCheckpoints(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range got {
					cps = append(cps, c.Data)
				}
			}
			rep, err := audit.Verify(entries, cps, k.verifier)
			if rep.FirstBad != tc.bad || (tc.bad < 0) != (err == nil) {
				t.Fatalf("Verify = %+v, %v; want first bad entry %d", rep, err, tc.bad)
			}
		})
	}
}
