package azure

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/custos-dev/custos/pkg/target"
)

// Put implements target.Writer; the package doc describes how.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.put(ctx, name, r, size, opts); err != nil {
		return fmt.Errorf("azure: put %s: %w", name, err)
	}
	return nil
}

func (t *Target) put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := check(ctx, name); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", target.ErrChecksumMismatch, size)
	}
	lk, err := t.lockFor(ctx, opts)
	if err != nil {
		return err
	}
	bb := t.blob(name)
	// Fail fast, before reading r: a retried Put whose earlier attempt stored the object
	// ends here. The create-only condition on the final request is what guarantees it.
	_, err = bb.GetProperties(ctx, nil)
	switch err = classify(ctx, err); {
	case err == nil:
		return target.ErrExists
	case !errors.Is(err, target.ErrNotFound):
		return err
	}
	c := commit{
		sum:  opts.SHA256,
		meta: map[string]*string{metaSHA256: to.Ptr(hex.EncodeToString(opts.SHA256[:]))},
		lock: lk,
	}
	if size <= t.cfg.BlockSize {
		return t.putSmall(ctx, bb, r, size, c)
	}
	return t.putBlocks(ctx, bb, r, size, c)
}

// commit is what the request that makes an object visible carries besides its data.
type commit struct {
	sum  [32]byte
	meta map[string]*string
	lock lock
}

// lock holds the immutability settings of one Put, nil where unset.
type lock struct {
	legalHold *bool
	mode      *blob.ImmutabilityPolicySetting
	until     *time.Time
}

func (l lock) set() bool { return l.legalHold != nil || l.until != nil }

// lockFor maps opts to immutability settings, or fails if the container cannot apply them. A
// RetainUntil that has already passed asks for nothing.
func (t *Target) lockFor(ctx context.Context, opts target.PutOptions) (lock, error) {
	retain := opts.RetainUntil.After(t.now())
	if !retain && !opts.LegalHold {
		return lock{}, nil
	}
	immutable, err := t.supportsImmutability(ctx)
	if err != nil {
		return lock{}, err
	}
	if !immutable {
		return lock{}, &unsupportedError{reason: "container " + t.cfg.Container + " has no version-level immutability"}
	}
	var l lock
	if opts.LegalHold {
		l.legalHold = to.Ptr(true)
	}
	if retain {
		// The service keeps whole seconds: round up, never shorten the retention.
		until := opts.RetainUntil.UTC()
		if s := until.Truncate(time.Second); !s.Equal(until) {
			until = s.Add(time.Second)
		}
		mode := blob.ImmutabilityPolicySettingLocked
		if t.cfg.UnlockedRetention {
			mode = blob.ImmutabilityPolicySettingUnlocked
		}
		l.mode, l.until = &mode, &until
	}
	return l, nil
}

// putSmall verifies the whole object in memory, then stores it with one create-only Put Blob.
func (t *Target) putSmall(ctx context.Context, bb *blockblob.Client, r io.ReadSeeker, size int64, c commit) error {
	var buf bytes.Buffer
	buf.Grow(int(size))
	if err := target.CopyVerified(ctx, &buf, r, size, c.sum); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // cancelled after the last read: publish nothing
		return err
	}
	sum := md5.Sum(buf.Bytes())
	body := newBlockBody(buf.Bytes())
	defer body.Close()
	_, err := bb.Upload(ctx, body, &blockblob.UploadOptions{
		TransactionalValidation:      blob.TransferValidationTypeMD5(sum[:]),
		Metadata:                     c.meta,
		AccessConditions:             createOnly(),
		LegalHold:                    c.lock.legalHold,
		ImmutabilityPolicyMode:       c.lock.mode,
		ImmutabilityPolicyExpiryTime: c.lock.until,
	})
	return t.commitError(ctx, bb, err, c.lock)
}

// putBlocks stages r in blocks while CopyVerified checks its size and SHA-256, and commits
// the block list only if both matched.
func (t *Target) putBlocks(ctx context.Context, bb *blockblob.Client, r io.ReadSeeker, size int64, c commit) error {
	bs := t.cfg.BlockSize
	if (size+bs-1)/bs > maxBlocks {
		bs = (size + maxBlocks - 1) / maxBlocks
	}
	if bs > maxBlockSize {
		return fmt.Errorf("%d bytes is more than a block blob holds: %w", size, target.ErrPermanent)
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &stager{ctx: sctx, cancel: cancel, bb: bb, blockSize: int(bs), maxBufs: t.cfg.Concurrency,
		free: make(chan []byte, t.cfg.Concurrency)}
	err := target.CopyVerified(ctx, s, r, size, c.sum)
	if errors.Is(err, errStaging) {
		err = context.Cause(sctx)
	}
	if err == nil && len(s.cur) > 0 {
		s.flush()
	}
	if err != nil {
		cancel(err)
	}
	s.wg.Wait()
	if err != nil {
		return err
	}
	if err := context.Cause(sctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err = bb.CommitBlockList(ctx, s.ids, &blockblob.CommitBlockListOptions{
		Metadata:                     c.meta,
		AccessConditions:             createOnly(),
		LegalHold:                    c.lock.legalHold,
		ImmutabilityPolicyMode:       c.lock.mode,
		ImmutabilityPolicyExpiryTime: c.lock.until,
	})
	return t.commitError(ctx, bb, err, c.lock)
}

func createOnly() *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: etagAny}}
}

// commitError classifies the error of the request that would have made an object visible.
func (t *Target) commitError(ctx context.Context, bb *blockblob.Client, err error, lk lock) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return classify(ctx, err)
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet):
		return classifyAs(err, target.ErrExists)
	case lk.set() && bloberror.HasCode(err, codeNotImplemented):
		return &unsupportedError{reason: "the service answered " + string(codeNotImplemented), err: err}
	case bloberror.HasCode(err, bloberror.InvalidBlockList):
		// A concurrent Put of the name committed first, which discards every other
		// uncommitted block, ours included.
		if _, perr := bb.GetProperties(ctx, nil); perr == nil {
			return classifyAs(err, target.ErrExists)
		}
		return classifyAs(err, nil) // blocks gone for another reason: staging again may work
	}
	return classify(ctx, err)
}

// stager is the io.Writer CopyVerified fills: it cuts the stream into blocks and stages each
// in its own goroutine. It holds at most maxBufs buffers: Write waits for a free one, which
// bounds the memory of a Put. The first staging error cancels ctx with that error as cause,
// stops the other uploads and fails the next Write.
type stager struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	bb        *blockblob.Client
	blockSize int
	maxBufs   int

	free  chan []byte // buffers of finished blocks
	nbufs int         // buffers allocated so far
	cur   []byte      // block being filled
	ids   []string    // block ids in order, for the commit
	wg    sync.WaitGroup
}

// errStaging is what Write returns once staging failed; putBlocks replaces it with the cause.
// Write must not return the cause itself: a network error may wrap io.EOF, which CopyVerified
// would take for a short reader.
var errStaging = errors.New("staging failed")

func (s *stager) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if s.cur == nil {
			buf, err := s.buffer()
			if err != nil {
				return written, err
			}
			s.cur = buf[:0]
		}
		n := copy(s.cur[len(s.cur):cap(s.cur)], p)
		s.cur = s.cur[:len(s.cur)+n]
		p = p[n:]
		written += n
		if len(s.cur) == cap(s.cur) {
			s.flush()
		}
	}
	return written, nil
}

func (s *stager) buffer() ([]byte, error) {
	if s.ctx.Err() != nil {
		return nil, errStaging
	}
	select {
	case b := <-s.free:
		return b, nil
	default:
	}
	if s.nbufs < s.maxBufs {
		s.nbufs++
		return make([]byte, s.blockSize), nil
	}
	select {
	case b := <-s.free:
		return b, nil
	case <-s.ctx.Done():
		return nil, errStaging
	}
}

// flush stages the current block in the background.
func (s *stager) flush() {
	block := s.cur
	s.cur = nil
	sum := md5.Sum(block)
	i := len(s.ids)
	id := blockID(i, sum)
	s.ids = append(s.ids, id)
	s.wg.Go(func() {
		body := newBlockBody(block)
		_, err := s.bb.StageBlock(s.ctx, id, body, &blockblob.StageBlockOptions{
			TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		})
		body.Close() // from here on nothing reads block, so it may be reused
		s.free <- block[:cap(block)]
		if err != nil {
			s.cancel(fmt.Errorf("stage block %d: %w", i, classify(s.ctx, err)))
		}
	})
}

// blockID names block i by its position and MD5. Ids are deterministic, all of one length (as
// the service requires), and two Puts staging different bytes under one name never share an
// id, so neither can commit the other's block.
func blockID(i int, sum [md5.Size]byte) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%06d-%x", i, sum))
}

// blockBody is the request body of one block. Once closed it fails every read, so the buffer
// behind it can be reused as soon as the request returned, even if the HTTP transport still
// holds the body (it may, after an early response).
type blockBody struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed bool
}

var errBodyClosed = errors.New("request body read after the request ended")

func newBlockBody(b []byte) *blockBody { return &blockBody{r: bytes.NewReader(b)} }

func (b *blockBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	return b.r.Read(p)
}

func (b *blockBody) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	return b.r.Seek(offset, whence)
}

func (b *blockBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
