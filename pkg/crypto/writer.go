package crypto

import (
	"errors"
	"io"
	"sync"
)

// bufPool recycles writer buffers so that many small items do not each allocate a segment.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, HeaderSize+sealedSegment)
	return &b
}}

// writer buffers at most one segment of plaintext and seals it in place. Its buffer holds
// the header in front of the segment, so the first segment and the header go out in one Write.
type writer struct {
	w    io.Writer
	s    *segmenter
	bufp *[]byte
	buf  []byte // header ‖ segment area of HeaderSize+sealedSegment bytes
	n    int    // plaintext bytes buffered in the segment area
	i    uint64 // index of the next segment
	err  error  // sticky; ErrClosed after Close
}

// NewWriter returns a writer that encrypts everything written to it into w. Close must be
// called to write the final segment; it does not close w. Memory is one segment buffer,
// whatever the plaintext size. Nothing is written to w before the first full segment or Close.
func NewWriter(w io.Writer, dek, aad []byte, n Nonce) (io.WriteCloser, error) {
	s, err := newSegmenter(dek, aad, n.header())
	if err != nil {
		return nil, err
	}
	bufp := bufPool.Get().(*[]byte)
	buf := *bufp
	copy(buf, s.header[:])
	return &writer{w: w, s: s, bufp: bufp, buf: buf}, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	seg := w.buf[HeaderSize:]
	written := 0
	for len(p) > 0 {
		if w.n == 0 && len(p) >= SegmentSize {
			// Seal straight from p into the buffer: saves copying a full segment first.
			if err := w.seal(p[:SegmentSize], false); err != nil {
				return written, err
			}
			p, written = p[SegmentSize:], written+SegmentSize
			continue
		}
		k := copy(seg[w.n:SegmentSize], p)
		w.n += k
		p, written = p[k:], written+k
		if w.n == SegmentSize { // full, so never the final segment
			if err := w.seal(seg[:SegmentSize], false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// Close seals and writes the final segment (possibly empty). It is safe to call twice.
func (w *writer) Close() error {
	if errors.Is(w.err, ErrClosed) {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	err := w.seal(w.buf[HeaderSize:HeaderSize+w.n], true)
	if err == nil {
		w.err = ErrClosed
	}
	// The buffer now holds only header and ciphertext, or is abandoned on error: safe to reuse.
	bufPool.Put(w.bufp)
	w.buf, w.bufp = nil, nil
	return err
}

// seal encrypts pt (the buffered segment in place, or a full segment of the caller's slice)
// into the segment area and writes it, with the header before the first segment.
func (w *writer) seal(pt []byte, last bool) error {
	if !last && w.i == maxSegments-1 { // the final segment needs an index of its own
		w.err = ErrTooLarge
		return w.err
	}
	ct := w.s.aead.Seal(w.buf[HeaderSize:HeaderSize], w.s.nonceFor(w.i, last), pt, w.s.header[:])
	start := HeaderSize
	if w.i == 0 {
		start = 0
	}
	w.i++
	w.n = 0
	if _, err := w.w.Write(w.buf[start : HeaderSize+len(ct)]); err != nil {
		w.err = err
		return err
	}
	return nil
}
