package repository_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// noSum hides the SHA-256 from Stat, as a target that cannot report it without a read (fs).
type noSum struct{ target.Target }

func (n noSum) Stat(ctx context.Context, name string) (target.Info, error) {
	info, err := n.Target.Stat(ctx, name)
	info.SHA256 = [32]byte{}
	return info, err
}

// fixture writes packs with their manifests the way the worker does, to three targets, and
// indexes them in a Memory.
type fixture struct {
	kms     *keys.LocalKMS
	store   *keys.MemStore
	sealer  *repository.Sealer
	opener  *repository.Opener
	codec   *pack.Codec
	targets []target.Target
	index   *repository.Memory
	ids     []string
	seq     uint64
}

func newFixture(t *testing.T, wrap func(target.Target) target.Target) *fixture {
	t.Helper()
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{kms: kms, store: keys.NewMemStoreWithKMS(kms), opener: repository.NewOpener(kms, kms.Fingerprint()),
		index: repository.NewMemory(kms)}
	if f.sealer, err = repository.NewSealer(t.Context(), f.store, kms.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if f.codec, err = pack.NewCodec(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.codec.Close)
	for _, l := range []string{"a", "b", "c"} {
		var tg target.Target = mem.New(mem.WithLabel(l))
		if wrap != nil {
			tg = wrap(tg)
		}
		f.targets = append(f.targets, tg)
	}
	return f
}

func (f *fixture) customer(i int) string { return f.kms.Pseudonym("acme", fmt.Sprintf("c-%d", i)) }

// addPack writes a pack of n items of two customers to every target and indexes it. With
// garbage, one item is not a sealed item at all: the pack and its manifest are consistent, but
// the item does not authenticate.
func (f *fixture) addPack(t *testing.T, n int, garbage bool) pack.Built {
	t.Helper()
	ctx := t.Context()
	var items []pack.Item
	for i := range n {
		f.seq++
		c := f.customer(i % 2)
		dek, err := f.store.DataKey(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%032x", f.seq)
		data := bytes.Repeat([]byte(fmt.Sprintf("record %d ", f.seq)), 50+i*30)
		sealed, err := f.codec.SealItem(dek, c, "critical", id, pack.ItemMeta{Tenant: "acme", CustomerID: "c", RecordKey: "k"}, data)
		if err != nil {
			t.Fatal(err)
		}
		if garbage && i == n-1 {
			sealed = bytes.Repeat([]byte{0x01}, len(sealed))
		}
		items = append(items, pack.Item{ID: id, Customer: c, Seq: f.seq, EventTime: time.Unix(int64(f.seq), 0), Sealed: sealed})
	}
	b := pack.Build("critical", items)
	m := b.Manifest
	m.Keys = map[string]pack.WrappedKey{}
	for _, c := range m.Customers() {
		env, err := f.store.Envelope(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		m.Keys[c] = pack.WrappedKey{KEK: env.KEK, DEK: env.DEK}
	}
	sealed, err := f.sealer.Manifest(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range f.targets {
		put(t, tg, repository.PackName(m.Pack), b.Data, target.PutOptions{})
		put(t, tg, repository.ManifestName(m.Pack), sealed, target.PutOptions{})
	}
	if err := f.index.IndexPack(ctx, m, f.names()); err != nil {
		t.Fatal(err)
	}
	f.ids = append(f.ids, m.Pack)
	return b
}

func (f *fixture) names() []string {
	var out []string
	for _, tg := range f.targets {
		out = append(out, tg.Name())
	}
	return out
}

func (f *fixture) config(t *testing.T) repository.VerifyConfig {
	return repository.VerifyConfig{Index: f.index, Classes: map[string][]target.Target{"critical": f.targets},
		Targets: f.targets, Opener: f.opener, Keys: f.store, SpoolDir: t.TempDir()}
}

func put(t *testing.T, tg target.Target, name string, data []byte, opts target.PutOptions) {
	t.Helper()
	opts.SHA256 = sha256.Sum256(data)
	if err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), opts); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, tg target.Target, name string) []byte {
	t.Helper()
	b, err := repository.ReadAll(t.Context(), tg, name, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flip replaces an object by a copy with one byte flipped in its middle, as if it had rotted.
func flip(t *testing.T, tg target.Target, name string, opts target.PutOptions) {
	t.Helper()
	b := get(t, tg, name)
	b[len(b)/2] ^= 0x55
	if err := tg.Delete(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	put(t, tg, name, b, opts)
}

func verify(t *testing.T, cfg repository.VerifyConfig) repository.VerifyReport {
	t.Helper()
	rep, err := repository.Verify(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(cfg.SpoolDir); len(left) > 0 {
		t.Fatalf("spool files left: %v", left)
	}
	return rep
}

func kinds(rep repository.VerifyReport) []string {
	var out []string
	for _, p := range rep.Problems {
		out = append(out, fmt.Sprintf("%s %s %s repaired=%t", p.Target, strings.SplitN(p.Object, "/", 2)[0], p.Kind, p.Repaired))
	}
	return out
}

// A byte flipped in every pack of one target passes the structural check of a target that
// does not report checksums, is found by reading the data, is repaired, and a second run is
// clean.
func TestVerifyReadDataRepairsFlippedPacks(t *testing.T) {
	f := newFixture(t, func(tg target.Target) target.Target { return noSum{tg} })
	var total int64
	for range 3 {
		total += f.addPack(t, 6, false).Manifest.Size
	}
	b := f.targets[1]
	for _, id := range f.ids {
		flip(t, b, repository.PackName(id), target.PutOptions{})
	}

	cfg := f.config(t)
	if rep := verify(t, cfg); !rep.OK() || rep.Packs != 3 || rep.Replicas != 9 || rep.BytesRead != 0 {
		t.Fatalf("structural check: %+v", rep)
	}
	cfg.ReadData = true
	rep := verify(t, cfg)
	if rep.Packs != 3 || rep.ReadPacks != 3 || len(rep.Problems) != 3 || rep.Repaired != 3 || !rep.OK() {
		t.Fatalf("read-data run: %+v\n%s", rep, strings.Join(kinds(rep), "\n"))
	}
	for _, p := range rep.Problems {
		if p.Target != b.Name() || p.Kind != repository.ProblemChecksum || !strings.HasPrefix(p.Object, "packs/") {
			t.Fatalf("problem %v", p)
		}
	}
	// Three replicas of each pack and manifest read, plus a repair source and a check each.
	if rep.BytesRead < 3*total+2*total {
		t.Fatalf("bytes read %d, packs hold %d", rep.BytesRead, total)
	}
	for _, id := range f.ids {
		if !bytes.Equal(get(t, b, repository.PackName(id)), get(t, f.targets[0], repository.PackName(id))) {
			t.Fatalf("pack %s not repaired in %s", id, b.Name())
		}
	}
	if rep := verify(t, cfg); len(rep.Problems) != 0 || !rep.OK() {
		t.Fatalf("second run: %v", kinds(rep))
	}
}

// With NoRepair the problems are reported and nothing changes.
func TestVerifyNoRepair(t *testing.T) {
	f := newFixture(t, nil)
	f.addPack(t, 4, false)
	id := f.ids[0]
	flip(t, f.targets[2], repository.PackName(id), target.PutOptions{})
	flip(t, f.targets[0], repository.ManifestName(id), target.PutOptions{})
	before := get(t, f.targets[2], repository.PackName(id))

	cfg := f.config(t)
	cfg.ReadData, cfg.NoRepair = true, true
	for range 2 {
		rep := verify(t, cfg)
		want := []string{"mem:a manifests manifest repaired=false", "mem:c packs checksum repaired=false"}
		if got := kinds(rep); !slices.Equal(got, want) || rep.OK() || len(rep.Unrecoverable) != 0 {
			t.Fatalf("problems %q, want %q", got, want)
		}
		for _, p := range rep.Problems {
			if p.RepairErr != nil || p.Locked {
				t.Fatalf("NoRepair tried a repair: %+v", p)
			}
		}
	}
	if !bytes.Equal(get(t, f.targets[2], repository.PackName(id)), before) {
		t.Fatal("NoRepair changed an object")
	}
	// Without NoRepair the manifest is repaired too, after the pack.
	cfg.NoRepair = false
	if rep := verify(t, cfg); rep.Repaired != 2 || !rep.OK() {
		t.Fatalf("repair: %q", kinds(rep))
	}
}

// A pack flipped in every replica has no good copy: it is unrecoverable and nothing is deleted.
func TestVerifyUnrecoverable(t *testing.T) {
	f := newFixture(t, nil)
	f.addPack(t, 3, false)
	good := f.addPack(t, 3, false)
	id := f.ids[0]
	for _, tg := range f.targets {
		flip(t, tg, repository.PackName(id), target.PutOptions{})
	}
	cfg := f.config(t)
	for _, readData := range []bool{false, true} {
		cfg.ReadData = readData
		rep := verify(t, cfg)
		if rep.OK() || len(rep.Problems) != 3 || rep.Repaired != 0 || len(rep.Unrecoverable) != 1 ||
			rep.Unrecoverable[0].Object != repository.PackName(id) {
			t.Fatalf("read data %t: %+v", readData, rep)
		}
		for _, tg := range f.targets {
			if _, err := tg.Stat(t.Context(), repository.PackName(id)); err != nil {
				t.Fatalf("the bad copies must stay when there is nothing better: %v", err)
			}
		}
	}
	if !bytes.Equal(get(t, f.targets[0], repository.PackName(good.Manifest.Pack)), good.Data) {
		t.Fatal("the good pack changed")
	}
}

// A pack whose recorded bytes hold an item that does not authenticate is bad in every replica
// alike: found only by opening the items, and unrecoverable.
func TestVerifyItemAuth(t *testing.T) {
	f := newFixture(t, nil)
	f.addPack(t, 3, true)
	cfg := f.config(t)
	if rep := verify(t, cfg); !rep.OK() {
		t.Fatalf("structural check: %q", kinds(rep))
	}
	cfg.ReadData = true
	rep := verify(t, cfg)
	if len(rep.Problems) != 3 || len(rep.Unrecoverable) != 1 || rep.Repaired != 0 {
		t.Fatalf("%+v", rep)
	}
	for _, p := range rep.Problems {
		if p.Kind != repository.ProblemAuth || p.RepairErr != nil {
			t.Fatalf("problem %+v", p)
		}
	}
}

// An erased customer's items are checked by SHA-256 alone; the others still open.
func TestVerifyErasedCustomer(t *testing.T) {
	f := newFixture(t, nil)
	f.addPack(t, 4, false)
	if err := f.store.Destroy(t.Context(), f.customer(0)); err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t)
	cfg.ReadData = true
	if rep := verify(t, cfg); !rep.OK() || len(rep.Problems) != 0 {
		t.Fatalf("%q", kinds(rep))
	}
	// Without a key store, the manifests' keys open every item.
	cfg.Keys = nil
	if rep := verify(t, cfg); !rep.OK() || len(rep.Problems) != 0 {
		t.Fatalf("manifest keys: %q", kinds(rep))
	}
}

// A corrupt object under retention cannot be deleted: it is reported as locked, not
// repairable in place; the rest is repaired.
func TestVerifyLocked(t *testing.T) {
	f := newFixture(t, nil)
	f.addPack(t, 3, false)
	id := f.ids[0]
	flip(t, f.targets[0], repository.PackName(id), target.PutOptions{RetainUntil: time.Now().Add(time.Hour)})
	flip(t, f.targets[1], repository.PackName(id), target.PutOptions{})
	cfg := f.config(t)
	cfg.PutOptions = repository.RetainOptions(map[string]time.Duration{"critical": time.Hour}, nil)
	rep := verify(t, cfg)
	if len(rep.Problems) != 2 || rep.Repaired != 1 || rep.OK() || len(rep.Unrecoverable) != 0 {
		t.Fatalf("%q", kinds(rep))
	}
	locked := rep.Problems[0]
	if locked.Target != "mem:a" || !locked.Locked || !errors.Is(locked.RepairErr, repository.ErrLockedInPlace) {
		t.Fatalf("locked problem %+v", locked)
	}
	// The repaired copy is locked as the class asks.
	if err := f.targets[1].Delete(t.Context(), repository.PackName(id)); !errors.Is(err, target.ErrLocked) {
		t.Fatalf("repaired copy not retained: %v", err)
	}
}

// A replica missing from a target is repaired (pack, then manifest) and the target added to the
// index entry.
func TestVerifyMissingReplica(t *testing.T) {
	ns := natstest.Start(t)
	ix, err := catalog.Open(t.Context(), ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(tg target.Target) target.Target { return noSum{tg} })
	b := f.addPack(t, 5, false)
	id := b.Manifest.Pack
	c := f.targets[2]
	for _, name := range []string{repository.PackName(id), repository.ManifestName(id)} {
		if err := c.Delete(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
	if err := ix.Commit(t.Context(), b.Manifest, f.names()[:2], time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := f.config(t)
	cfg.Index, cfg.Catalog = ix, ix
	rep := verify(t, cfg)
	want := []string{"mem:c packs missing repaired=true", "mem:c manifests missing repaired=true"}
	if got := kinds(rep); !slices.Equal(got, want) || !rep.OK() || rep.Indexed != 1 {
		t.Fatalf("problems %q, want %q (indexed %d)", got, want, rep.Indexed)
	}
	rec, err := ix.Pack(t.Context(), id)
	if err != nil || !slices.Equal(rec.Targets, f.names()) {
		t.Fatalf("index targets %v (%v), want %v", rec.Targets, err, f.names())
	}
	cfg.ReadData = true
	if rep := verify(t, cfg); len(rep.Problems) != 0 || rep.Indexed != 0 {
		t.Fatalf("second run: %q", kinds(rep))
	}
}

// A target that does not answer is reported, never repaired, and not taken for a bad replica.
func TestVerifyUnreachable(t *testing.T) {
	down := &downTarget{}
	f := newFixture(t, func(tg target.Target) target.Target {
		if tg.Name() == "mem:b" {
			down.Target = tg
			return down
		}
		return tg
	})
	f.addPack(t, 3, false)
	down.down = true
	cfg := f.config(t)
	cfg.ReadData = true
	rep := verify(t, cfg)
	if got := kinds(rep); len(got) != 2 || rep.Problems[0].Kind != repository.ProblemUnreachable || rep.Repaired != 0 ||
		len(rep.Unrecoverable) != 0 || rep.OK() {
		t.Fatalf("%q", got)
	}
}

type downTarget struct {
	target.Target
	down bool
}

var errDown = errors.New("connection refused")

func (d *downTarget) Stat(ctx context.Context, name string) (target.Info, error) {
	if d.down {
		return target.Info{}, errDown
	}
	return d.Target.Stat(ctx, name)
}

func (d *downTarget) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if d.down {
		return nil, errDown
	}
	return d.Target.Get(ctx, name)
}

func TestSubset(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "1", "0/3", "4/3", "a/b", "1/0", "-1/2"} {
		if _, err := repository.ParseSubset(bad); err == nil {
			t.Errorf("ParseSubset(%q) accepted", bad)
		}
	}
	// The subsets of t split the ids, and agree with the id read as a number.
	ids := []string{"00000000000000000000000000000000", "00000000000000000000000000000001",
		"000000000000000000000000000000ff", "ffffffffffffffffffffffffffffffff", "0123456789abcdef0123456789abcdef"}
	for _, tt := range []int{1, 2, 3, 7, 256} {
		for _, id := range ids {
			n := 0
			for k := 1; k <= tt; k++ {
				s, err := repository.ParseSubset(fmt.Sprintf("%d/%d", k, tt))
				if err != nil {
					t.Fatal(err)
				}
				if s.Contains(id) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("id %s in %d subsets of %d", id, n, tt)
			}
		}
	}
	// 2^128-1 = 3 * 5 * 17 * 257 * ...: divisible by 3, so it falls in subset 1/3.
	if s, _ := repository.ParseSubset("1/3"); !s.Contains(ids[3]) {
		t.Error("ffff…ff mod 3 is 0")
	}
	if s, _ := repository.ParseSubset("2/256"); !s.Contains(ids[1]) || s.Contains(ids[2]) {
		t.Error("the last byte decides modulo 256")
	}
}

// With ReadData and SubsetOnly, only the packs of the subset are checked; with ReadData alone,
// the others are checked by Stat.
func TestVerifySubset(t *testing.T) {
	f := newFixture(t, nil)
	for range 8 {
		f.addPack(t, 1, false)
	}
	cfg := f.config(t)
	cfg.ReadData = true
	read, checked := 0, 0
	for k := 1; k <= 3; k++ {
		cfg.Subset = repository.Subset{N: k, T: 3}
		cfg.SubsetOnly = false
		if rep := verify(t, cfg); rep.Packs != 8 {
			t.Fatalf("subset %v checked %d packs", cfg.Subset, rep.Packs)
		}
		cfg.SubsetOnly = true
		rep := verify(t, cfg)
		read += rep.ReadPacks
		checked += rep.Packs
	}
	if read != 8 || checked != 8 {
		t.Fatalf("subsets read %d and checked %d of 8 packs", read, checked)
	}
}

// The byte rate is held with the injected clock: reading N bytes at R bytes/s sleeps about
// (N - R)/R seconds (one second's worth is the burst).
func TestVerifyRateLimit(t *testing.T) {
	f := newFixture(t, nil)
	for range 3 {
		f.addPack(t, 8, false)
	}
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	cfg := f.config(t)
	cfg.ReadData, cfg.Concurrency = true, 1
	cfg.MaxBytesPerSecond = 4096
	cfg.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg.Sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
		return nil
	}
	rep := verify(t, cfg)
	want := time.Duration(float64(rep.BytesRead-4096) / 4096 * float64(time.Second))
	if rep.BytesRead < 5*4096 || rep.Elapsed < want-time.Second/10 || rep.Elapsed > want+time.Second/10 {
		t.Fatalf("read %d bytes in %v of the clock, want about %v", rep.BytesRead, rep.Elapsed, want)
	}
}

// Verify a pack in three targets, reading every replica.
func ExampleVerify() {
	ctx := context.Background()
	kms, _ := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	index := repository.NewMemory(kms)
	targets := []target.Target{mem.New(mem.WithLabel("a")), mem.New(mem.WithLabel("b"))}
	rep, err := repository.Verify(ctx, repository.VerifyConfig{
		Index: index, Classes: map[string][]target.Target{"critical": targets},
		Opener: repository.NewOpener(kms, kms.Fingerprint()), ReadData: true})
	fmt.Println(rep.Packs, len(rep.Problems), rep.OK(), err)
	// Output: 0 0 true <nil>
}

func ExampleParseSubset() {
	s, err := repository.ParseSubset("2/5")
	fmt.Println(s, err, s.Contains("00000000000000000000000000000006"))
	// Output: 2/5 <nil> true
}
