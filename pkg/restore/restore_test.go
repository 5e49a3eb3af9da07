package restore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// bundle is one test's stack: an embedded nats-server with the catalog, a key store whose keys
// the local KMS wraps, the local KMS (also the pseudonymizer) and three in-memory targets
// behind fault injectors. It writes backups with the pack, replica, repository and catalog
// code, as the worker does.
type bundle struct {
	ns      *natstest.Server
	index   *catalog.Index
	kms     *keys.LocalKMS
	keys    keys.EnvelopeStore
	sealer  *repository.Sealer
	codec   *pack.Codec
	faults  []*faulty.Target
	targets []target.Target
	seq     uint64
}

// Key material of the bundle's key file; other tests make key files that differ in one part.
var (
	testKEK          = bytes.Repeat([]byte{1}, 32)
	testPseudonymKey = bytes.Repeat([]byte{2}, 32)
)

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{ns: natstest.Start(t)}
	var err error
	if b.index, err = catalog.Open(t.Context(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if b.kms, err = keys.NewLocalKMS(testKEK, testPseudonymKey); err != nil {
		t.Fatal(err)
	}
	b.useKeys(t, keys.NewMemStoreWithKMS(b.kms))
	if b.codec, err = pack.NewCodec(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.codec.Close)
	for _, l := range []string{"a", "b", "c"} {
		f := faulty.New(mem.New(mem.WithLabel(l)))
		b.faults = append(b.faults, f)
		b.targets = append(b.targets, f)
	}
	return b
}

// useKeys makes store the key store backups are written with (before any backup).
func (b *bundle) useKeys(t testing.TB, store keys.EnvelopeStore) {
	t.Helper()
	b.keys = store
	var err error
	if b.sealer, err = repository.NewSealer(t.Context(), store, b.kms.Fingerprint()); err != nil {
		t.Fatal(err)
	}
}

// record is one record of one customer, as a producer sent it.
type record struct {
	tenant, customer, key string
	data                  []byte
	at                    time.Time
}

func rec(customer, key, data string, at time.Time) record {
	return record{tenant: "shop", customer: customer, key: key, data: []byte(data), at: at}
}

// built is a sealed pack and what went into it.
type built struct {
	pack.Built
	records []record
}

// seal encrypts records as items of one pack, each from its own event, in stream order.
func (b *bundle) seal(t testing.TB, class string, recs ...record) built {
	t.Helper()
	var items []pack.Item
	for _, r := range recs {
		b.seq++
		pseudo := b.kms.Pseudonym(r.tenant, r.customer)
		dek, err := b.keys.DataKey(t.Context(), pseudo)
		if err != nil {
			t.Fatal(err)
		}
		eventID := fmt.Sprint("ev-", b.seq)
		id := b.kms.Pseudonym("item:"+r.tenant, eventID+"#0")
		meta := pack.ItemMeta{Tenant: r.tenant, CustomerID: r.customer, RecordKey: r.key, EventID: eventID, EventTime: r.at}
		sealed, err := b.codec.SealItem(dek, pseudo, class, id, meta, r.data)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: id, Customer: pseudo, Seq: b.seq, EventTime: r.at, Sealed: sealed})
	}
	return built{Built: pack.Build(class, items), records: recs}
}

// sealManifest seals a pack's manifest as the worker does: with the wrapped key of every
// customer it lists, as a catalog object.
func (b *bundle) sealManifest(t testing.TB, m pack.Manifest) []byte {
	t.Helper()
	m.Keys = map[string]pack.WrappedKey{}
	for _, c := range m.Customers() {
		env, err := b.keys.Envelope(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		m.Keys[c] = pack.WrappedKey{KEK: env.KEK, DEK: env.DEK}
	}
	sealed, err := b.sealer.Manifest(m)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

// store writes a pack to every target, then its manifest, then indexes it (design.md 5).
func (b *bundle) store(t testing.TB, p built) built {
	t.Helper()
	ctx := t.Context()
	m := p.Manifest
	res := replica.Write(ctx, b.targets, pack.ObjectName(m.Pack), m.Size, p.Sum, replica.BytesSource(p.Data), target.PutOptions{})
	if err := replica.Err(res); err != nil {
		t.Fatal(err)
	}
	sealed := b.sealManifest(t, m)
	res = replica.Write(ctx, b.targets, pack.ManifestName(m.Pack), int64(len(sealed)), sha256.Sum256(sealed), replica.BytesSource(sealed), target.PutOptions{})
	if err := replica.Err(res); err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(b.targets))
	for i, tg := range b.targets {
		names[i] = tg.Name()
	}
	if err := b.index.Commit(ctx, m, names, t0.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return p
}

// erase erases a customer as the worker does: its erasure record is written to the given
// targets (every target when none is given), then its key is destroyed.
func (b *bundle) erase(t *testing.T, customer string, on ...int) string {
	t.Helper()
	pseudo := b.kms.Pseudonym("shop", customer)
	if len(on) == 0 {
		on = []int{0, 1, 2}
	}
	sealed, err := b.sealer.Erasure(pseudo, t0.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range on {
		put(t, b.targets[i], repository.ErasureName(pseudo), sealed)
	}
	if err := b.keys.Destroy(t.Context(), pseudo); err != nil {
		t.Fatal(err)
	}
	return pseudo
}

func (b *bundle) backup(t testing.TB, class string, recs ...record) built {
	t.Helper()
	return b.store(t, b.seal(t, class, recs...))
}

func (b *bundle) restorer(readers ...target.Reader) *restore.Restorer {
	if len(readers) == 0 {
		for _, tg := range b.targets {
			readers = append(readers, tg)
		}
	}
	return &restore.Restorer{Index: b.index, Targets: readers, Keys: b.keys, Pseudonyms: b.kms}
}

// replace swaps the stored copy of an object on one target for other bytes.
func replace(t *testing.T, tg target.Target, name string, data []byte) {
	t.Helper()
	if err := tg.Delete(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	put(t, tg, name, data)
}

// put stores an object on one target.
func put(t testing.TB, tg target.Target, name string, data []byte) {
	t.Helper()
	if err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
		t.Fatal(err)
	}
}

// files returns every file under dir (relative path → content).
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// want lists the files a restore must write: the given records, the last of each key winning.
func want(out string, recs ...record) map[string]string {
	w := map[string]string{}
	for _, r := range recs {
		rel, _ := filepath.Rel(out, restore.Path(out, r.tenant, r.customer, r.key))
		w[rel] = string(r.data)
	}
	return w
}

func checkFiles(t *testing.T, out string, want map[string]string) {
	t.Helper()
	got := files(t, out)
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s not restored", k)
		} else if g != v {
			t.Errorf("%s restored as %.40q, want %.40q", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected file %s", k)
		}
	}
}

func randomData(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func TestCustomer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := []record{
		rec("alice", "profile", `{"name":"Alice"}`, t0),
		rec("alice", "orders/1", "", t0.Add(time.Second)), // an empty record
		rec("alice", "export", randomData(1, 3*crypto.SegmentSize+5), t0.Add(2*time.Second)),
	}
	others := []record{rec("bob", "profile", `{"name":"Bob"}`, t0), rec("carol", "profile", "c", t0)}
	b.backup(t, "critical", alice[0], others[0], alice[1])
	b.backup(t, "important", alice[2], others[1])

	out := t.TempDir()
	rep, err := b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, r := range alice {
		size += int64(len(r.data))
	}
	if !rep.OK() || rep.Customers != 1 || rep.Records != 3 || rep.Items != 3 || rep.Bytes != size || len(rep.Erased) != 0 {
		t.Fatalf("report %+v", rep)
	}
	checkFiles(t, out, want(out, alice...))

	// A customer with no backups restores nothing, successfully.
	out = t.TempDir()
	rep, err = b.restorer().Customer(t.Context(), "shop", "nobody", restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Items != 0 || rep.Customers != 0 {
		t.Fatalf("restore of an unknown customer: %+v, %v", rep, err)
	}
	checkFiles(t, out, nil)
	// Same customer id in another tenant is another customer.
	rep, err = b.restorer().Customer(t.Context(), "other-shop", "alice", restore.Options{Out: out})
	if err != nil || rep.Items != 0 {
		t.Fatalf("restore of alice in another tenant: %+v, %v", rep, err)
	}
}

func TestAll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var all []record
	for p := range 3 {
		var recs []record
		for c := range 7 {
			recs = append(recs, rec(fmt.Sprint("c", c), fmt.Sprint("k", p), randomData(uint64(p*10+c), 100*c), t0.Add(time.Duration(p)*time.Minute)))
		}
		all = append(all, recs...)
		b.backup(t, []string{"critical", "important"}[p%2], recs...)
	}
	// Identifiers that are awkward as path elements, in another tenant.
	odd := []record{
		{tenant: "a/b", customer: "..", key: "../../etc/passwd", data: []byte("x"), at: t0},
		{tenant: "a/b", customer: ".", key: "", data: []byte("y"), at: t0},
		{tenant: "a/b", customer: "%2e%2e", key: "dir/file name", data: []byte("z"), at: t0},
	}
	b.backup(t, "critical", odd...)
	all = append(all, odd...)

	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Customers != 10 || rep.Items != len(all) || rep.Records != len(all) {
		t.Fatalf("report %+v", rep)
	}
	checkFiles(t, out, want(out, all...))
}

// Each record is restored as it was at a time: the newest version at or before it.
func TestAsOf(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v1 := rec("alice", "profile", "v1", t0)
	v2 := rec("alice", "profile", "v2", t0.Add(10*time.Minute))
	v3 := rec("alice", "profile", "v3", t0.Add(20*time.Minute))
	late := rec("alice", "late", "only later", t0.Add(30*time.Minute))
	bob := rec("bob", "profile", "bob", t0.Add(5*time.Minute))
	b.backup(t, "critical", v1, bob)
	b.backup(t, "critical", v3) // packs need not be in event-time order
	b.backup(t, "important", v2, late)

	for _, tc := range []struct {
		name  string
		asOf  time.Time
		alice []record
		bob   bool
	}{
		{"latest", time.Time{}, []record{v3, late}, true},
		{"between versions", t0.Add(15 * time.Minute), []record{v2}, true},
		{"exactly at a version", t0.Add(20 * time.Minute), []record{v3}, true},
		{"just before it", t0.Add(20*time.Minute - time.Nanosecond), []record{v2}, true},
		{"at the first", t0, []record{v1}, false},
		{"before anything", t0.Add(-time.Hour), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := restore.Options{Out: t.TempDir(), AsOf: tc.asOf}
			rep, err := b.restorer().Customer(t.Context(), "shop", "alice", opts)
			if err != nil || !rep.OK() || rep.Records != len(tc.alice) {
				t.Fatalf("Customer: %+v, %v", rep, err)
			}
			checkFiles(t, opts.Out, want(opts.Out, tc.alice...))

			opts.Out = t.TempDir()
			rep, err = b.restorer().All(t.Context(), opts)
			if err != nil || !rep.OK() {
				t.Fatalf("All: %+v, %v", rep, err)
			}
			w := tc.alice
			if tc.bob {
				w = append(slices.Clone(w), bob)
			}
			checkFiles(t, opts.Out, want(opts.Out, w...))
		})
	}
}

// Versions with the same event time are ordered by stream sequence.
func TestSameEventTimeHighestSequenceWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.backup(t, "critical", rec("alice", "k", "first", t0), rec("alice", "k", "second", t0))
	b.backup(t, "critical", rec("alice", "k", "third", t0))
	out := t.TempDir()
	if rep, err := b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out}); err != nil || !rep.OK() || rep.Items != 3 || rep.Records != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, rec("alice", "k", "third", t0)))
}

// damage is one way a stored copy can go bad.
type damage struct {
	name  string
	apply func(t *testing.T, b *bundle, tg int, p built)
	says  string // what the failure report says when no copy is good
	// partial damage leaves some items of the copy good (TestAllReplicasBad skips it).
	partial bool
}

// reseal encrypts every item of a pack again with a random nonce: each item still
// authenticates, but its bytes differ from the manifest's checksum.
func reseal(t *testing.T, b *bundle, p built) []byte {
	t.Helper()
	var out []byte
	for _, e := range p.Manifest.Items {
		dek, err := b.keys.Lookup(t.Context(), e.Customer)
		if err != nil {
			t.Fatal(err)
		}
		aad := pack.ItemAAD(e.Customer, p.Manifest.Class, e.ID)
		plain, err := crypto.Open(dek, aad, p.Data[e.Offset:e.Offset+e.Length])
		if err != nil {
			t.Fatal(err)
		}
		n, err := crypto.RandomNonce()
		if err != nil {
			t.Fatal(err)
		}
		again, err := crypto.Seal(dek, aad, n, plain)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, again...)
	}
	return out
}

// flipItems replaces a target's copy of a pack by one with the first byte of every item flipped.
func flipItems(t *testing.T, b *bundle, tg int, p built) {
	t.Helper()
	d := bytes.Clone(p.Data)
	for _, e := range p.Manifest.Items {
		d[e.Offset] ^= 0xff
	}
	replace(t, b.targets[tg], pack.ObjectName(p.Manifest.Pack), d)
}

var damages = []damage{
	{"first byte of every item flipped", flipItems, "unsupported format version", false},
	// A pack is read once, so a read fault damages the first item read from it.
	{"first byte of every read flipped", func(t *testing.T, b *bundle, tg int, p built) {
		b.faults[tg].Corrupt(pack.ObjectName(p.Manifest.Pack))
	}, "unsupported format version", true},
	{"a bit flipped inside every item", func(t *testing.T, b *bundle, tg int, p built) {
		d := bytes.Clone(p.Data)
		for _, e := range p.Manifest.Items {
			d[e.Offset+e.Length/2] ^= 0x04
		}
		replace(t, b.targets[tg], pack.ObjectName(p.Manifest.Pack), d)
	}, "authentication failed", false},
	{"truncated inside the first item", func(t *testing.T, b *bundle, tg int, p built) {
		replace(t, b.targets[tg], pack.ObjectName(p.Manifest.Pack), p.Data[:p.Manifest.Items[0].Length/2])
	}, "", false}, // the first item is cut short, the others are missing
	{"re-encrypted", func(t *testing.T, b *bundle, tg int, p built) {
		replace(t, b.targets[tg], pack.ObjectName(p.Manifest.Pack), reseal(t, b, p))
	}, "checksum mismatch", false},
	{"missing", func(t *testing.T, b *bundle, tg int, p built) {
		if err := b.targets[tg].Delete(t.Context(), pack.ObjectName(p.Manifest.Pack)); err != nil {
			t.Fatal(err)
		}
	}, "not found", false},
	{"target down", func(t *testing.T, b *bundle, tg int, p built) { b.faults[tg].Down() }, "unavailable", false},
}

// A bad copy is skipped in favour of a good one, whichever target holds it.
func TestBadReplicaSkipped(t *testing.T) {
	t.Parallel()
	for _, d := range damages {
		for _, bad := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s on target %d", d.name, bad), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				recs := []record{rec("alice", "k1", "one", t0), rec("bob", "k1", randomData(2, 70_000), t0), rec("alice", "k2", "two", t0)}
				p := b.backup(t, "critical", recs...)
				d.apply(t, b, bad, p)
				for _, all := range []bool{false, true} {
					out := t.TempDir()
					var rep restore.Report
					var err error
					wantRecs := recs
					if all {
						rep, err = b.restorer().All(t.Context(), restore.Options{Out: out})
					} else {
						rep, err = b.restorer().Customer(t.Context(), "shop", "bob", restore.Options{Out: out})
						wantRecs = recs[1:2]
					}
					if err != nil || !rep.OK() || rep.Items != len(wantRecs) {
						t.Fatalf("all=%v: %+v, %v", all, rep, err)
					}
					checkFiles(t, out, want(out, wantRecs...))
				}
			})
		}
	}
}

// With every copy bad, each item is reported as a failure, nothing is written for it and the
// report is not OK (the CLI exits non-zero).
func TestAllReplicasBad(t *testing.T) {
	t.Parallel()
	for _, d := range damages {
		if d.name == "target down" || d.partial {
			continue // every target down: TestEverythingDown; partial: some items are good
		}
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			good := rec("carol", "k", "carol's record", t0)
			b.backup(t, "important", good)
			p := b.backup(t, "critical", rec("alice", "k1", "one", t0), rec("bob", "k1", "b", t0), rec("alice", "k2", "two", t0))
			for tg := range b.targets {
				d.apply(t, b, tg, p)
			}
			out := t.TempDir()
			rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || len(rep.Failures) != 3 || rep.Items != 1 {
				t.Fatalf("report %+v, want 3 failures and carol restored", rep)
			}
			for _, f := range rep.Failures {
				if !strings.Contains(f, p.Manifest.Pack) || !strings.Contains(f, d.says) {
					t.Errorf("failure %q does not name the pack and say %q", f, d.says)
				}
				for _, tg := range b.targets {
					if !strings.Contains(f, tg.Name()) {
						t.Errorf("failure %q does not say what %s answered", f, tg.Name())
					}
				}
			}
			checkFiles(t, out, want(out, good))

			out = t.TempDir()
			rep, err = b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
			if err != nil || rep.OK() || len(rep.Failures) != 2 {
				t.Fatalf("Customer: %+v, %v", rep, err)
			}
			checkFiles(t, out, nil)
		})
	}
}

// With every target down nothing can be checked or read: the restore stops with the targets'
// error (the key file cannot even be checked against them) and writes nothing.
func TestEverythingDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.backup(t, "critical", rec("alice", "k", "v", t0))
	for _, f := range b.faults {
		f.Down()
	}
	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if !errors.Is(err, faulty.ErrUnavailable) || rep.Items != 0 {
		t.Fatalf("All with every target down: %+v, %v", rep, err)
	}
	rep, err = b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
	if !errors.Is(err, faulty.ErrUnavailable) || rep.Items != 0 {
		t.Fatalf("Customer with every target down: %+v, %v", rep, err)
	}
	checkFiles(t, out, nil)
}

// All reads manifests from the targets and authenticates them: a bad manifest copy is skipped,
// and with none good the pack is reported.
func TestBadManifest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := rec("alice", "k", "v", t0)
	p := b.backup(t, "critical", r)
	name := pack.ManifestName(p.Manifest.Pack)
	b.faults[0].Corrupt(name)
	// A manifest of another pack, sealed as a catalog object, stored under this name: its
	// header opens, its body does not authenticate as this pack's.
	other := b.seal(t, "critical", rec("mallory", "k", "injected", t0))
	replace(t, b.targets[1], name, b.sealManifest(t, other.Manifest))

	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil || !rep.OK() {
		t.Fatalf("one good manifest copy: %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, r))
	if len(rep.Skipped) != 2 || !strings.HasPrefix(rep.Skipped[0], b.targets[0].Name()+": "+name+": ") ||
		!strings.HasPrefix(rep.Skipped[1], b.targets[1].Name()+": "+name+": ") {
		t.Errorf("skipped %q, want the copies on %s and %s", rep.Skipped, b.targets[0].Name(), b.targets[1].Name())
	}

	b.faults[2].Corrupt(name)
	rep, err = b.restorer().All(t.Context(), restore.Options{Out: t.TempDir()})
	if err != nil || rep.OK() || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "manifest "+p.Manifest.Pack) {
		t.Fatalf("no good manifest copy: %+v, %v", rep, err)
	}
}

// Erased customers are never restored, and are named by pseudonym.
func TestErasedCustomerSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keep := rec("keep", "k", "kept", t0)
	b.backup(t, "critical", keep, rec("gone", "k", "erased", t0), rec("gone", "k2", "erased", t0))
	gone := b.erase(t, "gone")
	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Customers != 1 || !slices.Equal(rep.Erased, []string{gone}) {
		t.Fatalf("report %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, keep))
	rep, err = b.restorer().Customer(t.Context(), "shop", "gone", restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Items != 0 || !slices.Equal(rep.Erased, []string{gone}) {
		t.Fatalf("restore of an erased customer: %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, keep))
}

// An item stored twice (a duplicate delivery that ended in two packs) is restored once.
func TestDuplicateItemRestoredOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.seal(t, "critical", rec("alice", "k", "v", t0))
	dup := p.Manifest.Items[0]
	b.store(t, p)
	other := b.seal(t, "critical", rec("bob", "k", "w", t0))
	items := []pack.Item{{ID: dup.ID, Customer: dup.Customer, Seq: dup.Seq, EventTime: dup.EventTime, Sealed: p.Data}}
	for _, e := range other.Manifest.Items {
		items = append(items, pack.Item{ID: e.ID, Customer: e.Customer, Seq: e.Seq, EventTime: e.EventTime, Sealed: other.Data[e.Offset : e.Offset+e.Length]})
	}
	b.store(t, built{Built: pack.Build("critical", items)})
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: t.TempDir()})
	if err != nil || !rep.OK() || rep.Items != 2 || rep.Customers != 2 {
		t.Fatalf("report %+v, %v", rep, err)
	}
}

// failingStore fails every key lookup.
type failingStore struct{ keys.Store }

var errKeyStore = errors.New("key store unreachable")

func (failingStore) Lookup(context.Context, string) ([]byte, error) { return nil, errKeyStore }

func TestKeyStoreFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.backup(t, "critical", rec("alice", "k", "v", t0))
	r := b.restorer()
	r.Keys = failingStore{b.keys}
	if _, err := r.All(t.Context(), restore.Options{Out: t.TempDir()}); !errors.Is(err, errKeyStore) {
		t.Fatalf("All = %v, want the key store's error", err)
	}
	if _, err := r.Customer(t.Context(), "shop", "alice", restore.Options{Out: t.TempDir()}); !errors.Is(err, errKeyStore) {
		t.Fatalf("Customer = %v, want the key store's error", err)
	}
}

func TestCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.backup(t, "critical", rec("alice", "k", "v", t0))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := t.TempDir()
	if _, err := b.restorer().All(ctx, restore.Options{Out: out}); !errors.Is(err, context.Canceled) {
		t.Fatalf("All = %v, want context.Canceled", err)
	}
	checkFiles(t, out, nil)
}

func TestProgress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.backup(t, "critical", rec("alice", "k1", "1", t0), rec("alice", "k2", "2", t0), rec("alice", "k3", "3", t0))
	r := b.restorer()
	var calls []restore.Progress
	r.Progress = func(p restore.Progress) { calls = append(calls, p) }
	if _, err := r.Customer(t.Context(), "shop", "alice", restore.Options{Out: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 3 {
		t.Fatalf("progress calls %+v, want one per item", calls)
	}
	var bytes int64
	for i, c := range calls {
		if c.Items != i+1 || c.TotalItems != 3 || c.Bytes <= bytes || c.TotalBytes != p.Manifest.Size {
			t.Errorf("call %d: %+v", i, c)
		}
		bytes = c.Bytes
	}
	if bytes != p.Manifest.Size {
		t.Errorf("last call says %d bytes, want the %d the items take", bytes, p.Manifest.Size)
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	out := filepath.Join("/restore", "out")
	seen := map[string]string{}
	for _, tc := range [][3]string{
		{"shop", "alice", "profile"},
		{"shop", "alice", "orders/17"},
		{"shop", "alice", "orders%2F17"},
		{"shop", "alice", ".."},
		{"shop", "alice", "."},
		{"shop", "alice", ""},
		{"shop", "alice", "%2e2e_"},
		{"..", "..", "../../etc/passwd"},
		{"shop/x", "alice", "p"},
		{"shop", "x/alice", "p"},
		{"shop", "alice", "a\x00b"},
		{"shop", "alice", "ünïcode key"},
	} {
		p := restore.Path(out, tc[0], tc[1], tc[2])
		rel, err := filepath.Rel(out, p)
		if err != nil || strings.HasPrefix(rel, "..") || len(strings.Split(rel, string(filepath.Separator))) != 3 {
			t.Errorf("Path(%q) = %q: not three elements under %s", tc, p, out)
		}
		if prev, ok := seen[p]; ok {
			t.Errorf("Path(%q) = Path(%s) = %q", tc, prev, p)
		}
		seen[p] = fmt.Sprintf("%q", tc)
	}
	if got := restore.Path(out, "shop", "alice", "profile"); got != filepath.Join(out, "shop", "alice", "profile") {
		t.Errorf("plain names are escaped: %q", got)
	}
}

// The index is not authenticated (manifests are): an entry naming a malformed pack id must
// fail that item or pack, not crash the restore, and the good items must still be restored.
func TestMalformedIndexEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	r := rec("alice", "k", "v", t0)
	p := b.backup(t, "critical", r)
	kv, err := b.ns.JS.KeyValue(ctx, catalog.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	e := p.Manifest.Items[0]
	bogus := fmt.Sprintf(`{"pack":"x","class":"critical","items":[{"id":%q,"customer":%q,"seq":99,"event_time":"2026-05-01T12:00:00Z","offset":0,"length":10,"sha256":"00"}]}`, e.ID+"0", e.Customer)
	if _, err := kv.Put(ctx, "cust."+e.Customer[1:3]+".x", []byte(bogus)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pack.x", []byte(`{"pack":"x","class":"critical"}`)); err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		out := t.TempDir()
		var rep restore.Report
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("all=%v: restore panicked: %v", all, p)
				}
			}()
			if all {
				rep, err = b.restorer().All(ctx, restore.Options{Out: out})
			} else {
				rep, err = b.restorer().Customer(ctx, "shop", "alice", restore.Options{Out: out})
			}
		}()
		if err == nil && (rep.OK() || rep.Items != 1) {
			t.Fatalf("all=%v: %+v, want the bad entry reported and the good item restored", all, rep)
		}
		if err == nil {
			checkFiles(t, out, want(out, r))
		}
	}
}
