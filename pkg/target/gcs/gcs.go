// Package gcs is a storage target on Google Cloud Storage, through the JSON API of
// cloud.google.com/go/storage.
//
// Objects live in one existing bucket, under an optional prefix. New does not contact the
// service, so a missing bucket or missing permissions show up on the first call.
//
// Put reads r twice. The first pass computes the CRC32C of the object (and checks size and
// SHA-256, so a wrong Put fails before it uses the network). The second pass streams the bytes
// into an upload that is create-only (ifGenerationMatch=0) and carries that CRC32C, so the
// service rejects bytes damaged on the way; the second pass hashes again and the upload is
// finalized only if size and SHA-256 still match. Objects larger than one chunk go up as a
// resumable upload, one chunk per request; smaller ones as a single request. Either way the
// object becomes visible only when the final request succeeds: a Put that fails, is cancelled
// or crashes before then leaves at most an unfinished resumable session, which is invisible
// and expires on the service after a week.
//
// Retention (PutOptions.RetainUntil) becomes object retention in mode "Locked" and a legal hold
// becomes a temporary hold; see docs/targets/gcs.md for why not an event-based hold. The bucket
// must have object retention enabled for RetainUntil to be accepted.
//
// The SDK's own retries are switched off: retrying is the job of pkg/target/retry. Errors are
// classified here: missing objects are target.ErrNotFound, a failed create-only condition is
// target.ErrExists, a delete refused by retention or a hold is target.ErrLocked, other 4xx
// answers are target.ErrPermanent, and 5xx, 408, 429 and network errors stay transient.
package gcs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

const (
	// DefaultChunkSize is the resumable upload chunk used when Config.ChunkSize is zero.
	DefaultChunkSize = 16 << 20
	// chunkAlign is the granularity the service requires of every non-final chunk.
	chunkAlign = 256 << 10
	// metaSHA256 is the custom metadata key holding the hex SHA-256 of the object.
	metaSHA256 = "sha256"
	// defaultPageSize is the number of objects List asks for per request (the service's maximum).
	defaultPageSize = 1000
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config says which bucket to use and how to reach it.
type Config struct {
	// Name labels the target in logs and metrics as "gcs:<Name>"; the default is the bucket,
	// followed by "/<prefix>" when there is a prefix.
	Name string
	// Bucket holds the objects. It must exist.
	Bucket string
	// Prefix is prepended to every object name, so several targets can share a bucket. It must
	// be a valid object name; a trailing "/" is added if missing. Empty means the bucket root.
	Prefix string
	// Endpoint is the JSON API base URL. Empty means Google Cloud Storage, reached with
	// Application Default Credentials. An "http://" endpoint is taken to be an emulator and
	// gets no credentials at all; a bare "http://host:port" gets "/storage/v1/" appended. Any
	// other endpoint (a private one, say) is used with Application Default Credentials.
	Endpoint string
	// ChunkSize is the resumable upload chunk, rounded up to a multiple of 256 KiB; zero means
	// DefaultChunkSize. Each Put in flight buffers up to one chunk in memory.
	ChunkSize int
}

// Target stores objects in a Google Cloud Storage bucket. It is safe for concurrent use.
type Target struct {
	client   *storage.Client
	bucket   *storage.BucketHandle
	prefix   string
	name     string
	chunk    int
	pageSize int
	hc       *http.Client // set when the target owns the HTTP client (emulator endpoints)

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// hooks are seams for tests: an HTTP transport to observe or damage requests (emulator
// endpoints only) and the List page size.
type hooks struct {
	transport http.RoundTripper
	pageSize  int
}

// New returns a target for cfg. It does not contact the service.
func New(ctx context.Context, cfg Config) (*Target, error) {
	return newTarget(ctx, cfg, hooks{})
}

func newTarget(ctx context.Context, cfg Config, h hooks) (*Target, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("gcs: config: bucket is empty")
	}
	prefix, err := normalizePrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if cfg.ChunkSize < 0 {
		return nil, fmt.Errorf("gcs: config: negative chunk size %d", cfg.ChunkSize)
	}
	chunk := cfg.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	t := &Target{
		prefix:   prefix,
		name:     "gcs:" + orDefault(cfg.Name, strings.TrimSuffix(cfg.Bucket+"/"+prefix, "/")),
		chunk:    roundUp(chunk, chunkAlign),
		pageSize: orDefault(h.pageSize, defaultPageSize),
	}

	// Reads on the JSON API as well, as fake-gcs-server needs: one API serves every call.
	opts := []option.ClientOption{storage.WithJSONReads()}
	if cfg.Endpoint != "" {
		endpoint, emulator, err := normalizeEndpoint(cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		opts = append(opts, option.WithEndpoint(endpoint))
		if emulator {
			tr := h.transport
			if tr == nil {
				tr = http.DefaultTransport.(*http.Transport).Clone()
			}
			t.hc = &http.Client{Transport: tr}
			opts = append(opts, option.WithoutAuthentication(), option.WithHTTPClient(t.hc))
		}
	}
	if h.transport != nil && t.hc == nil {
		return nil, errors.New("gcs: a test transport needs an http:// emulator endpoint")
	}
	t.client, err = storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs: client: %w", err)
	}
	// Retries belong to pkg/target/retry. RetryNever covers every call but the chunks of an
	// upload, which the underlying library retries on its own unless told not to (see put).
	t.client.SetRetry(storage.WithPolicy(storage.RetryNever))
	t.bucket = t.client.Bucket(cfg.Bucket)
	return t, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

func normalizePrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	p = strings.TrimSuffix(p, "/")
	if err := target.ValidateName(p); err != nil {
		return "", fmt.Errorf("gcs: config: prefix: %w", err)
	}
	return p + "/", nil
}

// normalizeEndpoint returns the JSON API base URL and whether it is an emulator (plain http).
func normalizeEndpoint(e string) (string, bool, error) {
	u, err := url.Parse(e)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false, fmt.Errorf("gcs: config: endpoint %q is not an http(s) URL", e)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/storage/v1/"
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String(), u.Scheme == "http", nil
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return "gcs" }

// Close implements target.Target. It must not be called while other calls are in flight; calls
// after Close fail.
func (t *Target) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.closeErr = t.client.Close()
		if t.hc != nil {
			t.hc.CloseIdleConnections()
		}
	})
	return t.closeErr
}

// errClosed is returned by calls on a closed target.
var errClosed = fmt.Errorf("%w: target is closed", target.ErrPermanent)

func (t *Target) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.closed.Load() {
		return errClosed
	}
	return target.ValidateName(name)
}

func (t *Target) object(name string) *storage.ObjectHandle {
	return t.bucket.Object(t.prefix + name)
}

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.put(ctx, name, r, size, opts); err != nil {
		return fmt.Errorf("gcs: put %s: %w", name, err)
	}
	return nil
}

func (t *Target) put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", target.ErrChecksumMismatch, size)
	}
	// First pass: the CRC32C must be known before the first byte goes out, since the service
	// takes it with the upload's metadata.
	crc := crc32.New(castagnoli)
	if err := target.CopyVerified(ctx, crc, r, size, opts.SHA256); err != nil {
		return err
	}

	// Cancelling wctx aborts the upload: the SDK sends no request after that, in particular
	// not the final one that would make the object visible.
	wctx, abort := context.WithCancel(ctx)
	defer abort()
	w := t.object(name).
		If(storage.Conditions{DoesNotExist: true}).
		// RetryNever leaves the upload's chunk requests to the library's default retries
		// (for up to 32 s per chunk). "Always, but no error qualifies" turns those off too.
		Retryer(storage.WithPolicy(storage.RetryAlways), storage.WithErrorFunc(func(error) bool { return false })).
		NewWriter(wctx)
	w.ChunkSize = t.chunkFor(size)
	w.ContentType = "application/octet-stream" // no sniffing
	w.CRC32C, w.SendCRC32C = crc.Sum32(), true
	w.Metadata = map[string]string{metaSHA256: hex.EncodeToString(opts.SHA256[:])}
	if !opts.RetainUntil.IsZero() {
		w.Retention = &storage.ObjectRetention{Mode: "Locked", RetainUntil: opts.RetainUntil}
	}
	w.TemporaryHold = opts.LegalHold

	// Second pass: stream and verify again (r may have changed since the first pass). Only a
	// clean pass is finalized by Close.
	err := target.CopyVerified(ctx, w, r, size, opts.SHA256)
	if err == nil {
		err = ctx.Err() // cancelled after the last read: publish nothing
	}
	if err != nil {
		abort()
		_ = w.Close() // reports the abort; waits for nothing once aborted
		return classify(err)
	}
	return classify(w.Close())
}

// chunkFor returns the upload chunk for an object of size bytes: the configured chunk, or less
// for a smaller object, so a small Put does not hold a whole chunk of memory. An object that
// fits in one chunk goes up in a single request.
func (t *Target) chunkFor(size int64) int {
	if size < int64(t.chunk) {
		return roundUp(int(size)+1, chunkAlign)
	}
	return t.chunk
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader. A whole-object read is checked against the stored CRC32C
// by the SDK; a read that breaks off is resumed by the SDK at the byte it reached, pinned to the
// object's generation.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := t.getRange(ctx, name, offset, length)
	if err != nil {
		return nil, fmt.Errorf("gcs: get %s: %w", name, err)
	}
	return rc, nil
}

func (t *Target) getRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := t.check(ctx, name); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("offset %d: %w", offset, target.ErrInvalidRange)
	}
	obj := t.object(name)
	var rangeErr error
	if length != 0 {
		r, err := obj.NewRangeReader(ctx, offset, length)
		if err == nil {
			return r, nil
		}
		if !hasStatus(err, http.StatusRequestedRangeNotSatisfiable) {
			return nil, classify(err)
		}
		// The service refuses a range starting at or after the end; the contract reads zero
		// bytes at the end and refuses only past it, so look at the size.
		rangeErr = err
	}
	attrs, err := obj.Attrs(ctx)
	switch {
	case err != nil:
		return nil, classify(err)
	case offset > attrs.Size:
		return nil, fmt.Errorf("offset %d, size %d: %w", offset, attrs.Size, target.ErrInvalidRange)
	case rangeErr != nil && offset < attrs.Size: // replaced in between: let the caller retry
		return nil, rangeErr
	}
	return http.NoBody, nil
}

// Stat implements target.Reader. SHA256 comes from the object's metadata, written by Put.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := t.check(ctx, name); err != nil {
		return target.Info{}, fmt.Errorf("gcs: stat %s: %w", name, err)
	}
	attrs, err := t.object(name).Attrs(ctx)
	if err != nil {
		return target.Info{}, fmt.Errorf("gcs: stat %s: %w", name, classify(err))
	}
	return t.info(name, attrs), nil
}

func (t *Target) info(name string, a *storage.ObjectAttrs) target.Info {
	i := target.Info{Name: name, Size: a.Size, ModTime: a.Updated}
	if i.ModTime.IsZero() {
		i.ModTime = a.Created
	}
	if s := a.Metadata[metaSHA256]; len(s) == hex.EncodedLen(len(i.SHA256)) {
		if _, err := hex.Decode(i.SHA256[:], []byte(s)); err != nil {
			i.SHA256 = [32]byte{} // not ours: report none rather than a wrong one
		}
	}
	return i
}

// List implements target.Reader. The service lists in lexical (UTF-8 byte) order, one page per
// request. Objects under the prefix whose names are not valid target names are skipped. fn's
// error is returned as is.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gcs: list %s: %w", prefix, err)
	}
	if t.closed.Load() {
		return fmt.Errorf("gcs: list %s: %w", prefix, errClosed)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("gcs: list: %w", err)
	}
	q := &storage.Query{Prefix: t.prefix + prefix, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated", "Created", "Metadata"}); err != nil {
		return fmt.Errorf("gcs: list %s: %w", prefix, err)
	}
	it := t.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = t.pageSize
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("gcs: list %s: %w", prefix, classify(err))
		}
		name := strings.TrimPrefix(a.Name, t.prefix)
		if target.ValidateName(name) != nil {
			continue // written by someone else
		}
		if err := fn(t.info(name, a)); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("gcs: list %s: %w", prefix, err)
		}
	}
}

// Delete implements target.Writer. On a bucket with versioning the object becomes noncurrent
// rather than gone, and the name is free again.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := t.check(ctx, name); err != nil {
		return fmt.Errorf("gcs: delete %s: %w", name, err)
	}
	if err := t.object(name).Delete(ctx); err != nil {
		return fmt.Errorf("gcs: delete %s: %w", name, classify(err))
	}
	return nil
}
