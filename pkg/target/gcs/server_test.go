package gcs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/target/gcs"
)

// server is one fake-gcs-server process with a filesystem backend in a temporary directory, so
// a Stop and Start keeps buckets and objects.
type server struct {
	proc     *emulator.Process
	endpoint string
	raw      *storage.Client // the test's own view of the service, beside the target
	buckets  atomic.Int64
}

// startServer runs fake-gcs-server (installed by deploy/emulators/gcs/install.sh) on a random
// port. A missing binary fails the test.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := emulator.Tool(t, "bin/fake-gcs-server")
	port := emulator.FreePort(t)
	s := &server{endpoint: fmt.Sprintf("http://127.0.0.1:%d/storage/v1/", port)}
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	s.proc = emulator.Start(t, emulator.Spec{
		Name: "fake-gcs-server",
		Path: bin,
		Args: []string{
			"-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-backend", "filesystem", "-filesystem-root", t.TempDir(), "-log-level", "warn",
		},
		Port: port,
		Ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint+"b?project=custos-test", nil)
			if err != nil {
				return err
			}
			resp, err := probe.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("list buckets: %s", resp.Status)
			}
			return nil
		},
	})
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	raw, err := storage.NewClient(t.Context(), option.WithEndpoint(s.endpoint), option.WithoutAuthentication(),
		option.WithHTTPClient(hc), storage.WithJSONReads())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetRetry(storage.WithPolicy(storage.RetryNever))
	s.raw = raw
	t.Cleanup(func() {
		raw.Close()
		hc.CloseIdleConnections()
	})
	return s
}

// newBucket creates a bucket no other test uses.
func (s *server) newBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("custos-test-%d", s.buckets.Add(1))
	if err := s.raw.Bucket(name).Create(t.Context(), "custos-test", nil); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// newTarget returns a target on cfg.Bucket, or on a fresh bucket if that is empty, at the
// emulator's endpoint. The target is closed when the test ends.
func (s *server) newTarget(t testing.TB, cfg gcs.Config, transport http.RoundTripper, pageSize int) *gcs.Target {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = s.newBucket(t)
	}
	cfg.Endpoint = s.endpoint
	tg, err := gcs.NewWithHooks(t.Context(), cfg, transport, pageSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// recorder is an HTTP transport that logs every request with its outcome, keeps the bodies of
// upload starts and single-request uploads (small here), and can damage them.
type recorder struct {
	base *http.Transport

	mu      sync.Mutex
	reqs    []request
	corrupt []byte // the first occurrence in a POST body gets its first byte flipped
}

type request struct {
	method, url string
	body        []byte // upload starts only
	status      int    // 0 when the request failed
}

func newRecorder() *recorder {
	return &recorder{base: http.DefaultTransport.(*http.Transport).Clone()}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := request{method: req.Method, url: req.URL.String()}
	if isUploadStart(rec) && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		if i := bytes.Index(body, r.corrupt); len(r.corrupt) > 0 && i >= 0 {
			body[i] ^= 0xff
		}
		r.mu.Unlock()
		req = req.Clone(req.Context())
		req.Body, req.GetBody, req.ContentLength = io.NopCloser(bytes.NewReader(body)), nil, int64(len(body))
		rec.body = body
	}
	resp, err := r.base.RoundTrip(req)
	if err == nil {
		rec.status = resp.StatusCode
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) CloseIdleConnections() { r.base.CloseIdleConnections() }

func (r *recorder) setCorrupt(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt = b
}

// requests returns the logged requests that match f.
func (r *recorder) requests(f func(request) bool) []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []request
	for _, q := range r.reqs {
		if f(q) {
			out = append(out, q)
		}
	}
	return out
}

// isUpload matches every request of an upload: its start (or the single request) and chunks.
func isUpload(q request) bool { return strings.Contains(q.url, "/upload/storage/v1/") }

// isUploadStart matches the request that starts a resumable upload or is a whole upload.
func isUploadStart(q request) bool { return isUpload(q) && !strings.Contains(q.url, "upload_id=") }

// isChunk matches a chunk of a resumable upload that the service answered.
func isChunk(q request) bool { return strings.Contains(q.url, "upload_id=") && q.status != 0 }

// passReader serves data and counts passes: each rewind to offset 0 starts the next one. After
// every Read it calls onRead (if set) with the pass, the offset of the bytes read and the bytes,
// which onRead may change.
type passReader struct {
	r      *bytes.Reader
	pass   int
	onRead func(pass int, off int64, p []byte)
}

func newPassReader(data []byte, onRead func(pass int, off int64, p []byte)) *passReader {
	return &passReader{r: bytes.NewReader(data), onRead: onRead}
}

func (p *passReader) Read(b []byte) (int, error) {
	off := p.r.Size() - int64(p.r.Len())
	n, err := p.r.Read(b)
	if p.onRead != nil && n > 0 {
		p.onRead(p.pass, off, b[:n])
	}
	return n, err
}

func (p *passReader) Seek(off int64, whence int) (int64, error) {
	pos, err := p.r.Seek(off, whence)
	if err == nil && pos == 0 {
		p.pass++
	}
	return pos, err
}

// genReader yields size deterministic bytes without holding them: a block repeated, each
// repetition rotated by 7 more bytes so no two are equal.
type genReader struct {
	block     []byte
	off, size int64
	onRead    func(off int64)
}

func newGenReader(block []byte, size int64) *genReader { return &genReader{block: block, size: size} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.size-g.off)]
	n := int64(len(g.block))
	for done := 0; done < len(p); {
		pos := g.off + int64(done)
		in := pos % n
		idx := (in + 7*(pos/n)) % n
		m := int(min(int64(len(p)-done), n-in, n-idx))
		copy(p[done:done+m], g.block[idx:idx+int64(m)])
		done += m
	}
	g.off += int64(len(p))
	if g.onRead != nil {
		g.onRead(g.off)
	}
	return len(p), nil
}

func (g *genReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += g.off
	case io.SeekEnd:
		off += g.size
	}
	if off < 0 {
		return 0, fmt.Errorf("seek to %d", off)
	}
	g.off = off
	return off, nil
}
