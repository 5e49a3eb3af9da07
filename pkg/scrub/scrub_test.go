package scrub_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/scrub"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bundle is two mem targets holding packs written as the worker writes them, indexed in a
// Memory.
type bundle struct {
	targets []target.Target
	index   *repository.Memory
	verify  repository.VerifyConfig
	ids     []string
	bytes   int64
}

func setup(t *testing.T, packs int) *bundle {
	t.Helper()
	ctx := t.Context()
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	store := keys.NewMemStoreWithKMS(kms)
	sealer, err := repository.NewSealer(ctx, store, kms.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	codec, err := pack.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	b := &bundle{targets: []target.Target{mem.New(mem.WithLabel("a")), mem.New(mem.WithLabel("b"))}, index: repository.NewMemory(kms)}
	c := kms.Pseudonym("acme", "c-1")
	dek, err := store.DataKey(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	env, err := store.Envelope(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range packs {
		var items []pack.Item
		for j := range 3 {
			id := fmt.Sprintf("%032x", i*10+j)
			sealed, err := codec.SealItem(dek, c, "critical", id, pack.ItemMeta{Tenant: "acme"}, bytes.Repeat([]byte{byte(j)}, 2000))
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, pack.Item{ID: id, Customer: c, Seq: uint64(i*10 + j), Sealed: sealed})
		}
		built := pack.Build("critical", items)
		m := built.Manifest
		m.Keys = map[string]pack.WrappedKey{c: {KEK: env.KEK, DEK: env.DEK}}
		man, err := sealer.Manifest(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range b.targets {
			put(t, tg, repository.PackName(m.Pack), built.Data)
			put(t, tg, repository.ManifestName(m.Pack), man)
		}
		if err := b.index.IndexPack(ctx, m, []string{"mem:a", "mem:b"}); err != nil {
			t.Fatal(err)
		}
		b.ids = append(b.ids, m.Pack)
		b.bytes += m.Size
	}
	b.verify = repository.VerifyConfig{Index: b.index, Classes: map[string][]target.Target{"critical": b.targets},
		Opener: repository.NewOpener(kms, kms.Fingerprint()), Keys: store, SpoolDir: t.TempDir()}
	return b
}

func put(t *testing.T, tg target.Target, name string, data []byte) {
	t.Helper()
	if err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
		t.Fatal(err)
	}
}

// fakeClock advances only when the scrubber sleeps.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return nil
}

// Passes walk the slices round-robin; a full cycle reads every pack once and repairs the
// replicas that rotted, under the byte rate of the injected clock.
func TestScrubCycle(t *testing.T) {
	b := setup(t, 9)
	for _, id := range b.ids { // every pack of b rots
		name := repository.PackName(id)
		data, err := repository.ReadAll(t.Context(), b.targets[1], name, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		data[10] ^= 1
		if err := b.targets[1].Delete(t.Context(), name); err != nil {
			t.Fatal(err)
		}
		put(t, b.targets[1], name, data)
	}
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	const rate = 16 << 10
	s, err := scrub.New(scrub.Config{Verify: b.verify, Slices: 3, First: 2, Rate: rate, Clock: clock.Now, Sleep: clock.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	var packs, repaired int
	var read int64
	for i, want := range []string{"2/3", "3/3", "1/3"} {
		start := clock.Now()
		res, err := s.RunOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if res.Slice.String() != want {
			t.Fatalf("pass %d scrubbed slice %s, want %s", i, res.Slice, want)
		}
		if res.Report.ReadPacks != res.Report.Packs || res.Report.Replicas != 2*res.Report.Packs {
			t.Fatalf("pass %d: %+v", i, res.Report)
		}
		// One second's worth of bytes is free; the rest is paid for at the rate.
		if took, min := clock.Now().Sub(start), time.Duration(float64(res.Report.BytesRead-rate)/rate*float64(time.Second)); took < min-time.Second {
			t.Fatalf("pass %d read %d bytes in %v of the clock, rate %d B/s", i, res.Report.BytesRead, took, rate)
		}
		packs += res.Report.Packs
		repaired += res.Report.Repaired
		read += res.Report.BytesRead
		if !res.Report.OK() {
			t.Fatalf("pass %d left problems: %+v", i, res.Report.Problems)
		}
	}
	if packs != 9 || repaired != 9 || read < 2*b.bytes {
		t.Fatalf("a cycle checked %d packs, repaired %d, read %d bytes", packs, repaired, read)
	}
	res, err := s.RunOnce(t.Context())
	if err != nil || res.Slice.String() != "2/3" || len(res.Report.Problems) != 0 {
		t.Fatalf("next cycle: %v %+v", err, res)
	}
}

// Without Slices, a slice holds about Rate × Interval bytes of replicas.
func TestScrubSliceSize(t *testing.T) {
	b := setup(t, 4)
	per := 2 * b.bytes / 4 // replicas of one pack
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	s, err := scrub.New(scrub.Config{Verify: b.verify, Interval: time.Second, Rate: per + 1, Clock: clock.Now, Sleep: clock.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Slice.T != 4 {
		t.Fatalf("slice %v, want one of 4", res.Slice)
	}
}

type countingIndex struct {
	repository.PackLister
	n atomic.Int64
}

func (c *countingIndex) Packs(ctx context.Context) ([]catalog.PackRecord, error) {
	c.n.Add(1)
	return c.PackLister.Packs(ctx)
}

func TestScrubStartStop(t *testing.T) {
	b := setup(t, 2)
	ix := &countingIndex{PackLister: b.index}
	b.verify.Index = ix
	s, err := scrub.New(scrub.Config{Verify: b.verify, Interval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for range 2 {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for ix.n.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 2 {
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ix.n.Load() < 3 {
		t.Fatalf("%d passes", ix.n.Load())
	}
	if _, err := scrub.New(scrub.Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
}
