package repository_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	at0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	// The key file every world is written with; tests make others that differ in one part.
	worldKEK          = bytes.Repeat([]byte{1}, 32)
	worldPseudonymKey = bytes.Repeat([]byte{2}, 32)
)

func localKMS(t testing.TB, kek, pseudonymKey []byte) *keys.LocalKMS {
	t.Helper()
	kms, err := keys.NewLocalKMS(kek, pseudonymKey)
	if err != nil {
		t.Fatal(err)
	}
	return kms
}

// world is one test's record: a key file, a key store wrapping keys with it, and in-memory
// targets behind fault injectors, written as the worker writes (packs, then manifests carrying
// the customers' wrapped keys; erasure and snapshot records).
type world struct {
	kms     *keys.LocalKMS
	store   *keys.MemStore
	sealer  *repository.Sealer
	opener  *repository.Opener
	codec   *pack.Codec
	faults  []*faulty.Target
	targets []target.Reader
	seq     uint64
}

func newWorld(t testing.TB, n int) *world {
	t.Helper()
	kms := localKMS(t, worldKEK, worldPseudonymKey)
	w := &world{kms: kms, store: keys.NewMemStoreWithKMS(kms), opener: repository.NewOpener(kms, kms.Fingerprint())}
	var err error
	if w.sealer, err = repository.NewSealer(t.Context(), w.store, kms.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if w.codec, err = pack.NewCodec(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.codec.Close)
	for i := range n {
		f := faulty.New(mem.New(mem.WithLabel(string(rune('a' + i)))))
		w.faults = append(w.faults, f)
		w.targets = append(w.targets, f)
	}
	return w
}

func (w *world) customer(name string) string { return w.kms.Pseudonym("shop", name) }

// on returns the targets with the given indexes, every target when none is given.
func (w *world) on(idx []int) []*faulty.Target {
	if len(idx) == 0 {
		return w.faults
	}
	out := make([]*faulty.Target, len(idx))
	for i, j := range idx {
		out[i] = w.faults[j]
	}
	return out
}

// write stores an object on the given targets (every target when none is given).
func (w *world) write(t testing.TB, name string, data []byte, on ...int) {
	t.Helper()
	for _, f := range w.on(on) {
		if err := f.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
			t.Fatal(err)
		}
	}
}

// build seals one item for each named customer into a pack, and the pack's manifest with each
// customer's wrapped key.
func (w *world) build(t testing.TB, class string, customers ...string) (pack.Built, []byte) {
	t.Helper()
	ctx := t.Context()
	var items []pack.Item
	for _, name := range customers {
		w.seq++
		c := w.customer(name)
		dek, err := w.store.DataKey(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%032x", w.seq)
		at := at0.Add(time.Duration(w.seq) * time.Second)
		meta := pack.ItemMeta{Tenant: "shop", CustomerID: name, RecordKey: fmt.Sprint("k", w.seq), EventID: fmt.Sprint("ev-", w.seq), EventTime: at}
		sealed, err := w.codec.SealItem(dek, c, class, id, meta, []byte(fmt.Sprintf("record %d of %s", w.seq, name)))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: id, Customer: c, Seq: w.seq, EventTime: at, Sealed: sealed})
	}
	b := pack.Build(class, items)
	b.Manifest.Keys = map[string]pack.WrappedKey{}
	for _, c := range b.Manifest.Customers() {
		env, err := w.store.Envelope(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		b.Manifest.Keys[c] = pack.WrappedKey{KEK: env.KEK, DEK: env.DEK}
	}
	sealed, err := w.sealer.Manifest(b.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	return b, sealed
}

// addPack writes a pack and then its manifest to the given targets (every target when none).
func (w *world) addPack(t testing.TB, on []int, customers ...string) pack.Manifest {
	t.Helper()
	b, sealed := w.build(t, "critical", customers...)
	w.write(t, repository.PackName(b.Manifest.Pack), b.Data, on...)
	w.write(t, repository.ManifestName(b.Manifest.Pack), sealed, on...)
	return b.Manifest
}

// erase writes a customer's erasure record to the given targets and destroys its key.
func (w *world) erase(t testing.TB, name string, on ...int) string {
	t.Helper()
	c := w.customer(name)
	sealed, err := w.sealer.Erasure(c, at0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.ErasureName(c), sealed, on...)
	if err := w.store.Destroy(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// addSnapshot writes a snapshot record to the given targets.
func (w *world) addSnapshot(t testing.TB, sn snapshot.Snapshot, on ...int) {
	t.Helper()
	sealed, err := w.sealer.SnapshotRecord(sn)
	if err != nil {
		t.Fatal(err)
	}
	w.write(t, repository.SnapshotRecordName(sn.ID), sealed, on...)
}

func jobID(n int) string { return fmt.Sprintf("%02x%030x", n, n) }

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every kind of catalog object opens back to what was sealed, and sealing is deterministic.
func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	ctx := t.Context()
	b, sealedManifest := w.build(t, "critical", "alice", "bob", "alice")
	job := jobID(7)
	task := snapshot.Manifest{V: 1, Snapshot: job, Class: "critical", Task: 3, Method: "full", Entries: []snapshot.Entry{
		{Customer: w.customer("alice"), Ref: "r1", Digest: "d1", Pack: b.Manifest.Pack, Item: b.Manifest.Items[0]},
		{Customer: w.customer("bob"), Ref: "r2", Deleted: true},
	}}
	sn := snapshot.Snapshot{ID: job, Class: "critical", Method: source.Full, Time: at0, Cursor: []byte("c1"), Records: 2,
		Tasks: []snapshot.TaskResult{{Job: job, Task: 3, Records: 2, Packs: []string{b.Manifest.Pack}, Done: at0}}, Committed: at0.Add(time.Minute)}
	alice := w.customer("alice")

	type kind struct {
		name  string
		seal  func() ([]byte, error)
		open  func([]byte) (any, error)
		wrong func([]byte) error // opens the bytes as another object of the same kind
		want  any
	}
	for _, k := range []kind{
		{"manifest", func() ([]byte, error) { return w.sealer.Manifest(b.Manifest) },
			func(s []byte) (any, error) { return w.opener.Manifest(ctx, b.Manifest.Pack, s) },
			func(s []byte) error { _, err := w.opener.Manifest(ctx, strings.Repeat("0", 32), s); return err },
			b.Manifest},
		{"task manifest", func() ([]byte, error) { return w.sealer.TaskManifest(task) },
			func(s []byte) (any, error) { return w.opener.TaskManifest(ctx, job, 3, s) },
			func(s []byte) error { _, err := w.opener.TaskManifest(ctx, job, 4, s); return err },
			task},
		{"snapshot record", func() ([]byte, error) { return w.sealer.SnapshotRecord(sn) },
			func(s []byte) (any, error) { return w.opener.SnapshotRecord(ctx, job, s) },
			func(s []byte) error { _, err := w.opener.SnapshotRecord(ctx, jobID(8), s); return err },
			sn},
		{"erasure record", func() ([]byte, error) { return w.sealer.Erasure(alice, at0.Add(1500*time.Millisecond)) },
			func(s []byte) (any, error) { return w.opener.Erasure(ctx, alice, s) },
			func(s []byte) error { _, err := w.opener.Erasure(ctx, w.customer("bob"), s); return err },
			// the erasure time is kept to the second
			repository.Erasure{V: 1, Customer: alice, Erased: at0.Add(time.Second)}},
	} {
		t.Run(k.name, func(t *testing.T) {
			sealed, err := k.seal()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(sealed), repository.Magic) {
				t.Fatalf("sealed object starts %q", sealed[:8])
			}
			again, err := k.seal()
			if err != nil || !bytes.Equal(sealed, again) {
				t.Errorf("sealing twice gave other bytes (%v)", err)
			}
			got, err := k.open(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := mustJSON(t, got), mustJSON(t, k.want); g != w {
				t.Errorf("opened\n%s\nwant\n%s", g, w)
			}
			if err := k.wrong(sealed); !errors.Is(err, crypto.ErrAuth) {
				t.Errorf("opened as another object: %v, want crypto.ErrAuth", err)
			}
			// The header carries the wrapped catalog key and the fingerprint.
			h, _, err := repository.Decode(sealed)
			if err != nil {
				t.Fatal(err)
			}
			env, err := w.store.Envelope(ctx, pack.CatalogScope)
			if err != nil {
				t.Fatal(err)
			}
			if h.V != 1 || h.KEK != w.kms.KeyID() || !bytes.Equal(h.DEK, env.DEK) || h.PK != w.kms.Fingerprint() {
				t.Errorf("header %+v, want kek %s, the catalog envelope and pk %s", h, w.kms.KeyID(), w.kms.Fingerprint())
			}
			if got, err := w.opener.CatalogEnvelope(ctx, sealed); err != nil || got.KEK != env.KEK || !bytes.Equal(got.DEK, env.DEK) {
				t.Errorf("CatalogEnvelope = %+v, %v", got, err)
			}
		})
	}
	// The manifest as sealed by the Sealer is the pack code's sealing behind the header.
	_, body, err := repository.Decode(sealedManifest)
	if err != nil {
		t.Fatal(err)
	}
	catKey, err := w.store.Lookup(ctx, pack.CatalogScope)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := pack.OpenManifest(catKey, b.Manifest.Pack, body); err != nil || m.Pack != b.Manifest.Pack {
		t.Errorf("body does not open with the pack code: %v", err)
	}
}

// A manifest that lacks a customer's wrapped key is never sealed: the targets could not open
// that customer's items.
func TestSealManifestRequiresKeys(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	b, _ := w.build(t, "critical", "alice", "bob")
	m := b.Manifest
	m.Keys = map[string]pack.WrappedKey{w.customer("alice"): m.Keys[w.customer("alice")]}
	if _, err := w.sealer.Manifest(m); err == nil || !strings.Contains(err.Error(), w.customer("bob")) {
		t.Errorf("Manifest without bob's key = %v, want an error naming him", err)
	}
	m.Keys[w.customer("bob")] = pack.WrappedKey{KEK: w.kms.KeyID()}
	if _, err := w.sealer.Manifest(m); err == nil {
		t.Error("Manifest with an empty key of bob sealed")
	}
}

// NewSealer fails when the catalog key cannot be had: a store whose scope is destroyed, or one
// that cannot wrap.
func TestNewSealerErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if _, err := repository.NewSealer(ctx, keys.NewMemStore(), "fp"); err == nil {
		t.Error("NewSealer over a store without a KMS succeeded")
	}
	s := keys.NewMemStoreWithKMS(localKMS(t, worldKEK, worldPseudonymKey))
	if err := s.Destroy(ctx, pack.CatalogScope); err != nil {
		t.Fatal(err)
	}
	if _, err := repository.NewSealer(ctx, s, "fp"); !errors.Is(err, keys.ErrDestroyed) {
		t.Errorf("NewSealer with the catalog key destroyed = %v, want keys.ErrDestroyed", err)
	}
}

// frame builds a catalog object by hand: magic, a declared header length, header bytes, body.
func frame(magic string, n uint32, header, body []byte) []byte {
	out := append([]byte(magic), binary.BigEndian.AppendUint32(nil, n)...)
	return append(append(out, header...), body...)
}

func TestDecode(t *testing.T) {
	t.Parallel()
	good := []byte(`{"v":1,"kek":"local-1","dek":"AAEC","pk":"00ff"}`)
	body := []byte("body bytes")
	padded := append(bytes.Clone(good), bytes.Repeat([]byte(" "), 4096-len(good))...)
	for _, tc := range []struct {
		name string
		in   []byte
		body []byte // nil: must fail with ErrCorrupt
	}{
		{"well formed", frame(repository.Magic, uint32(len(good)), good, body), body},
		{"empty body", frame(repository.Magic, uint32(len(good)), good, nil), []byte{}},
		{"header of exactly 4096 bytes", frame(repository.Magic, 4096, padded, body), body},
		{"empty", nil, nil},
		{"magic only", []byte(repository.Magic), nil},
		{"short length", append([]byte(repository.Magic), 0, 0, 0), nil},
		{"bad magic", frame("CUSTOSC2", uint32(len(good)), good, body), nil},
		{"lower-case magic", frame("custosc1", uint32(len(good)), good, body), nil},
		{"a pack manifest of the old format", append([]byte{crypto.Version}, bytes.Repeat([]byte{7}, 80)...), nil},
		{"header of 4097 bytes", frame(repository.Magic, 4097, append(bytes.Clone(padded), ' '), body), nil},
		{"header length beyond the object", frame(repository.Magic, uint32(len(good)+len(body)+1), good, body), nil},
		{"header length of 2^32-1", frame(repository.Magic, 0xffffffff, good, body), nil},
		{"header not JSON", frame(repository.Magic, 5, []byte("nope!"), body), nil},
		{"header of version 2", frame(repository.Magic, 13, []byte(`{"v":2,"x":1}`), body), nil},
		{"header without version", frame(repository.Magic, 2, []byte(`{}`), body), nil},
		{"dek not base64", frame(repository.Magic, 20, []byte(`{"v":1,"dek":"%%%%"}`), body), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, b, err := repository.Decode(tc.in)
			if tc.body == nil {
				if !errors.Is(err, repository.ErrCorrupt) {
					t.Fatalf("Decode = %+v, %q, %v; want ErrCorrupt", h, b, err)
				}
				return
			}
			if err != nil || !bytes.Equal(b, tc.body) || h.V != 1 || h.KEK != "local-1" || !bytes.Equal(h.DEK, []byte{0, 1, 2}) || h.PK != "00ff" {
				t.Fatalf("Decode = %+v, %q, %v", h, b, err)
			}
		})
	}
}

// tamper returns a copy of b with f applied.
func tamper(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }

// rewrap returns obj with its header replaced by change(header).
func rewrap(t *testing.T, obj []byte, change func(*repository.Header)) []byte {
	t.Helper()
	h, body, err := repository.Decode(obj)
	if err != nil {
		t.Fatal(err)
	}
	change(&h)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return frame(repository.Magic, uint32(len(hb)), hb, body)
}

// Modified objects never open: a changed body fails authentication, a changed header either
// fails the key checks or leaves a key that does not authenticate the body.
func TestTampered(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	ctx := t.Context()
	c := w.customer("alice")
	sealed, err := w.sealer.Erasure(c, at0)
	if err != nil {
		t.Fatal(err)
	}
	other := localKMS(t, bytes.Repeat([]byte{3}, 32), worldPseudonymKey)
	otherWrapped, err := other.Wrap(ctx, bytes.Repeat([]byte{4}, 32), []byte(pack.CatalogScope))
	if err != nil {
		t.Fatal(err)
	}
	// Another catalog key, wrapped by the right KEK for the catalog scope.
	forged, err := w.kms.Wrap(ctx, bytes.Repeat([]byte{5}, 32), []byte(pack.CatalogScope))
	if err != nil {
		t.Fatal(err)
	}
	// The customer's own wrapped key: the right KEK, another scope.
	env, err := w.store.Envelope(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		obj  []byte
		want error
	}{
		{"last byte of the body flipped", tamper(sealed, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), crypto.ErrAuth},
		{"body truncated", sealed[:len(sealed)-1], crypto.ErrAuth},
		{"body extended", append(bytes.Clone(sealed), 0), crypto.ErrAuth},
		{"fingerprint changed", rewrap(t, sealed, func(h *repository.Header) { h.PK = "0000000000000000" }), repository.ErrKeyMismatch},
		{"fingerprint removed", rewrap(t, sealed, func(h *repository.Header) { h.PK = "" }), repository.ErrKeyMismatch},
		{"wrapped key flipped", rewrap(t, sealed, func(h *repository.Header) { h.DEK[len(h.DEK)-1] ^= 1 }), keys.ErrUnwrap},
		{"wrapped key of another scope", rewrap(t, sealed, func(h *repository.Header) { h.DEK = env.DEK }), keys.ErrUnwrap},
		{"KEK id changed", rewrap(t, sealed, func(h *repository.Header) { h.KEK = other.KeyID() }), keys.ErrUnwrap},
		{"catalog key wrapped by another KEK", rewrap(t, sealed, func(h *repository.Header) { h.KEK, h.DEK = other.KeyID(), otherWrapped }), keys.ErrUnwrap},
		{"another catalog key", rewrap(t, sealed, func(h *repository.Header) { h.DEK = forged }), crypto.ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh opener each time: no catalog key cached from a good object.
			o := repository.NewOpener(w.kms, w.kms.Fingerprint())
			if _, err := o.Erasure(ctx, c, tc.obj); !errors.Is(err, tc.want) {
				t.Errorf("Erasure = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("body version byte changed", func(t *testing.T) {
		h, body, _ := repository.Decode(sealed)
		hb, _ := json.Marshal(h)
		obj := frame(repository.Magic, uint32(len(hb)), hb, tamper(body, func(b []byte) []byte { b[0] = 9; return b }))
		if _, err := w.opener.Erasure(ctx, c, obj); !errors.Is(err, crypto.ErrUnsupportedVersion) {
			t.Errorf("Erasure = %v, want crypto.ErrUnsupportedVersion", err)
		}
	})
	t.Run("untouched", func(t *testing.T) {
		if _, err := w.opener.Erasure(ctx, c, rewrap(t, sealed, func(*repository.Header) {})); err != nil {
			t.Errorf("re-framed but unchanged object: %v", err)
		}
	})
}

// A reader with another key file is told so: another pseudonym key gives ErrKeyMismatch (it
// would otherwise find no customer), another KEK gives keys.ErrUnwrap.
func TestOpenWithAnotherKeyFile(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	ctx := t.Context()
	_, sealed := w.build(t, "critical", "alice")
	h, _, err := repository.Decode(sealed)
	if err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name string
		kms  *keys.LocalKMS
		want error
	}{
		{"another pseudonym key", localKMS(t, worldKEK, bytes.Repeat([]byte{9}, 32)), repository.ErrKeyMismatch},
		{"another KEK", localKMS(t, bytes.Repeat([]byte{9}, 32), worldPseudonymKey), keys.ErrUnwrap},
		{"both", localKMS(t, bytes.Repeat([]byte{9}, 32), bytes.Repeat([]byte{9}, 32)), repository.ErrKeyMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := repository.NewOpener(tc.kms, tc.kms.Fingerprint())
			if _, err := o.CatalogEnvelope(ctx, sealed); !errors.Is(err, tc.want) {
				t.Errorf("CatalogEnvelope = %v, want %v", err, tc.want)
			}
			if _, err := o.Manifest(ctx, id, sealed); !errors.Is(err, tc.want) {
				t.Errorf("Manifest = %v, want %v", err, tc.want)
			}
		})
	}
	if localKMS(t, worldKEK, bytes.Repeat([]byte{9}, 32)).Fingerprint() == h.PK {
		t.Fatal("another pseudonym key has the same fingerprint")
	}
}

// The Opener caches catalog keys and is safe for concurrent use.
func TestOpenerConcurrent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	ctx := t.Context()
	var objs [][]byte
	var names []string
	for i := range 8 {
		c := w.customer(fmt.Sprint("c", i))
		sealed, err := w.sealer.Erasure(c, at0)
		if err != nil {
			t.Fatal(err)
		}
		objs, names = append(objs, sealed), append(names, c)
	}
	o := repository.NewOpener(w.kms, w.kms.Fingerprint())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range objs {
				j := (i + g) % len(objs)
				if e, err := o.Erasure(ctx, names[j], objs[j]); err != nil || e.Customer != names[j] {
					t.Errorf("Erasure = %+v, %v", e, err)
				}
			}
		})
	}
	wg.Wait()
}
