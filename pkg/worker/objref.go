package worker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// objectChunkBuffer bounds the chunk bytes a reference read holds in the client. The object
// store's own Get pushes chunks through a flow-controlled push consumer whose client-side buffer
// grows with the object; pulling them keeps the worker's memory flat whatever the item's size.
const objectChunkBuffer = 2 << 20

// objectReader streams one object of a NATS object store bucket chunk by chunk with an ordered
// pull consumer, and checks the object's size and SHA-256 digest at the end.
type objectReader struct {
	ctx    context.Context
	cons   jetstream.MessagesContext
	size   uint64
	chunks uint32
	digest []byte

	buf   []byte
	got   uint64
	seen  uint32
	sha   hash.Hash
	err   error
	close func()
}

// Errors reading a record by reference. Their texts are fixed and name only the class of the
// failure: a reference URI may carry a signed token, a bucket or object name may name a
// customer, and the errors of the NATS and HTTP clients can quote any of them. So neither the
// URI, nor the bucket or object name, nor a client's error text ever reaches a dead-letter
// reason, a log line or a span (docs/events.md section 7). Context errors are kept (wrapped):
// their texts are fixed too.
var (
	errRefObjectNotFound = errors.New("record reference: object not found")
	errRefBucketNotFound = errors.New("record reference: bucket not found")
	errRefBadName        = fmt.Errorf("%w: record reference: invalid bucket or object name", errPermanent)
	errRefRead           = errors.New("record reference: read failed")
	errRefFetch          = errors.New("record reference: fetch failed")
)

// objectStoreError maps an error of the NATS object store to one of the reference errors,
// dropping its text.
func objectStoreError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return errRefObjectNotFound
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return errRefBucketNotFound
	case errors.Is(err, jetstream.ErrInvalidStoreName), errors.Is(err, jetstream.ErrNameRequired):
		return errRefBadName
	}
	return withContext(ctx, err, errRefRead)
}

// withContext returns class, wrapping the context's error when err is due to it.
func withContext(ctx context.Context, err, class error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %w", class, cerr)
	}
	for _, cerr := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, cerr) {
			return fmt.Errorf("%w: %w", class, cerr)
		}
	}
	return class
}

// openObject opens name in bucket for streaming. Its errors, and those of the reader, are the
// fixed-text reference errors above (errRefObjectNotFound when there is no such object).
func openObject(ctx context.Context, js jetstream.JetStream, bucket, name string) (*objectReader, int64, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, 0, objectStoreError(ctx, err)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, 0, objectStoreError(ctx, err)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, 0, fmt.Errorf("%w: record reference is an object store link; give the object itself", errPermanent)
	}
	digest, ok := strings.CutPrefix(info.Digest, "SHA-256=")
	want, derr := base64.URLEncoding.DecodeString(digest)
	if !ok || derr != nil || len(want) != sha256.Size {
		return nil, 0, fmt.Errorf("%w: record reference has no valid SHA-256 digest", errPermanent)
	}
	r := &objectReader{ctx: ctx, size: info.Size, chunks: info.Chunks, digest: want, sha: sha256.New()}
	if info.Size == 0 {
		r.close = func() {}
		return r, 0, nil
	}
	cons, err := js.OrderedConsumer(ctx, "OBJ_"+bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$O." + bucket + ".C." + info.NUID},
	})
	if err != nil {
		return nil, 0, objectStoreError(ctx, err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(objectChunkBuffer))
	if err != nil {
		return nil, 0, objectStoreError(ctx, err)
	}
	r.cons = it
	r.close = it.Stop
	return r, int64(info.Size), nil
}

func (r *objectReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.seen == r.chunks || r.got >= r.size {
			r.err = r.finish()
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		m, err := r.cons.Next()
		if err != nil {
			r.err = objectStoreError(r.ctx, err)
			continue
		}
		r.buf = m.Data()
		r.seen++
		r.got += uint64(len(r.buf))
		r.sha.Write(r.buf)
		if r.got > r.size {
			r.err = fmt.Errorf("%w: record reference is longer than its object info says", errPermanent)
			r.buf = nil
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *objectReader) finish() error {
	if r.got != r.size {
		return fmt.Errorf("%w: record reference holds %d bytes, its object info says %d", errPermanent, r.got, r.size)
	}
	if string(r.sha.Sum(nil)) != string(r.digest) {
		return fmt.Errorf("%w: record reference does not match its SHA-256 digest", errPermanent)
	}
	return io.EOF
}

func (r *objectReader) Close() error {
	r.close()
	return nil
}
