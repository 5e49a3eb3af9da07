package s3_test

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/s3"
)

// genReader yields size deterministic pseudo-random bytes without holding them: a stand-in
// for a pack file far larger than the memory a Put may use. Only a rewind is supported.
type genReader struct {
	seed      uint64
	size, off int64
	rng       *rand.ChaCha8
}

func newGenReader(seed uint64, size int64) *genReader {
	g := &genReader{seed: seed, size: size}
	g.Seek(0, io.SeekStart)
	return g
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.size-g.off)]
	g.rng.Read(p)
	g.off += int64(len(p))
	return len(p), nil
}

func (g *genReader) Seek(off int64, whence int) (int64, error) {
	if off != 0 || whence != io.SeekStart {
		return 0, errors.New("genReader: only a rewind is supported")
	}
	g.rng = rand.NewChaCha8([32]byte{byte(g.seed)})
	g.off = 0
	return 0, nil
}

// heapPeak samples the heap until stop is called and returns the largest growth over the
// heap in use (after a GC) when it started.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base, peak := m.HeapAlloc, m.HeapAlloc
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak - base
	}
}

// TestLargeStreams stores and reads back a 64 MiB + 1 object through multipart upload and
// checks that the heap grows by far less than the object: Put holds at most Concurrency
// parts, Get streams.
func TestLargeStreams(t *testing.T) {
	srv := startServer(t)
	const size = 64<<20 + 1
	bucket := srv.newBucket(t)
	cfg := srv.config(bucket)
	cfg.PartSize, cfg.Concurrency = s3.MinPartSize, 2
	tg := open(t, cfg)
	h := sha256.New()
	if _, err := io.Copy(h, newGenReader(1, size)); err != nil {
		t.Fatal(err)
	}
	sum := [32]byte(h.Sum(nil))

	stop := heapPeak()
	start := time.Now()
	err := tg.Put(t.Context(), "packs/large", newGenReader(1, size), size, target.PutOptions{SHA256: sum})
	growth := stop()
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	t.Logf("Put of %d MiB: %v, heap growth %.1f MiB", size>>20, time.Since(start).Round(time.Millisecond), float64(growth)/(1<<20))
	// Buffers: 2 parts of 5 MiB. The rest is garbage the GC has not collected yet.
	if limit := uint64(size / 3); growth > limit {
		t.Errorf("Put grew the heap by %d MiB, want under %d MiB", growth>>20, limit>>20)
	}

	info, err := tg.Stat(t.Context(), "packs/large")
	if err != nil || info.Size != size || info.SHA256 != sum {
		t.Fatalf("Stat = %+v, %v; want %d bytes with the put checksum", info, err, size)
	}

	stop = heapPeak()
	rc, err := tg.Get(t.Context(), "packs/large")
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	n, err := io.Copy(h, rc)
	rc.Close()
	growth = stop()
	if err != nil || n != size || [32]byte(h.Sum(nil)) != sum {
		t.Fatalf("Get read %d bytes, %v; want %d bytes with the put checksum", n, err, size)
	}
	if limit := uint64(size / 3); growth > limit {
		t.Errorf("Get grew the heap by %d MiB, want under %d MiB", growth>>20, limit>>20)
	}

	// A wrong checksum is found only after the last part: nothing may become visible.
	bad := sum
	bad[0] ^= 1
	err = tg.Put(t.Context(), "packs/bad", newGenReader(1, size), size, target.PutOptions{SHA256: bad})
	if !errors.Is(err, target.ErrChecksumMismatch) {
		t.Errorf("Put with a wrong checksum = %v, want ErrChecksumMismatch", err)
	}
	if _, err := tg.Stat(t.Context(), "packs/bad"); !errors.Is(err, target.ErrNotFound) {
		t.Errorf("Stat after the failed Put = %v, want ErrNotFound", err)
	}
	if ups := srv.uploads(t, bucket); len(ups) != 0 {
		t.Errorf("multipart uploads left after the failed Put: %v", ups)
	}
}
