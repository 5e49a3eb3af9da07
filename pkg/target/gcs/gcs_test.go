package gcs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/gcs"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const notEnforced = "fake-gcs-server stores object retention but enforces neither retention nor holds"

func TestConformance(t *testing.T) {
	srv := startServer(t)
	for _, prefix := range []string{"", "tenants/a/"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			targettest.Run(t, func(t *testing.T) target.Target {
				// A small chunk so the suite's larger objects go up as multi-chunk resumable
				// uploads, and a small page so its listings take several requests.
				return srv.newTarget(t, gcs.Config{Prefix: prefix, ChunkSize: 256 << 10}, nil, 3)
			}, targettest.LockNotEnforced(notEnforced))
		})
	}
}

func put(ctx context.Context, tg target.Target, name string, r io.ReadSeeker, data []byte) error {
	return tg.Put(ctx, name, r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

// TestCrashMidUpload checks that a resumable upload that does not complete, after some of its
// chunks reached the service, leaves nothing visible and does not block a later Put.
func TestCrashMidUpload(t *testing.T) {
	srv := startServer(t)
	const chunk = 256 << 10
	data := targettest.Data(1, 10*chunk+123)

	t.Run("cancelled after two chunks", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		tg := srv.newTarget(t, gcs.Config{ChunkSize: chunk}, rec, 0)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := newPassReader(data, func(pass int, off int64, _ []byte) {
			// Two whole chunks were handed to the upload; wait until the service took them.
			if pass == 2 && off >= 2*chunk && ctx.Err() == nil {
				waitFor(t, func() bool { return len(rec.requests(isChunk)) >= 2 })
				cancel()
			}
		})
		err := put(ctx, tg, "packs/c", r, data)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want context.Canceled", err)
		}
		if n := len(rec.requests(isChunk)); n < 2 {
			t.Fatalf("%d chunks reached the service before the cancel, want at least 2", n)
		}
		targettest.AssertMissing(t, tg, "packs/c")
		targettest.Put(t, tg, "packs/c", data)
		targettest.AssertContent(t, tg, "packs/c", data)
	})

	t.Run("wrong checksum fails before the upload", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		tg := srv.newTarget(t, gcs.Config{ChunkSize: chunk}, rec, 0)
		bad := sha256.Sum256(data)
		bad[31] ^= 1
		err := tg.Put(t.Context(), "packs/w", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: bad})
		if !errors.Is(err, target.ErrChecksumMismatch) {
			t.Fatalf("Put = %v, want ErrChecksumMismatch", err)
		}
		if n := len(rec.requests(isUpload)); n != 0 {
			t.Errorf("%d upload requests for a Put with a wrong checksum, want none", n)
		}
		targettest.AssertMissing(t, tg, "packs/w")
	})

	t.Run("bytes change during the upload", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		tg := srv.newTarget(t, gcs.Config{ChunkSize: chunk}, rec, 0)
		// The first pass (CRC32C and checks) sees the right bytes; the upload pass sees the
		// last byte flipped, after nine chunks went up. Only the hash of the upload pass can
		// catch it, before the final request.
		r := newPassReader(data, func(pass int, off int64, p []byte) {
			if last := int64(len(data)) - 1; pass == 2 && off+int64(len(p)) > last {
				p[last-off] ^= 1
			}
		})
		err := put(t.Context(), tg, "packs/m", r, data)
		if !errors.Is(err, target.ErrChecksumMismatch) {
			t.Fatalf("Put = %v, want ErrChecksumMismatch", err)
		}
		if n := len(rec.requests(isChunk)); n < 9 {
			t.Errorf("%d chunks reached the service, want at least 9 (the check must come late)", n)
		}
		targettest.AssertMissing(t, tg, "packs/m")
		targettest.Put(t, tg, "packs/m", data)
		targettest.AssertContent(t, tg, "packs/m", data)
	})
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// TestLargeStreams puts and gets an object of 64 MiB and a bit, checking that memory stays
// near one upload chunk instead of growing with the object.
func TestLargeStreams(t *testing.T) {
	// Not parallel: the heap is measured for the whole process.
	srv := startServer(t)
	const (
		size  = 64<<20 + 12345
		chunk = 4 << 20
		limit = 4 * chunk // the chunk buffer, garbage and the GC's headroom, far below size
	)
	tg := srv.newTarget(t, gcs.Config{ChunkSize: chunk}, nil, 0)
	block := targettest.Data(5, 1<<20+13)
	h := sha256.New()
	if _, err := io.Copy(h, newGenReader(block, size)); err != nil {
		t.Fatal(err)
	}
	sum := [32]byte(h.Sum(nil))

	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	base, peak := m.HeapAlloc, m.HeapAlloc
	sample := func() {
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
	}
	r := newGenReader(block, size)
	next := int64(0)
	r.onRead = func(off int64) {
		if off >= next {
			sample()
			next = off + 1<<20
		}
	}
	start := time.Now()
	if err := tg.Put(t.Context(), "packs/large", r, size, target.PutOptions{SHA256: sum}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	sample()
	t.Logf("Put of %d MiB in %v, heap growth %.1f MiB (limit %d MiB)", size>>20, time.Since(start).Round(time.Millisecond),
		float64(peak-base)/(1<<20), limit>>20)
	if peak-base > limit {
		t.Errorf("Put grew the heap by %d bytes, want at most %d", peak-base, limit)
	}

	runtime.GC()
	runtime.ReadMemStats(&m)
	base, peak = m.HeapAlloc, m.HeapAlloc
	rc, err := tg.Get(t.Context(), "packs/large")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	h.Reset()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := rc.Read(buf)
		h.Write(buf[:k])
		if n += int64(k); n%(1<<20) < int64(k) {
			sample()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	sample()
	t.Logf("Get: heap growth %.1f MiB", float64(peak-base)/(1<<20))
	if n != size || [32]byte(h.Sum(nil)) != sum {
		t.Errorf("Get returned %d bytes with sha256 %x, want %d bytes with %x", n, h.Sum(nil), size, sum)
	}
	if peak-base > limit {
		t.Errorf("Get grew the heap by %d bytes, want at most %d", peak-base, limit)
	}
	info, err := tg.Stat(t.Context(), "packs/large")
	if err != nil || info.Size != size || info.SHA256 != sum {
		t.Errorf("Stat = %+v, %v; want size %d and sha256 %x", info, err, size, sum)
	}
}

// TestOutage stops the emulator process: Puts fail with errors a retry may fix, and work again
// once it is back, with the objects stored before the outage still there.
func TestOutage(t *testing.T) {
	srv := startServer(t)
	const chunk = 256 << 10
	tg := srv.newTarget(t, gcs.Config{ChunkSize: chunk}, nil, 0)
	before := targettest.Data(1, 1000)
	targettest.Put(t, tg, "packs/before", before)

	restart := func() {
		t.Helper()
		if err := srv.proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	wantTransient := func(what string, err error) {
		t.Helper()
		switch {
		case err == nil:
			t.Fatalf("%s succeeded with the emulator down", what)
		case errors.Is(err, target.ErrPermanent), errors.Is(err, context.Canceled):
			t.Errorf("%s = %v, want a transient error", what, err)
		default:
			t.Logf("%s: %v", what, err)
		}
	}

	t.Run("down before Put", func(t *testing.T) {
		srv.proc.Stop()
		data := targettest.Data(2, 3*chunk)
		wantTransient("Put", put(t.Context(), tg, "packs/down", bytes.NewReader(data), data))
		_, err := tg.Stat(t.Context(), "packs/before")
		wantTransient("Stat", err)
		restart()
		targettest.AssertMissing(t, tg, "packs/down")
		targettest.Put(t, tg, "packs/down", data)
		targettest.AssertContent(t, tg, "packs/before", before)
	})

	t.Run("down mid-upload", func(t *testing.T) {
		data := targettest.Data(3, 8*chunk)
		r := newPassReader(data, func(pass int, off int64, _ []byte) {
			if pass == 2 && off >= 3*chunk && off < 3*chunk+32<<10 {
				srv.proc.Stop()
			}
		})
		start := time.Now()
		err := put(t.Context(), tg, "packs/mid", r, data)
		wantTransient("Put", err)
		// The SDK would retry a chunk for up to 32 s on its own; the target must not.
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Put took %v to fail: the SDK retried", d)
		}
		restart()
		targettest.AssertMissing(t, tg, "packs/mid")
		targettest.Put(t, tg, "packs/mid", data)
		targettest.AssertContent(t, tg, "packs/mid", data)
	})
}

// TestRetentionAndHoldSent checks what the emulator cannot enforce: that Put asks the service
// for locked retention and a temporary hold. The retention is read back from the emulator; the
// hold is not stored by fake-gcs-server, so it is checked in the request Put sent.
func TestRetentionAndHoldSent(t *testing.T) {
	srv := startServer(t)
	until := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	for _, tc := range []struct {
		name string
		size int
		// stored: the emulator keeps the retention sent. fake-gcs-server v1.56.1 reads a
		// resumable start whose body names the bucket (as the Go SDK's does) as a gcloud-style
		// start, and that path drops the retention.
		stored bool
	}{
		{"single request", 1000, true},
		{"resumable", 3 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			bucket := srv.newBucket(t)
			tg := srv.newTarget(t, gcs.Config{Bucket: bucket, ChunkSize: 1 << 20}, rec, 0)
			data := targettest.Data(1, tc.size)
			opts := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: until, LegalHold: true}
			if err := tg.Put(t.Context(), "packs/r", bytes.NewReader(data), int64(len(data)), opts); err != nil {
				t.Fatalf("Put: %v", err)
			}

			starts := rec.requests(isUploadStart)
			if len(starts) != 1 {
				t.Fatalf("%d upload starts, want 1", len(starts))
			}
			meta := uploadMetadata(t, starts[0].body)
			if !meta.TemporaryHold || meta.EventBasedHold {
				t.Errorf("upload sent temporaryHold=%v eventBasedHold=%v, want true, false", meta.TemporaryHold, meta.EventBasedHold)
			}
			if meta.Retention == nil || meta.Retention.Mode != "Locked" || !meta.Retention.RetainUntilTime.Equal(until) {
				t.Errorf("upload sent retention %+v, want Locked until %v", meta.Retention, until)
			}
			if meta.Crc32c == "" || meta.Metadata["sha256"] == "" {
				t.Errorf("upload sent crc32c %q and metadata %v, want both checksums", meta.Crc32c, meta.Metadata)
			}

			attrs, err := srv.raw.Bucket(bucket).Object("packs/r").Attrs(t.Context())
			if err != nil {
				t.Fatalf("Attrs: %v", err)
			}
			switch r := attrs.Retention; {
			case r == nil && !tc.stored:
				t.Logf("emulator dropped the retention of a resumable upload (known gap); checked in the request only")
			case r == nil || r.Mode != "Locked" || !r.RetainUntil.Equal(until):
				t.Errorf("emulator stored retention %+v, want Locked until %v", r, until)
			default:
				t.Logf("emulator stored retention %+v", *r)
			}
			t.Logf("emulator reports temporaryHold=%v: it does not keep holds; checked in the request only", attrs.TemporaryHold)
		})
	}
}

// uploadMetadata returns the object resource sent with an upload: the whole body of a
// resumable start, the first part of a single multipart request.
func uploadMetadata(t *testing.T, body []byte) (meta struct {
	Crc32c         string            `json:"crc32c"`
	Metadata       map[string]string `json:"metadata"`
	TemporaryHold  bool              `json:"temporaryHold"`
	EventBasedHold bool              `json:"eventBasedHold"`
	Retention      *struct {
		Mode            string    `json:"mode"`
		RetainUntilTime time.Time `json:"retainUntilTime"`
	} `json:"retention"`
}) {
	t.Helper()
	if i := bytes.IndexByte(body, '{'); i >= 0 {
		body = body[i:]
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&meta); err != nil {
		t.Fatalf("upload metadata: %v in %.200q", err, body)
	}
	return meta
}

// TestCorruptionInTransit damages the bytes of an upload on the wire: the service must refuse
// them against the CRC32C Put sent, and the error must leave a retry possible.
func TestCorruptionInTransit(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	tg := srv.newTarget(t, gcs.Config{}, rec, 0)
	data := targettest.Data(9, 100000)
	rec.setCorrupt(data[5000:5032])
	err := put(t.Context(), tg, "packs/x", bytes.NewReader(data), data)
	switch {
	case err == nil:
		t.Fatal("Put of damaged bytes succeeded")
	case errors.Is(err, target.ErrPermanent):
		t.Errorf("Put = %v, want a transient error (a retry sends the bytes again)", err)
	}
	t.Logf("Put: %v", err)
	targettest.AssertMissing(t, tg, "packs/x")
	rec.setCorrupt(nil)
	targettest.Put(t, tg, "packs/x", data)
	targettest.AssertContent(t, tg, "packs/x", data)
}

// TestListPages lists more objects than fit in a page, in order, over several requests.
func TestListPages(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	tg := srv.newTarget(t, gcs.Config{}, rec, 4)
	var want []string
	for i := range 23 {
		name := fmt.Sprintf("p/%03d", (i*7)%23) // stored out of order
		targettest.Put(t, tg, name, []byte{byte(i)})
		want = append(want, fmt.Sprintf("p/%03d", i))
	}
	var got []string
	if err := tg.List(t.Context(), "p/", func(i target.Info) error {
		got = append(got, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	lists := rec.requests(func(q request) bool { return q.method == http.MethodGet && strings.Contains(q.url, "/o?") })
	if len(lists) != 6 {
		t.Errorf("List took %d requests, want 6 pages of at most 4", len(lists))
	}
}

// TestPrefix checks that a target sees only its prefix, skips foreign names, and reports the
// SHA-256 it stored.
func TestPrefix(t *testing.T) {
	srv := startServer(t)
	bucket := srv.newBucket(t)
	tg := srv.newTarget(t, gcs.Config{Bucket: bucket, Prefix: "site/a"}, nil, 0)
	for _, name := range []string{"site/ab", "site/b/x", "other", "site/a/UPPER", "site/a/x y"} {
		w := srv.raw.Bucket(bucket).Object(name).NewWriter(t.Context())
		if _, err := w.Write([]byte("foreign")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	data := []byte("ours")
	targettest.Put(t, tg, "x", data)
	var got []string
	if err := tg.List(t.Context(), "", func(i target.Info) error {
		got = append(got, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"x"}) {
		t.Errorf("List = %v, want [x]", got)
	}
	if _, err := srv.raw.Bucket(bucket).Object("site/a/x").Attrs(t.Context()); err != nil {
		t.Errorf("object not stored under the prefix: %v", err)
	}
	info, err := tg.Stat(t.Context(), "x")
	if err != nil || info.SHA256 != sha256.Sum256(data) {
		t.Errorf("Stat = %+v, %v; want the SHA-256 Put stored", info, err)
	}
}

func TestMissingBucket(t *testing.T) {
	srv := startServer(t)
	tg, err := gcs.New(t.Context(), gcs.Config{Bucket: "no-such-bucket", Endpoint: srv.endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	err = put(t.Context(), tg, "a", bytes.NewReader([]byte("x")), []byte("x"))
	if !errors.Is(err, target.ErrPermanent) || errors.Is(err, target.ErrNotFound) {
		t.Errorf("Put into a missing bucket = %v, want permanent and not ErrNotFound", err)
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []gcs.Config{
		{},
		{Bucket: "b", Prefix: "/a"},
		{Bucket: "b", Prefix: "A/"},
		{Bucket: "b", Prefix: "a//"},
		{Bucket: "b", Endpoint: "127.0.0.1:4443"},
		{Bucket: "b", Endpoint: "ftp://host/"},
		{Bucket: "b", Endpoint: "http://127.0.0.1:1", ChunkSize: -1},
	} {
		if tg, err := gcs.New(t.Context(), cfg); err == nil {
			tg.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	tg, err := gcs.New(t.Context(), gcs.Config{Bucket: "b", Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name() != "gcs:b" || tg.Kind() != "gcs" {
		t.Errorf("Name, Kind = %s, %s; want gcs:b, gcs", tg.Name(), tg.Kind())
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	for cfg, want := range map[gcs.Config]string{
		{Bucket: "b", Prefix: "p/q"}:            "gcs:b/p/q",
		{Bucket: "b", Prefix: "p/", Name: "dr"}: "gcs:dr",
	} {
		cfg.Endpoint = "http://127.0.0.1:1"
		tg, err := gcs.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if tg.Name() != want {
			t.Errorf("Name of %+v = %s, want %s", cfg, tg.Name(), want)
		}
		tg.Close()
	}
	_, err = tg.Stat(t.Context(), "a")
	if !errors.Is(err, target.ErrPermanent) {
		t.Errorf("Stat after Close = %v, want a permanent error", err)
	}
}
