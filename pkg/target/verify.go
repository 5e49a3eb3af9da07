package target

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// CopyVerified is the write-side check shared by implementations that stage data before
// publishing it: it rewinds r, copies exactly size bytes to w while hashing them, and checks
// that r has nothing more and that the SHA-256 equals sum.
//
// It returns an error matching ErrChecksumMismatch when r yields other bytes, fewer or more
// than size; the reader's or writer's error (not permanent: a retry may succeed); or the
// context's error when ctx ends during the copy.
func CopyVerified(ctx context.Context, w io.Writer, r io.ReadSeeker, size int64, sum [32]byte) error {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	h := sha256.New()
	n, err := io.CopyN(io.MultiWriter(w, h), ctxReader{ctx, r}, size)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: read %d bytes, want %d", ErrChecksumMismatch, n, size)
	case err != nil:
		return err
	}
	var one [1]byte
	if m, err := io.ReadFull(ctxReader{ctx, r}, one[:]); m > 0 {
		return fmt.Errorf("%w: reader holds more than %d bytes", ErrChecksumMismatch, size)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if got := [32]byte(h.Sum(nil)); got != sum {
		return fmt.Errorf("%w: got sha256 %x, want %x", ErrChecksumMismatch, got, sum)
	}
	return nil
}

// ctxReader fails reads once ctx is done, so a long copy honours cancellation.
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
