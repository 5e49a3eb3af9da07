package fs_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTarget(t *testing.T) *fs.Target {
	t.Helper()
	tg, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target { return newTarget(t) })
}

func TestLeftoverTempInvisibleAndCleaned(t *testing.T) {
	root := t.TempDir()
	tg, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	// A Put that crashed after writing its staging file.
	if err := os.WriteFile(filepath.Join(root, ".tmp", "put-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	targettest.Put(t, tg, "packs/a", []byte("x"))
	var names []string
	if err := tg.List(t.Context(), "", func(i target.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"packs/a"}) {
		t.Errorf("List = %v, want [packs/a]", names)
	}
	for _, name := range []string{".tmp/put-123", ".x"} {
		if _, err := tg.Stat(t.Context(), name); !errors.Is(err, target.ErrInvalidName) {
			t.Errorf("Stat(%s) = %v, want ErrInvalidName (reserved)", name, err)
		}
	}
	if n, err := tg.CleanTemp(time.Hour); err != nil || n != 0 {
		t.Errorf("CleanTemp(1h) = %d, %v; want 0 (file is fresh)", n, err)
	}
	if n, err := tg.CleanTemp(-time.Second); err != nil || n != 1 {
		t.Errorf("CleanTemp(-1s) = %d, %v; want 1", n, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, ".tmp")); len(entries) != 0 {
		t.Errorf(".tmp holds %d entries after CleanTemp", len(entries))
	}
}

func TestPermissionsAndNoTempLeft(t *testing.T) {
	root := t.TempDir()
	tg, err := fs.New(filepath.Join(root, "t"), fs.WithLabel("offsite"))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name() != "fs:offsite" {
		t.Errorf("Name = %q", tg.Name())
	}
	targettest.Put(t, tg, "packs/ab/cd", []byte("x"))
	for p, want := range map[string]os.FileMode{"t/packs": 0o700, "t/packs/ab": 0o700, "t/packs/ab/cd": 0o600, "t/.tmp": 0o700} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s has mode %v, want at most %v", p, got, want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "t", ".tmp")); len(entries) != 0 {
		t.Errorf(".tmp holds %d entries after Put", len(entries))
	}
}

func TestPathConflict(t *testing.T) {
	tg := newTarget(t)
	targettest.Put(t, tg, "a", []byte("x"))
	targettest.Put(t, tg, "b/c", []byte("y"))
	for _, name := range []string{"a/b", "b"} {
		err := tg.Put(t.Context(), name, bytes.NewReader(nil), 0, target.PutOptions{SHA256: sha256.Sum256(nil)})
		if !errors.Is(err, target.ErrPermanent) || errors.Is(err, target.ErrExists) {
			t.Errorf("Put(%s) = %v, want a permanent conflict", name, err)
		}
	}
}

func TestRetention(t *testing.T) {
	root := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tg, err := fs.New(root, fs.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("retained")
	opts := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: now.Add(24 * time.Hour)}
	if err := tg.Put(t.Context(), "r", bytes.NewReader(data), int64(len(data)), opts); err != nil {
		t.Fatal(err)
	}
	// The lock belongs to the file, so a new Target on the same root sees it.
	later := now.Add(23 * time.Hour)
	tg2, err := fs.New(root, fs.WithClock(func() time.Time { return later }))
	if err != nil {
		t.Fatal(err)
	}
	if err := tg2.Delete(t.Context(), "r"); !errors.Is(err, target.ErrLocked) {
		t.Fatalf("Delete before expiry = %v, want ErrLocked", err)
	}
	later = now.Add(25 * time.Hour)
	if err := tg2.Delete(t.Context(), "r"); err != nil {
		t.Fatalf("Delete after expiry = %v", err)
	}
}

// The target remembers the directories it made; one removed from outside is made again.
func TestDirectoryRemovedFromOutside(t *testing.T) {
	root := t.TempDir()
	tg, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	targettest.Put(t, tg, "packs/ab/one", []byte("1"))
	if err := os.RemoveAll(filepath.Join(root, "packs")); err != nil {
		t.Fatal(err)
	}
	targettest.Put(t, tg, "packs/ab/two", []byte("2"))
	if got, err := os.ReadFile(filepath.Join(root, "packs", "ab", "two")); err != nil || string(got) != "2" {
		t.Fatalf("object after its directory was removed: %q, %v", got, err)
	}
}
