package repository_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
)

func (w *world) reader() *repository.Reader { return repository.NewReader(w.opener, w.targets...) }

func skippedOn(r *repository.Reader) []string {
	var out []string
	for _, b := range r.Skipped() {
		out = append(out, b.Target+" "+b.Object)
	}
	return out
}

// Manifest reads the first copy that authenticates and names the copies passed over.
func TestReaderManifest(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	ctx := t.Context()
	m := w.addPack(t, nil, "alice", "bob")
	name := repository.ManifestName(m.Pack)
	// Another pack's manifest under this name: its header is good, its body is not this pack's.
	_, otherSealed := w.build(t, "critical", "mallory")

	r := w.reader()
	got, err := r.Manifest(ctx, m.Pack)
	if err != nil || mustJSON(t, got) != mustJSON(t, m) || len(r.Skipped()) != 0 {
		t.Fatalf("Manifest = %+v, %v; skipped %v", got, err, r.Skipped())
	}

	w.faults[0].Corrupt(name)
	if err := w.faults[1].Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	w.write(t, name, otherSealed, 1)
	r = w.reader()
	if got, err = r.Manifest(ctx, m.Pack); err != nil || got.Pack != m.Pack {
		t.Fatalf("Manifest with one good copy = %+v, %v", got, err)
	}
	sk := r.Skipped()
	if len(sk) != 2 || sk[0].Target != "mem:a" || sk[1].Target != "mem:b" || sk[0].Object != name ||
		!errors.Is(sk[0].Err, repository.ErrCorrupt) || !errors.Is(sk[1].Err, crypto.ErrAuth) ||
		!strings.HasPrefix(sk[1].String(), "mem:b: "+name+": ") {
		t.Fatalf("skipped %v", sk)
	}

	// No good copy: every target's answer is in the error.
	w.faults[2].Down()
	_, err = w.reader().Manifest(ctx, m.Pack)
	if !errors.Is(err, repository.ErrCorrupt) || !errors.Is(err, crypto.ErrAuth) || !errors.Is(err, faulty.ErrUnavailable) {
		t.Fatalf("Manifest with no good copy = %v", err)
	}
	for _, tg := range w.targets {
		if !strings.Contains(err.Error(), tg.Name()) {
			t.Errorf("error %q does not say what %s answered", err, tg.Name())
		}
	}

	// A missing manifest, an id that is not a pack id, no targets at all.
	if _, err := w.reader().Manifest(ctx, strings.Repeat("ab", 16)); !errors.Is(err, target.ErrNotFound) {
		t.Errorf("missing manifest: %v", err)
	}
	for _, id := range []string{"", "x", "../../etc/passwd", strings.Repeat("A", 32)} {
		if _, err := w.reader().Manifest(ctx, id); !errors.Is(err, repository.ErrCorrupt) {
			t.Errorf("Manifest(%q) = %v, want ErrCorrupt", id, err)
		}
	}
	if _, err := repository.NewReader(w.opener).Manifest(ctx, m.Pack); !errors.Is(err, repository.ErrUnavailable) {
		t.Errorf("Manifest with no targets = %v, want ErrUnavailable", err)
	}
}

// The header is not authenticated, so one copy whose fingerprint differs is passed over when
// another copy opens; when no copy opens and one names another key file, that is the verdict.
func TestReaderKeyMismatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	b, _ := w.build(t, "critical", "alice")
	w.write(t, repository.PackName(b.Manifest.Pack), b.Data)
	good, err := w.sealer.Manifest(b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := repository.NewSealer(t.Context(), w.store, localKMS(t, worldKEK, bytes.Repeat([]byte{7}, 32)).Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	mismatched, err := sealer.Manifest(b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.ManifestName(b.Manifest.Pack), mismatched, 0)
	w.write(t, repository.ManifestName(b.Manifest.Pack), good, 1)
	r := w.reader()
	if _, err := r.Manifest(t.Context(), b.Manifest.Pack); err != nil {
		t.Fatalf("Manifest = %v, want the good copy of target 1", err)
	}
	if sk := r.Skipped(); len(sk) != 1 || !errors.Is(sk[0].Err, repository.ErrKeyMismatch) {
		t.Errorf("skipped %v, want the mismatched copy of target 0", sk)
	}

	b2, _ := w.build(t, "critical", "bob")
	w.write(t, repository.PackName(b2.Manifest.Pack), b2.Data)
	mismatched2, err := sealer.Manifest(b2.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.ManifestName(b2.Manifest.Pack), mismatched2)
	if _, err := r.Manifest(t.Context(), b2.Manifest.Pack); !errors.Is(err, repository.ErrKeyMismatch) {
		t.Fatalf("Manifest with every copy mismatched = %v, want ErrKeyMismatch", err)
	}
}

func TestReaderTaskManifest(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	ctx := t.Context()
	job := jobID(3)
	m := snapshot.Manifest{V: 1, Snapshot: job, Class: "critical", Task: 2, Method: "full",
		Entries: []snapshot.Entry{{Customer: w.customer("alice"), Ref: "r"}}}
	sealed, err := w.sealer.TaskManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(sealed)
	name := repository.TaskManifestName(job, 2, hex.EncodeToString(sum[:]))
	if name != snapshot.ManifestName(job, 2, hex.EncodeToString(sum[:])) {
		t.Fatalf("TaskManifestName = %q, snapshot.ManifestName = %q", name, snapshot.ManifestName(job, 2, hex.EncodeToString(sum[:])))
	}
	w.write(t, name, sealed)
	res := snapshot.TaskResult{Job: job, Task: 2, Manifest: snapshot.Object{Name: name, Size: int64(len(sealed)), SHA256: hex.EncodeToString(sum[:])}}

	got, err := w.reader().TaskManifest(ctx, job, res)
	if err != nil || mustJSON(t, got) != mustJSON(t, m) {
		t.Fatalf("TaskManifest = %+v, %v", got, err)
	}
	// Without a recorded object (a result from before names held the digest) the name is
	// derived without it, and no checksum is checked.
	w.write(t, repository.TaskManifestName(job, 2, ""), sealed)
	if _, err := w.reader().TaskManifest(ctx, job, snapshot.TaskResult{Job: job, Task: 2}); err != nil {
		t.Fatalf("TaskManifest without a recorded object: %v", err)
	}
	// A copy that differs from the recorded checksum is passed over, even if it authenticates.
	w.faults[0].Corrupt(name)
	r := w.reader()
	if _, err := r.TaskManifest(ctx, job, res); err != nil || len(r.Skipped()) != 1 || !errors.Is(r.Skipped()[0].Err, repository.ErrCorrupt) {
		t.Fatalf("TaskManifest with a corrupt first copy: %v, skipped %v", err, r.Skipped())
	}
	res.Manifest.SHA256 = strings.Repeat("0", 64)
	if _, err := w.reader().TaskManifest(ctx, job, res); !errors.Is(err, repository.ErrCorrupt) {
		t.Fatalf("TaskManifest with another checksum = %v, want ErrCorrupt", err)
	}
}

// CustomerKey opens a customer's data key from a manifest, with the KEK alone.
func TestReaderCustomerKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	ctx := t.Context()
	m := w.addPack(t, nil, "alice", "bob")
	for _, name := range []string{"alice", "bob"} {
		want, err := w.store.Lookup(ctx, w.customer(name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.reader().CustomerKey(ctx, m.Pack, w.customer(name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("CustomerKey(%s) = %x, %v; want the store's key", name, got, err)
		}
	}
	if _, err := w.reader().CustomerKey(ctx, m.Pack, w.customer("carol")); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("CustomerKey of a customer not in the pack = %v, want keys.ErrNotFound", err)
	}
	// Another KEK cannot open it.
	o := repository.NewOpener(localKMS(t, bytes.Repeat([]byte{9}, 32), worldPseudonymKey), w.kms.Fingerprint())
	if _, err := repository.NewReader(o, w.targets...).CustomerKey(ctx, m.Pack, w.customer("alice")); !errors.Is(err, keys.ErrUnwrap) {
		t.Errorf("CustomerKey with another KEK = %v, want keys.ErrUnwrap", err)
	}
}

// Erased is true when any target holds an authenticated erasure record; a forged or damaged
// record is passed over, and no answer at all is an error.
func TestReaderErased(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	ctx := t.Context()
	alice := w.erase(t, "alice", 2)
	bob := w.customer("bob")

	r := w.reader()
	if ok, err := r.Erased(ctx, alice); !ok || err != nil {
		t.Errorf("Erased(alice), record on the last target only = %v, %v", ok, err)
	}
	if ok, err := r.Erased(ctx, bob); ok || err != nil {
		t.Errorf("Erased(bob), no record = %v, %v", ok, err)
	}
	if len(r.Skipped()) != 0 {
		t.Errorf("skipped %v", r.Skipped())
	}

	// A copy of alice's record under bob's name does not erase bob.
	aliceRecord, err := w.sealer.Erasure(alice, at0)
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.ErasureName(bob), aliceRecord, 0)
	w.write(t, repository.ErasureName(bob), []byte("garbage"), 1)
	r = w.reader()
	if ok, err := r.Erased(ctx, bob); ok || err != nil {
		t.Errorf("Erased(bob), forged records = %v, %v", ok, err)
	}
	if got := skippedOn(r); len(got) != 2 || got[0] != "mem:a "+repository.ErasureName(bob) || got[1] != "mem:b "+repository.ErasureName(bob) {
		t.Errorf("skipped %v", got)
	}

	// Down targets: any one that answers decides; none answering is an error.
	w.faults[0].Down()
	w.faults[1].Down()
	if ok, err := w.reader().Erased(ctx, alice); !ok || err != nil {
		t.Errorf("Erased(alice), two targets down = %v, %v", ok, err)
	}
	if ok, err := w.reader().Erased(ctx, w.customer("carol")); ok || err != nil {
		t.Errorf("Erased(carol), two targets down, one answering = %v, %v", ok, err)
	}
	w.faults[2].Down()
	if ok, err := w.reader().Erased(ctx, alice); ok || !errors.Is(err, repository.ErrUnavailable) || !errors.Is(err, faulty.ErrUnavailable) {
		t.Errorf("Erased, every target down = %v, %v; want ErrUnavailable", ok, err)
	}

	for _, p := range []string{"", "alice", "p123", "P" + strings.Repeat("0", 32), "p" + strings.Repeat("g", 32)} {
		if _, err := w.reader().Erased(ctx, p); !errors.Is(err, repository.ErrCorrupt) {
			t.Errorf("Erased(%q) = %v, want ErrCorrupt", p, err)
		}
	}
}

// An erasure record written with another key file stops the check.
func TestReaderErasedKeyMismatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	alice := w.erase(t, "alice")
	kms := localKMS(t, worldKEK, bytes.Repeat([]byte{9}, 32))
	r := repository.NewReader(repository.NewOpener(kms, kms.Fingerprint()), w.targets...)
	if _, err := r.Erased(t.Context(), alice); !errors.Is(err, repository.ErrKeyMismatch) {
		t.Errorf("Erased = %v, want ErrKeyMismatch", err)
	}
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	otherPK := localKMS(t, worldKEK, bytes.Repeat([]byte{9}, 32))
	otherKEK := localKMS(t, bytes.Repeat([]byte{9}, 32), worldPseudonymKey)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, w *world)
		kms   *keys.LocalKMS // the reader's key file; the world's when nil
		want  error          // nil: no error; errAny: some error
	}{
		{"no catalog object yet", func(*testing.T, *world) {}, otherPK, nil},
		{"manifests, right key file", func(t *testing.T, w *world) { w.addPack(t, nil, "alice") }, nil, nil},
		{"manifests, another pseudonym key", func(t *testing.T, w *world) { w.addPack(t, nil, "alice") }, otherPK, repository.ErrKeyMismatch},
		{"manifests, another KEK", func(t *testing.T, w *world) { w.addPack(t, nil, "alice") }, otherKEK, keys.ErrUnwrap},
		{"erasure records only, another pseudonym key", func(t *testing.T, w *world) { w.erase(t, "alice") }, otherPK, repository.ErrKeyMismatch},
		{"erasure records only, right key file", func(t *testing.T, w *world) { w.erase(t, "alice") }, nil, nil},
		{"first target empty, second another key file", func(t *testing.T, w *world) { w.addPack(t, []int{1}, "alice") }, otherPK, repository.ErrKeyMismatch},
		{"first target down", func(t *testing.T, w *world) { w.addPack(t, nil, "alice"); w.faults[0].Down() }, otherPK, repository.ErrKeyMismatch},
		{"every target down", func(t *testing.T, w *world) {
			w.addPack(t, nil, "alice")
			w.faults[0].Down()
			w.faults[1].Down()
		}, nil, faulty.ErrUnavailable},
		{"first manifest damaged everywhere, the next one checked", func(t *testing.T, w *world) {
			m1, m2 := w.addPack(t, nil, "alice"), w.addPack(t, nil, "bob")
			first := min(m1.Pack, m2.Pack)
			for _, f := range w.faults {
				f.Corrupt(repository.ManifestName(first))
			}
		}, otherPK, repository.ErrKeyMismatch},
		{"every manifest damaged everywhere", func(t *testing.T, w *world) {
			m := w.addPack(t, nil, "alice")
			for _, f := range w.faults {
				f.Corrupt(repository.ManifestName(m.Pack))
			}
		}, nil, repository.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 2)
			tc.setup(t, w)
			kms := tc.kms
			if kms == nil {
				kms = w.kms
			}
			err := repository.NewReader(repository.NewOpener(kms, kms.Fingerprint()), w.targets...).CheckKey(t.Context())
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckKey = %v, want %v", err, tc.want)
			}
		})
	}
}

// ReadAll refuses objects larger than its limit.
func TestReadAll(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	name := repository.ErasureName(w.customer("alice"))
	w.write(t, name, bytes.Repeat([]byte{1}, 100))
	if b, err := repository.ReadAll(t.Context(), w.targets[0], name, 100); err != nil || len(b) != 100 {
		t.Errorf("ReadAll at the limit = %d bytes, %v", len(b), err)
	}
	if _, err := repository.ReadAll(t.Context(), w.targets[0], name, 99); !errors.Is(err, repository.ErrCorrupt) {
		t.Errorf("ReadAll over the limit = %v, want ErrCorrupt", err)
	}
	if _, err := repository.ReadAll(t.Context(), w.targets[0], pack.ManifestName(strings.Repeat("0", 32)), 99); !errors.Is(err, target.ErrNotFound) {
		t.Errorf("ReadAll of a missing object = %v, want target.ErrNotFound", err)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	id := "0123456789abcdef0123456789abcdef"
	p := "pfedcba9876543210fedcba9876543210"
	for _, tc := range [][2]string{
		{repository.PackName(id), "packs/01/" + id},
		{repository.ManifestName(id), "manifests/01/" + id},
		{repository.TaskManifestName(id, 7, ""), "snapshots/01/" + id + "/000007"},
		{repository.TaskManifestName(id, 7, strings.Repeat("ab", 32)), "snapshots/01/" + id + "/000007.abababababababab"},
		{repository.SnapshotRecordName(id), "snapshots/01/" + id + "/commit"},
		{repository.ErasureName(p), "erasures/fe/" + p},
	} {
		if tc[0] != tc[1] {
			t.Errorf("name %q, want %q", tc[0], tc[1])
		}
		if err := target.ValidateName(tc[0]); err != nil {
			t.Errorf("%q is not a valid object name: %v", tc[0], err)
		}
	}
	for s, ok := range map[string]bool{p: true, "p" + id: true, id: false, "p" + id[:31]: false, "p" + id + "0": false, "q" + id: false, "p" + strings.ToUpper(id): false} {
		if repository.ValidPseudonym(s) != ok {
			t.Errorf("ValidPseudonym(%q) = %v", s, !ok)
		}
	}
	kms := localKMS(t, worldKEK, worldPseudonymKey)
	if c := kms.Pseudonym("shop", "alice"); !repository.ValidPseudonym(c) {
		t.Errorf("a pseudonym %q is not valid", c)
	}
}
