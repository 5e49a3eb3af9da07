package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/custos-dev/custos/pkg/target"
)

// Put implements target.Writer. See the package doc for how it stays create-only and atomic.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.put(ctx, name, r, size, opts); err != nil {
		return fmt.Errorf("s3: put %s: %w", name, err)
	}
	return nil
}

// lock is what a Put asks of Object Lock, in the SDK's terms.
type lock struct {
	mode  types.ObjectLockMode
	until *time.Time
	hold  types.ObjectLockLegalHoldStatus
}

func (l lock) any() bool { return l.until != nil || l.hold != "" }

func (t *Target) put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", target.ErrChecksumMismatch, size)
	}
	var lk lock
	if !opts.RetainUntil.IsZero() {
		until := opts.RetainUntil.UTC()
		lk.mode, lk.until = types.ObjectLockMode(t.cfg.LockMode), &until
	}
	if opts.LegalHold {
		lk.hold = types.ObjectLockLegalHoldStatusOn
	}
	if lk.any() && !t.cfg.profile.ObjectLock {
		return fmt.Errorf("%w: %s does not support Object Lock: refusing to store an unlocked object", target.ErrPermanent, t.cfg.profile.Title)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	multipart := size > t.cfg.PartSize
	if multipart || !t.cfg.profile.ConditionalCreate {
		// Fail fast before uploading parts; and the only guard where If-None-Match is not
		// honoured (racy: see Profile.ConditionalCreate).
		switch _, err := t.head(ctx, name); {
		case err == nil:
			return target.ErrExists
		case !errors.Is(err, target.ErrNotFound):
			return err
		}
	}
	if multipart {
		return t.putMultipart(ctx, t.key(name), r, size, opts.SHA256, lk)
	}
	return t.putObject(ctx, t.key(name), r, size, opts.SHA256, lk)
}

// putObject stores the object with one PutObject, streaming r: the request body is a
// verifyingReader, which withholds the last bytes unless size and checksum match, so a wrong
// body never reaches the service complete.
func (t *Target) putObject(ctx context.Context, key string, r io.ReadSeeker, size int64, sum [32]byte, lk lock) error {
	in := &s3.PutObjectInput{
		Bucket:                    &t.cfg.Bucket,
		Key:                       &key,
		ContentLength:             aws.Int64(size),
		IfNoneMatch:               aws.String("*"),
		Metadata:                  map[string]string{metaSHA256: hex.EncodeToString(sum[:])},
		ObjectLockMode:            lk.mode,
		ObjectLockRetainUntilDate: lk.until,
		ObjectLockLegalHoldStatus: lk.hold,
	}
	switch {
	case t.cfg.profile.ChecksumSHA256:
		in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	case lk.any():
		// Object Lock requests need an integrity header; without SHA-256 support that is
		// Content-MD5, which takes a first pass over r.
		h := md5.New()
		if _, err := io.CopyN(h, ctxReader{ctx, r}, size); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("rewind: %w", err)
		}
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(h.Sum(nil)))
	}
	body := newVerifyingReader(ctx, r, size, sum)
	in.Body = body
	_, err := t.client.PutObject(ctx, in, withPayloadHash(sum))
	if berr := body.close(); berr != nil {
		return berr // the reason the upload was cut short
	}
	var send *smithyhttp.RequestSendError
	if errors.As(err, &send) && ctx.Err() == nil {
		// A service that refuses a conditional write before reading the body may close the
		// connection on it, and the reset loses its 412 response. If the name is taken now,
		// that is the answer (whoever took it: callers compare checksums on ErrExists).
		if _, herr := t.headKey(ctx, key); herr == nil {
			return fmt.Errorf("%w (the upload failed: %w)", target.ErrExists, err)
		}
	}
	return classify(ctx, err)
}

// putMultipart streams r through a multipart upload, Concurrency parts at a time, and
// completes it only when the whole object's size and SHA-256 match. Any failure aborts the
// upload, so nothing becomes visible under key.
func (t *Target) putMultipart(ctx context.Context, key string, r io.Reader, size int64, sum [32]byte, lk lock) (err error) {
	partSize := t.cfg.PartSize
	if n := (size + partSize - 1) / partSize; n > maxParts {
		partSize = ((size+maxParts-1)/maxParts + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	}
	create := &s3.CreateMultipartUploadInput{
		Bucket:                    &t.cfg.Bucket,
		Key:                       &key,
		Metadata:                  map[string]string{metaSHA256: hex.EncodeToString(sum[:])},
		ObjectLockMode:            lk.mode,
		ObjectLockRetainUntilDate: lk.until,
		ObjectLockLegalHoldStatus: lk.hold,
	}
	if t.cfg.profile.ChecksumSHA256 {
		create.ChecksumAlgorithm = types.ChecksumAlgorithmSha256
	}
	out, err := t.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return classify(ctx, err)
	}
	up := upload{t: t, key: key, id: out.UploadId, partSize: partSize, md5: lk.any() && !t.cfg.profile.ChecksumSHA256}
	defer func() {
		if err != nil {
			up.abort(ctx)
		}
	}()
	parts, err := up.sendParts(ctx, r, size, sum)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err = t.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &t.cfg.Bucket,
		Key:             &key,
		UploadId:        up.id,
		IfNoneMatch:     aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	return classify(ctx, err)
}

// upload is one multipart upload in progress.
type upload struct {
	t        *Target
	key      string
	id       *string
	partSize int64
	md5      bool // send Content-MD5 with each part
}

// sendParts reads r part by part into at most Concurrency buffers, hashing the whole object
// as it goes, and uploads each part as soon as it is read. It returns the completed parts once
// every part is stored and r yielded exactly size bytes with SHA-256 sum.
func (u *upload) sendParts(parent context.Context, r io.Reader, size int64, sum [32]byte) ([]types.CompletedPart, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	nparts := int((size + u.partSize - 1) / u.partSize)
	parts := make([]types.CompletedPart, nparts)
	bufs := make(chan []byte, u.t.cfg.Concurrency) // buffers are made on first use
	for range u.t.cfg.Concurrency {
		bufs <- nil
	}
	var wg sync.WaitGroup
	whole := sha256.New()
	src := ctxReader{ctx, r}
	for i := range nparts {
		var buf []byte
		select {
		case buf = <-bufs:
		case <-ctx.Done():
		}
		if ctx.Err() != nil { // a part failed or parent ended: stop reading
			break
		}
		if buf == nil {
			buf = make([]byte, u.partSize)
		}
		chunk := buf[:min(u.partSize, size-int64(i)*u.partSize)]
		if _, err := io.ReadFull(src, chunk); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: reader holds fewer than %d bytes", target.ErrChecksumMismatch, size)
			}
			cancel(err)
			break
		}
		whole.Write(chunk)
		num := int32(i + 1)
		wg.Go(func() {
			p, err := u.sendPart(ctx, num, chunk)
			if err != nil {
				cancel(err) // before the buffer goes back, so the loop does not refill it
			}
			parts[num-1] = p
			bufs <- buf
		})
	}
	if ctx.Err() == nil {
		var one [1]byte
		if n, err := io.ReadFull(src, one[:]); n > 0 {
			cancel(fmt.Errorf("%w: reader holds more than %d bytes", target.ErrChecksumMismatch, size))
		} else if err != nil && !errors.Is(err, io.EOF) {
			cancel(err)
		} else if got := [32]byte(whole.Sum(nil)); got != sum {
			cancel(fmt.Errorf("%w: got sha256 %x, want %x", target.ErrChecksumMismatch, got, sum))
		}
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return parts, nil
}

// sendPart uploads one part; the service verifies its SHA-256 (or MD5) and the signed payload
// hash.
func (u *upload) sendPart(ctx context.Context, num int32, chunk []byte) (types.CompletedPart, error) {
	sum := sha256.Sum256(chunk)
	in := &s3.UploadPartInput{
		Bucket:        &u.t.cfg.Bucket,
		Key:           &u.key,
		UploadId:      u.id,
		PartNumber:    &num,
		Body:          bytes.NewReader(chunk),
		ContentLength: aws.Int64(int64(len(chunk))),
	}
	part := types.CompletedPart{PartNumber: &num}
	switch {
	case u.t.cfg.profile.ChecksumSHA256:
		in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
		part.ChecksumSHA256 = in.ChecksumSHA256
	case u.md5:
		m := md5.Sum(chunk)
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(m[:]))
	}
	out, err := u.t.client.UploadPart(ctx, in, withPayloadHash(sum))
	if err != nil {
		return part, fmt.Errorf("part %d: %w", num, classify(ctx, err))
	}
	if got := aws.ToString(out.ChecksumSHA256); part.ChecksumSHA256 != nil && got != "" && got != *part.ChecksumSHA256 {
		return part, fmt.Errorf("part %d: %w: service reports sha256 %s, sent %s", num, target.ErrChecksumMismatch, got, *part.ChecksumSHA256)
	}
	part.ETag = out.ETag
	return part, nil
}

// abort removes the upload and its parts. It runs when the Put failed, perhaps because ctx
// ended, so it gets a context of its own. A part upload the service is still processing (its
// request cancelled on our side) can make the abort fail or leave that part behind; S3
// documents that an abort may have to be repeated for this reason, so abort tries up to three
// times. What remains is left to AbortIncomplete and lifecycle rules: it is invisible either
// way.
func (u *upload) abort(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for attempt := 1; ; attempt++ {
		_, err := u.t.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: &u.t.cfg.Bucket, Key: &u.key, UploadId: u.id,
		})
		if err == nil {
			// Parts that landed after the abort are listed under the upload ID; if the
			// listing works and shows any, abort again.
			parts, lerr := u.t.client.ListParts(ctx, &s3.ListPartsInput{Bucket: &u.t.cfg.Bucket, Key: &u.key, UploadId: u.id})
			if lerr != nil || len(parts.Parts) == 0 {
				return
			}
		} else if isCode(err, "NoSuchUpload") {
			return
		}
		if attempt == 3 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		}
	}
}

// withPayloadHash signs the request with the SHA-256 of its body, known in advance, instead of
// letting the SDK read the body to compute it (which needs a seekable body and a second pass)
// or send it unsigned. The service checks the body against it (x-amz-content-sha256).
func withPayloadHash(sum [32]byte) func(*s3.Options) {
	h := hex.EncodeToString(sum[:])
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("CustosPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, h), in)
				}), middleware.Before)
		})
	}
}

// errBodyClosed fails reads of a request body after its Put returned: the HTTP transport may
// still hold it, and r belongs to the caller again.
var errBodyClosed = errors.New("request body used after its Put returned")

// verifyingReader yields exactly size bytes of r while hashing them. It withholds the read
// that completes size bytes until it has checked that r holds nothing more and that the
// SHA-256 matches, so a service never receives a complete body that differs from the promise.
type verifyingReader struct {
	ctx  context.Context
	want [32]byte
	size int64

	mu     sync.Mutex // the transport may read after the request returned
	r      io.Reader
	h      hash.Hash
	left   int64
	err    error // why the body was cut short
	done   bool  // all bytes delivered and verified
	closed bool
}

func newVerifyingReader(ctx context.Context, r io.Reader, size int64, want [32]byte) *verifyingReader {
	v := &verifyingReader{ctx: ctx, want: want, size: size, r: r, h: sha256.New(), left: size}
	if size == 0 {
		v.finish()
	}
	return v
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.closed:
		return 0, errBodyClosed
	case v.err != nil:
		return 0, v.err
	case v.done:
		return 0, io.EOF
	}
	if err := v.ctx.Err(); err != nil {
		v.err = err
		return 0, err
	}
	p = p[:min(int64(len(p)), v.left)]
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.left -= int64(n)
	switch {
	case v.left == 0:
		if v.finish(); v.err != nil {
			return 0, v.err
		}
		return n, nil
	case errors.Is(err, io.EOF):
		v.err = fmt.Errorf("%w: read %d bytes, want %d", target.ErrChecksumMismatch, v.size-v.left, v.size)
		return 0, v.err
	case err != nil:
		v.err = err
		return 0, err
	}
	return n, nil
}

// finish checks, once size bytes were read, that r is exhausted and the checksum matches.
func (v *verifyingReader) finish() {
	var one [1]byte
	if n, err := io.ReadFull(v.r, one[:]); n > 0 {
		v.err = fmt.Errorf("%w: reader holds more than %d bytes", target.ErrChecksumMismatch, v.size)
		return
	} else if err != nil && !errors.Is(err, io.EOF) {
		v.err = err
		return
	}
	if got := [32]byte(v.h.Sum(nil)); got != v.want {
		v.err = fmt.Errorf("%w: got sha256 %x, want %x", target.ErrChecksumMismatch, got, v.want)
		return
	}
	v.done = true
}

// close ends the reader's use of r and returns why the body was cut short, if it was.
func (v *verifyingReader) close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	return v.err
}

// ctxReader fails reads once ctx is done, so a long read honours cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
