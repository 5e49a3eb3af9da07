package repository_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the valid objects of testdata/fuzz/FuzzDecode")

// The ids the fuzzed objects are opened as; the seeds are sealed for them with the world's key
// file, so a mutation of a seed reaches every check of the Opener.
const (
	fuzzPack = "0123456789abcdef0123456789abcdef"
	fuzzJob  = "fedcba9876543210fedcba9876543210"
	fuzzTask = 1
)

const seedDir = "testdata/fuzz/FuzzDecode"

// fuzzSeeds seals one object of every kind for the fuzz ids.
func fuzzSeeds(t testing.TB) map[string][]byte {
	t.Helper()
	w := newWorld(t, 0)
	alice := w.customer("alice")
	env, err := w.store.Envelope(t.Context(), alice)
	if err != nil {
		t.Fatal(err)
	}
	m := pack.Manifest{V: 1, Pack: fuzzPack, Class: "critical", Size: 100, SHA256: strings.Repeat("ab", 32), NewestEvent: at0,
		Items: []pack.Entry{{ID: strings.Repeat("1", 32), Customer: alice, Seq: 7, EventTime: at0, Length: 100, SHA256: strings.Repeat("cd", 32)}},
		Keys:  map[string]pack.WrappedKey{alice: {KEK: env.KEK, DEK: env.DEK}}}
	task := snapshot.Manifest{V: 1, Snapshot: fuzzJob, Class: "critical", Task: fuzzTask, Method: "full",
		Entries: []snapshot.Entry{{Customer: alice, Ref: "r", Pack: fuzzPack, Item: m.Items[0]}}}
	sn := snapshot.Snapshot{ID: fuzzJob, Class: "critical", Method: "full", Time: at0, Cursor: []byte("c"), Committed: at0}
	out := map[string][]byte{}
	for name, seal := range map[string]func() ([]byte, error){
		"manifest":        func() ([]byte, error) { return w.sealer.Manifest(m) },
		"task-manifest":   func() ([]byte, error) { return w.sealer.TaskManifest(task) },
		"snapshot-record": func() ([]byte, error) { return w.sealer.SnapshotRecord(sn) },
		"erasure-record":  func() ([]byte, error) { return w.sealer.Erasure(alice, at0) },
	} {
		if out[name], err = seal(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// readSeed parses a file of the go fuzz corpus format holding one []byte.
func readSeed(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		t.Fatalf("%s is not a corpus file of one []byte", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}

// The committed seeds must stay valid objects of the current format, or the fuzzer would only
// ever explore the framing. go test -run TestFuzzSeeds -update-seeds rewrites them.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds(t)
	if *updateSeeds {
		for name, b := range seeds {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
			if err := os.WriteFile(filepath.Join(seedDir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	o := fuzzOpener(t)
	ctx := t.Context()
	for name := range seeds {
		b := readSeed(t, filepath.Join(seedDir, name))
		var err error
		switch name {
		case "manifest":
			_, err = o.Manifest(ctx, fuzzPack, b)
		case "task-manifest":
			_, err = o.TaskManifest(ctx, fuzzJob, fuzzTask, b)
		case "snapshot-record":
			_, err = o.SnapshotRecord(ctx, fuzzJob, b)
		case "erasure-record":
			_, err = o.Erasure(ctx, fuzzPseudonym(t), b)
		}
		if err != nil {
			t.Errorf("seed %s does not open: %v (run go test -run TestFuzzSeeds -update-seeds)", name, err)
		}
	}
}

func fuzzOpener(t testing.TB) *repository.Opener {
	kms := localKMS(t, worldKEK, worldPseudonymKey)
	return repository.NewOpener(kms, kms.Fingerprint())
}

func fuzzPseudonym(t testing.TB) string {
	return localKMS(t, worldKEK, worldPseudonymKey).Pseudonym("shop", "alice")
}

// named reports whether err is one of the errors reading a stored object may give.
func named(err error) bool {
	for _, n := range []error{repository.ErrCorrupt, repository.ErrKeyMismatch, keys.ErrUnwrap, keys.ErrCorrupt,
		crypto.ErrAuth, crypto.ErrUnsupportedVersion, pack.ErrCorrupt} {
		if errors.Is(err, n) {
			return true
		}
	}
	return false
}

// FuzzDecode feeds arbitrary bytes to Decode and to every Opener method: none may panic, every
// failure is a named error, the framing accounts for every byte, and nothing that Decode
// rejects opens.
func FuzzDecode(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	hdr := []byte(`{"v":1,"kek":"k","dek":"AA==","pk":"p"}`)
	f.Add([]byte{})
	f.Add([]byte(repository.Magic))
	f.Add(append([]byte(repository.Magic), binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))...))
	f.Add(append(append([]byte(repository.Magic), binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))...), hdr...))
	f.Add(append([]byte(repository.Magic), 0xff, 0xff, 0xff, 0xff))

	o := fuzzOpener(f)
	alice := fuzzPseudonym(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := t.Context()
		h, body, err := repository.Decode(b)
		decoded := err == nil
		if err != nil && !errors.Is(err, repository.ErrCorrupt) {
			t.Fatalf("Decode: unnamed error %v", err)
		}
		if decoded {
			n := int(binary.BigEndian.Uint32(b[len(repository.Magic):]))
			if h.V != 1 || n > 4096 || len(repository.Magic)+4+n+len(body) != len(b) || !bytes.Equal(body, b[len(b)-len(body):]) {
				t.Fatalf("Decode accounted for the bytes wrongly: header of %d, body of %d, object of %d", n, len(body), len(b))
			}
		}
		check := func(what string, err error) {
			t.Helper()
			if err == nil && !decoded {
				t.Fatalf("%s opened an object Decode rejects", what)
			}
			if err != nil && !named(err) {
				t.Fatalf("%s: unnamed error %v", what, err)
			}
		}
		_, err = o.CatalogEnvelope(ctx, b)
		check("CatalogEnvelope", err)
		m, err := o.Manifest(ctx, fuzzPack, b)
		check("Manifest", err)
		if err == nil && m.Pack != fuzzPack {
			t.Fatalf("Manifest of %s opened as %s", fuzzPack, m.Pack)
		}
		tm, err := o.TaskManifest(ctx, fuzzJob, fuzzTask, b)
		check("TaskManifest", err)
		if err == nil && (tm.Snapshot != fuzzJob || tm.Task != fuzzTask) {
			t.Fatalf("TaskManifest opened as %s/%d", tm.Snapshot, tm.Task)
		}
		sn, err := o.SnapshotRecord(ctx, fuzzJob, b)
		check("SnapshotRecord", err)
		if err == nil && sn.ID != fuzzJob {
			t.Fatalf("SnapshotRecord opened as %s", sn.ID)
		}
		e, err := o.Erasure(ctx, alice, b)
		check("Erasure", err)
		if err == nil && e.Customer != alice {
			t.Fatalf("Erasure opened as %s", e.Customer)
		}
	})
}
