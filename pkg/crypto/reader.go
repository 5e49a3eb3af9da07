package crypto

import (
	"errors"
	"fmt"
	"io"
)

// reader decrypts one segment at a time in place in its buffer.
type reader struct {
	r   io.Reader
	s   *segmenter
	buf []byte // one sealed segment
	out []byte // decrypted, not yet returned plaintext (aliases buf)
	i   uint64 // index of the next segment
	err error  // sticky; io.EOF after the final segment
}

// NewReader reads the header from r and returns a reader of the authenticated plaintext.
// Each segment is authenticated before its bytes are returned, but the item is complete and
// unmodified only when Read returns io.EOF; any tampering is ErrAuth.
func NewReader(r io.Reader, dek, aad []byte) (io.Reader, error) {
	if len(dek) != KeySize {
		return nil, ErrKeySize
	}
	var h [HeaderSize]byte
	n, err := io.ReadFull(r, h[:])
	switch {
	case n > 0 && h[0] != Version:
		return nil, ErrUnsupportedVersion
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, ErrAuth
	case err != nil:
		return nil, fmt.Errorf("crypto: read header: %w", err)
	}
	s, err := newSegmenter(dek, aad, h)
	if err != nil {
		return nil, err
	}
	return &reader{r: r, s: s, buf: make([]byte, sealedSegment)}, nil
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// next decrypts the next segment into r.out. It returns io.EOF after the final segment.
func (r *reader) next() error {
	n, err := io.ReadFull(r.r, r.buf)
	var last bool
	switch {
	case err == nil:
		// A full segment is never the final one. Bytes appended after the real final segment
		// shift the boundaries, so they fail authentication here or in the next segment.
	case errors.Is(err, io.ErrUnexpectedEOF):
		last = true
	case errors.Is(err, io.EOF):
		return ErrAuth // truncated: the final segment is missing
	default:
		return fmt.Errorf("crypto: read segment: %w", err)
	}
	if !last && r.i == maxSegments-1 {
		return ErrAuth
	}
	pt, err := r.s.aead.Open(r.buf[:0], r.s.nonceFor(r.i, last), r.buf[:n], r.s.header[:])
	if err != nil {
		return ErrAuth
	}
	r.i++
	r.out = pt
	if last {
		return io.EOF
	}
	return nil
}
