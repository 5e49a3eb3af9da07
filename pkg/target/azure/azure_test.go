package azure_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/azure"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const azuriteLockGap = "Azurite has no version-level immutability: it ignores the immutability " +
	"headers of writes and answers 501 to the immutability calls, so the target refuses locked Puts there"

// TestConformance runs the suite with small blocks, so that most objects are staged in
// several blocks by concurrent uploads, and small List pages.
func TestConformance(t *testing.T) {
	az := startAzurite(t)
	targettest.Run(t, func(t *testing.T) target.Target {
		cfg := az.config(t)
		cfg.BlockSize = 64 << 10
		cfg.Concurrency = 3
		tg, err := azure.New(t.Context(), cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		azure.SetListPageSize(tg, 3)
		return tg
	}, targettest.LockUnsupported(azuriteLockGap))
}

// TestConformancePrefix runs the suite with the default block size, under a prefix in a
// container that also holds blobs the target must not show.
func TestConformancePrefix(t *testing.T) {
	az := startAzurite(t)
	targettest.Run(t, func(t *testing.T) target.Target {
		cfg := az.config(t)
		cfg.Prefix = "custos/"
		cc := az.container(cfg.Container)
		for _, name := range []string{"other", "custos", "custos/Not A Custos Name", "custosx/a"} {
			if _, err := cc.NewBlockBlobClient(name).UploadBuffer(t.Context(), []byte("x"), nil); err != nil {
				t.Fatalf("upload %s: %v", name, err)
			}
		}
		tg, err := azure.New(t.Context(), cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return tg
	}, targettest.LockUnsupported(azuriteLockGap))
}

func TestIdentityAndStatChecksum(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	cfg.Name = "offsite"
	cfg.BlockSize = 1000
	tg := open(t, cfg)
	if tg.Name() != "azure:offsite" || tg.Kind() != "azure" {
		t.Errorf("Name, Kind = %q, %q; want azure:offsite, azure", tg.Name(), tg.Kind())
	}
	for name, n := range map[string]int{"small": 999, "staged": 4321} {
		data := targettest.Data(3, n)
		targettest.Put(t, tg, name, data)
		info, err := tg.Stat(t.Context(), name)
		if err != nil || info.SHA256 != sha256.Sum256(data) {
			t.Errorf("Stat(%s) = %x, %v; want the object's SHA-256", name, info.SHA256, err)
		}
	}
	err := tg.List(t.Context(), "", func(i target.Info) error {
		if i.SHA256 == ([32]byte{}) {
			t.Errorf("List: %s has no SHA-256", i.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCrashMidUpload shows that a Put that does not complete leaves only uncommitted blocks,
// which nothing shows, and that they do not stand in the way of a later Put.
func TestCrashMidUpload(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	cfg.BlockSize = 256 << 10
	cfg.Concurrency = 2
	tg := open(t, cfg)
	cc := az.container(cfg.Container)
	data := targettest.Data(1, 3<<20+17) // 13 blocks, the last one short
	sum := sha256.Sum256(data)
	size := int64(len(data))

	t.Run("Cancelled", func(t *testing.T) {
		const name = "packs/cancelled"
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := &gateReader{r: bytes.NewReader(data), at: 1<<20 + 5, reached: make(chan struct{}), release: ctx.Done()}
		errc := make(chan error, 1)
		go func() { errc <- tg.Put(ctx, name, r, size, target.PutOptions{SHA256: sum}) }()
		<-r.reached
		// Put now waits for its reader: blocks are staged, nothing is visible.
		waitFor(t, "uncommitted blocks", func() bool { _, u := blockCount(t, cc, name); return u > 0 })
		targettest.AssertMissing(t, tg, name)
		cancel()
		err := <-errc
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Put = %v, want context.Canceled", err)
		}
		targettest.AssertMissing(t, tg, name)
		targettest.Put(t, tg, name, data)
		targettest.AssertContent(t, tg, name, data)
		if c, u := blockCount(t, cc, name); c != 13 || u != 0 {
			t.Errorf("after a complete Put: %d committed, %d uncommitted blocks; want 13, 0", c, u)
		}
	})

	t.Run("WrongChecksum", func(t *testing.T) {
		const name = "packs/bad"
		bad := sum
		bad[31] ^= 1
		err := tg.Put(t.Context(), name, bytes.NewReader(data), size, target.PutOptions{SHA256: bad})
		if !errors.Is(err, target.ErrChecksumMismatch) {
			t.Fatalf("Put with a wrong checksum = %v, want ErrChecksumMismatch", err)
		}
		// Blocks went up while the stream was read (the checksum is known only at its end);
		// none was committed.
		if c, u := blockCount(t, cc, name); c != 0 || u == 0 {
			t.Errorf("after the failed Put: %d committed, %d uncommitted blocks; want none committed, some staged", c, u)
		}
		targettest.AssertMissing(t, tg, name)
		targettest.Put(t, tg, name, data)
		targettest.AssertContent(t, tg, name, data)
	})

	t.Run("WrongSize", func(t *testing.T) {
		for _, declared := range []int64{size - 1, size + 1, size + 300<<10} {
			name := fmt.Sprintf("packs/size-%d", declared)
			err := tg.Put(t.Context(), name, bytes.NewReader(data), declared, target.PutOptions{SHA256: sum})
			if !errors.Is(err, target.ErrChecksumMismatch) {
				t.Errorf("Put of %d bytes declared as %d = %v, want ErrChecksumMismatch", size, declared, err)
			}
			targettest.AssertMissing(t, tg, name)
		}
	})

	if names := listAll(t, tg); len(names) != 2 {
		t.Errorf("List = %v, want only the two complete objects", names)
	}
}

// TestServiceVerifiesMD5 damages one byte of every block on its way to the service: the
// service must refuse it, so Put fails and stores nothing.
func TestServiceVerifiesMD5(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	cfg.BlockSize = 64 << 10
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	tg, err := azure.NewWithHTTPClient(t.Context(), cfg, &http.Client{Transport: corruptingTransport{tr}})
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"small": 1000, "staged": 300 << 10} {
		data := targettest.Data(5, n)
		err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(n), target.PutOptions{SHA256: sha256.Sum256(data)})
		if err == nil || errors.Is(err, target.ErrChecksumMismatch) {
			t.Errorf("Put(%s) with blocks damaged in transit = %v, want the service's refusal", name, err)
		}
		t.Logf("Put(%s): %v", name, err)
	}
	good := open(t, cfg)
	for _, name := range []string{"small", "staged"} {
		targettest.AssertMissing(t, good, name)
	}
}

// TestImmutabilityUnsupported checks the message of a refused locked Put and that it uploads
// nothing at all.
func TestImmutabilityUnsupported(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	cfg.BlockSize = 1000
	tg := open(t, cfg)
	data := targettest.Data(1, 5000)
	for name, opts := range map[string]target.PutOptions{
		"retained": {RetainUntil: time.Now().Add(time.Hour)},
		"held":     {LegalHold: true},
	} {
		opts.SHA256 = sha256.Sum256(data)
		err := tg.Put(t.Context(), name, bytes.NewReader(data), int64(len(data)), opts)
		if !errors.Is(err, target.ErrPermanent) || !strings.Contains(fmt.Sprint(err), "immutability not supported by this service") {
			t.Errorf("locked Put(%s) = %v, want a permanent 'immutability not supported' error", name, err)
		}
		t.Logf("locked Put(%s): %v", name, err)
		_, err = az.container(cfg.Container).NewBlockBlobClient(name).GetBlockList(t.Context(), blockblob.BlockListTypeAll, nil)
		if !bloberror.HasCode(err, bloberror.BlobNotFound) {
			t.Errorf("block list of %s = %v, want BlobNotFound: nothing may be uploaded", name, err)
		}
	}
	// Retention that has already ended asks for nothing.
	past := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: time.Now().Add(-time.Hour)}
	if err := tg.Put(t.Context(), "expired", bytes.NewReader(data), int64(len(data)), past); err != nil {
		t.Errorf("Put with past retention: %v", err)
	}
}

// TestLargeStreams stores and reads back an object much larger than the memory Put may use:
// Concurrency blocks of BlockSize.
func TestLargeStreams(t *testing.T) {
	az := startAzurite(t)
	tg := open(t, az.config(t)) // default blocks: 4 MiB, 4 at once
	const size = 96<<20 + 12345
	h := sha256.New()
	if _, err := io.Copy(h, newPattern(size)); err != nil {
		t.Fatal(err)
	}
	sum := [32]byte(h.Sum(nil))

	growth, total := measureHeap(t, func() {
		if err := tg.Put(t.Context(), "packs/large", newPattern(size), size, target.PutOptions{SHA256: sum}); err != nil {
			t.Fatalf("Put: %v", err)
		}
	})
	t.Logf("Put of %d MiB: heap grew by at most %d MiB, %d MiB allocated in all", size>>20, growth>>20, total>>20)
	if limit := uint64(size / 3); growth > limit {
		t.Errorf("Put of %d MiB grew the heap by %d MiB, want at most %d MiB", size>>20, growth>>20, limit>>20)
	}

	growth, _ = measureHeap(t, func() {
		rc, err := tg.Get(t.Context(), "packs/large")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		defer rc.Close()
		h := sha256.New()
		if n, err := io.Copy(h, rc); err != nil || n != size || [32]byte(h.Sum(nil)) != sum {
			t.Errorf("Get: %d bytes, %v; want %d bytes with the stored SHA-256", n, err, int64(size))
		}
	})
	t.Logf("Get of %d MiB: heap grew by at most %d MiB", size>>20, growth>>20)
	if limit := uint64(16 << 20); growth > limit {
		t.Errorf("Get grew the heap by %d MiB, want at most %d MiB", growth>>20, limit>>20)
	}

	rc, err := tg.GetRange(t.Context(), "packs/large", size-100, 1000)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(rc)
	rc.Close()
	want := make([]byte, 100)
	p := newPattern(size)
	p.Seek(size-100, io.SeekStart)
	io.ReadFull(p, want)
	if err != nil || !bytes.Equal(tail, want) {
		t.Errorf("GetRange of the last 100 bytes = %d bytes, %v; want the pattern's tail", len(tail), err)
	}
}

// TestOutage kills the emulator: operations fail with transient errors (the retry wrapper
// would try again), and once it is back Put works and the earlier objects are there.
func TestOutage(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	cfg.BlockSize = 128 << 10
	tg := open(t, cfg)
	ctx := t.Context()
	small, big := targettest.Data(1, 1000), targettest.Data(2, 1<<20)
	targettest.Put(t, tg, "packs/small", small)
	targettest.Put(t, tg, "packs/big", big)
	az.waitPersisted(t)

	az.proc.Stop()
	wantTransient(t, "Put during the outage", put(ctx, tg, "packs/new", small))
	_, err := tg.Stat(ctx, "packs/small")
	wantTransient(t, "Stat during the outage", err)
	_, err = tg.Get(ctx, "packs/small")
	wantTransient(t, "Get during the outage", err)
	wantTransient(t, "List during the outage", tg.List(ctx, "", func(target.Info) error { return nil }))
	wantTransient(t, "Delete during the outage", tg.Delete(ctx, "packs/small"))

	if err := az.proc.Start(); err != nil {
		t.Fatal(err)
	}
	// The emulator dies in the middle of a staged upload.
	data := targettest.Data(3, 2<<20)
	r := &hookReader{r: bytes.NewReader(data), at: 700 << 10, hook: az.proc.Stop}
	err = tg.Put(ctx, "packs/cut", r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	wantTransient(t, "Put cut by the outage", err)

	if err := az.proc.Start(); err != nil {
		t.Fatal(err)
	}
	targettest.AssertContent(t, tg, "packs/small", small)
	targettest.AssertContent(t, tg, "packs/big", big)
	targettest.AssertMissing(t, tg, "packs/cut")
	targettest.Put(t, tg, "packs/new", small)
	targettest.Put(t, tg, "packs/cut", data)
	targettest.AssertContent(t, tg, "packs/cut", data)
	if names := listAll(t, tg); !equal(names, []string{"packs/big", "packs/cut", "packs/new", "packs/small"}) {
		t.Errorf("List after the outage = %v", names)
	}
}

func TestSASToken(t *testing.T) {
	az := startAzurite(t)
	cfg := az.config(t)
	// An account SAS: a container's service SAS cannot read the container's properties.
	sasURL, err := az.svc.GetSASURL(
		sas.AccountResourceTypes{Container: true, Object: true},
		sas.AccountPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true},
		time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccountName, cfg.AccountKey = "", ""
	cfg.SASToken = sasURL[strings.IndexByte(sasURL, '?')+1:]
	tg := open(t, cfg)
	targettest.Put(t, tg, "packs/sas", []byte("through a SAS"))
	targettest.AssertContent(t, tg, "packs/sas", []byte("through a SAS"))
	if err := tg.Delete(t.Context(), "packs/sas"); err != nil {
		t.Fatal(err)
	}
}

func TestNew(t *testing.T) {
	az := startAzurite(t)
	good := az.config(t)
	for _, c := range []struct {
		name string
		edit func(*azure.Config)
		want string
	}{
		{"no URL", func(c *azure.Config) { c.AccountURL = "" }, "AccountURL is empty"},
		{"URL with query", func(c *azure.Config) { c.AccountURL += "?sig=x" }, "SASToken"},
		{"no container", func(c *azure.Config) { c.Container = "" }, "Container"},
		{"bad prefix", func(c *azure.Config) { c.Prefix = "/abs" }, "Prefix"},
		{"block too large", func(c *azure.Config) { c.BlockSize = 5000 << 20 }, "BlockSize"},
		{"negative concurrency", func(c *azure.Config) { c.Concurrency = -1 }, "Concurrency"},
		{"key without account", func(c *azure.Config) { c.AccountName = "" }, "AccountName"},
		{"missing container", func(c *azure.Config) { c.Container = "nosuchcontainer" }, "ContainerNotFound"},
		{"wrong key", func(c *azure.Config) { c.AccountKey = "d3Jvbmc=" }, "403"},
	} {
		cfg := good
		c.edit(&cfg)
		tg, err := azure.New(t.Context(), cfg)
		if err == nil {
			tg.Close()
			t.Errorf("%s: New succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want it to mention %q", c.name, err, c.want)
		}
		if errors.Is(err, target.ErrNotFound) {
			t.Errorf("%s: New = %v, must not match ErrNotFound", c.name, err)
		}
	}
	tg := open(t, good)
	if tg.Name() != "azure:"+good.Container {
		t.Errorf("Name = %q, want the container as label", tg.Name())
	}
	if err := tg.Close(); err != nil {
		t.Error(err)
	}
	if err := tg.Close(); err != nil {
		t.Error(err)
	}
}

// ---- helpers ----

func put(ctx context.Context, tg target.Target, name string, data []byte) error {
	return tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

func wantTransient(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s succeeded, want a transient error", what)
	case errors.Is(err, target.ErrPermanent), errors.Is(err, context.Canceled):
		t.Errorf("%s = %v, want a transient error", what, err)
	default:
		t.Logf("%s: %v", what, err)
	}
}

func listAll(t *testing.T, tg target.Target) []string {
	t.Helper()
	names := []string{}
	if err := tg.List(t.Context(), "", func(i target.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatalf("List: %v", err)
	}
	return names
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// blockCount returns how many committed and uncommitted blocks the service holds for name.
func blockCount(t *testing.T, cc *container.Client, name string) (committed, uncommitted int) {
	t.Helper()
	resp, err := cc.NewBlockBlobClient(name).GetBlockList(t.Context(), blockblob.BlockListTypeAll, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return 0, 0
	}
	if err != nil {
		t.Fatalf("block list of %s: %v", name, err)
	}
	return len(resp.CommittedBlocks), len(resp.UncommittedBlocks)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s", what)
		}
	}
}

// waitPersisted waits until Azurite has saved its metadata after everything done so far. It
// keeps metadata in memory and saves it every 5 seconds, so a kill loses the writes of the
// last few seconds: that is the emulator's durability, not the target's.
func (az *azurite) waitPersisted(t *testing.T) {
	t.Helper()
	since := time.Now()
	loc := az.location
	waitFor(t, "saved Azurite metadata", func() bool {
		for _, f := range []string{"__azurite_db_blob__.json", "__azurite_db_blob_extent__.json"} {
			fi, err := os.Stat(filepath.Join(loc, f))
			if err != nil || !fi.ModTime().After(since) {
				return false
			}
		}
		return true
	})
}

// gateReader reads from r until at bytes were read, then signals reached and blocks until
// release is closed.
type gateReader struct {
	r       io.ReadSeeker
	at      int64
	n       int64
	once    sync.Once
	reached chan struct{}
	release <-chan struct{}
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.n >= g.at {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	} else {
		p = p[:min(int64(len(p)), g.at-g.n)]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

func (g *gateReader) Seek(off int64, whence int) (int64, error) {
	pos, err := g.r.Seek(off, whence)
	g.n = pos
	return pos, err
}

// hookReader reads from r and calls hook once, when at bytes were read.
type hookReader struct {
	r    io.ReadSeeker
	at   int64
	n    int64
	hook func()
	done bool
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.n >= h.at && !h.done {
		h.done = true
		h.hook()
	}
	if h.n < h.at {
		p = p[:min(int64(len(p)), h.at-h.n)]
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	return n, err
}

func (h *hookReader) Seek(off int64, whence int) (int64, error) {
	pos, err := h.r.Seek(off, whence)
	h.n = pos
	return pos, err
}

// pattern is a seekable stream of size deterministic bytes that does not repeat, produced on
// the fly: bytes 8k to 8k+7 are a 64-bit mix of k.
type pattern struct{ size, off int64 }

func newPattern(size int64) *pattern { return &pattern{size: size} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-p.off))
	for i := 0; i < n; {
		pos := p.off + int64(i)
		w := mix(uint64(pos / 8))
		for j := pos % 8; j < 8 && i < n; j++ {
			b[i] = byte(w >> (8 * j))
			i++
		}
	}
	p.off += int64(n)
	return n, nil
}

func (p *pattern) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += p.off
	case io.SeekEnd:
		off += p.size
	}
	if off < 0 {
		return 0, errors.New("pattern: negative position")
	}
	p.off = off
	return off, nil
}

func mix(x uint64) uint64 { // splitmix64's finaliser
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// measureHeap runs fn and returns how far the heap grew above its size before fn (sampled
// every 2ms) and how many bytes were allocated in all meanwhile.
func measureHeap(t *testing.T, fn func()) (growth, total uint64) {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, allocated := ms.HeapAlloc, ms.TotalAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	fn()
	close(stop)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	if peak < base {
		return 0, ms.TotalAlloc - allocated
	}
	return peak - base, ms.TotalAlloc - allocated
}

// corruptingTransport flips the first byte of every request body that carries blob data.
type corruptingTransport struct{ base http.RoundTripper }

func (c corruptingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	comp := req.URL.Query().Get("comp")
	if req.Method != http.MethodPut || req.Body == nil || (comp != "" && comp != "block") {
		return c.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(&flipFirst{r: req.Body})
	r.GetBody = nil
	return c.base.RoundTrip(r)
}

type flipFirst struct {
	r    io.Reader
	done bool
}

func (f *flipFirst) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}
