// Package pack holds the stored formats of Custos: items (one customer record, compressed and
// encrypted under its customer's data key), packs (items of one data class written together) and
// manifests (what a pack holds). docs/design.md section 4 and 5 specify the bytes.
package pack

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
)

// Named errors, matched with errors.Is.
var (
	// ErrCorrupt means stored bytes decrypted but do not hold a well-formed item or manifest.
	ErrCorrupt = errors.New("pack: corrupt item")
	// ErrTooLarge means an item expands beyond the limit given to the reader.
	ErrTooLarge = errors.New("pack: item larger than allowed")
)

// maxMeta bounds the metadata header of an item so a corrupt length cannot allocate much.
const maxMeta = 64 << 10

// ItemMeta travels inside the encryption, before the record bytes.
type ItemMeta struct {
	V           int       `json:"v"`
	Tenant      string    `json:"tenant"`
	CustomerID  string    `json:"customer_id"`
	RecordKey   string    `json:"record_key"`
	EventID     string    `json:"event_id"`
	EventTime   time.Time `json:"event_time"`
	ContentType string    `json:"content_type,omitempty"`
	Size        int64     `json:"size"`
}

// ItemAAD is the associated data that binds an item to its customer, class and id.
func ItemAAD(pseudonym, class, itemID string) []byte {
	return crypto.AAD("custos-item", pseudonym, class, itemID)
}

// Codec compresses and decompresses items. It is safe for concurrent use.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
	// small checks records a producer compressed; its memory limit bounds what a hostile frame
	// can make it allocate (MaxCompressedRecord).
	small *zstd.Decoder
}

// MaxCompressedRecord bounds the decompressed size of a record that arrives compressed (an
// event's inline_zstd); SealCompressed refuses a larger one whatever its caller's limit.
const MaxCompressedRecord = 16 << 20

// NewCodec returns a codec. The encoder settings are part of what makes re-encryption of the
// same item byte-identical, so they are fixed here rather than configurable.
func NewCodec() (*Codec, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd decoder: %w", err)
	}
	small, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(MaxCompressedRecord))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd decoder: %w", err)
	}
	return &Codec{enc: enc, dec: dec, small: small}, nil
}

// Close releases the codec's goroutines.
func (c *Codec) Close() {
	c.enc.Close()
	c.dec.Close()
	c.small.Close()
}

func plaintextHeader(meta ItemMeta) ([]byte, error) {
	meta.V = 1
	mb, err := marshalItemMeta(&meta)
	if err != nil {
		return nil, fmt.Errorf("pack: encode item meta: %w", err)
	}
	out := make([]byte, 4, 4+len(mb))
	binary.BigEndian.PutUint32(out, uint32(len(mb)))
	return append(out, mb...), nil
}

// ErrBadCompressed means a record that arrived compressed (an event's inline_zstd) is not zstd
// compressed data this package stores: it does not decompress, uses a dictionary, or is larger
// than the limit once decompressed.
var ErrBadCompressed = errors.New("pack: compressed record is not valid zstd data within the limit")

// zstdMagic starts every zstd frame that is not a skippable frame (RFC 8878 section 3.1.1).
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// SealCompressed is SealItem for a record its producer already compressed: data is zstd
// compressed data (RFC 8878, no dictionary) whose content is the record, at most max bytes
// (and at most MaxCompressedRecord). The item's compressed bytes are a zstd frame of the
// plaintext header (u32 length and meta) followed by data unchanged, so the record is not
// compressed a second time (design.md section 4, step 2). data is decompressed once here, to
// check it and to learn the size the meta records. Like SealItem it is deterministic.
func (c *Codec) SealCompressed(dek []byte, pseudonym, class, itemID string, meta ItemMeta, data []byte, max int64) ([]byte, error) {
	if !bytes.HasPrefix(data, zstdMagic) {
		return nil, fmt.Errorf("%w: it does not start with a zstd frame", ErrBadCompressed)
	}
	if h := (zstd.Header{}); h.Decode(data) != nil || h.DictionaryID != 0 {
		return nil, fmt.Errorf("%w: bad frame header or a dictionary", ErrBadCompressed)
	}
	db := getBuf(min(int(max), MaxCompressedRecord))
	defer putBuf(db)
	plain, err := c.small.DecodeAll(data, (*db)[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCompressed, err)
	}
	*db = plain
	if n := int64(len(plain)); n > max {
		return nil, fmt.Errorf("%w: %d bytes decompressed, limit %d", ErrBadCompressed, n, max)
	}
	meta.Size = int64(len(plain))
	hdr, err := plaintextHeader(meta)
	if err != nil {
		return nil, err
	}
	cb := getBuf(len(hdr) + 32 + len(data))
	defer putBuf(cb)
	compressed := append(c.enc.EncodeAll(hdr, (*cb)[:0]), data...)
	*cb = compressed
	nonce := crypto.DeriveNonce(dek, itemID, sha256.Sum256(compressed))
	return crypto.Seal(dek, ItemAAD(pseudonym, class, itemID), nonce, compressed)
}

// SealItem compresses and encrypts one record held in memory. The nonce is derived from the
// compressed bytes, so sealing the same item twice gives the same ciphertext (design.md 4.4).
func (c *Codec) SealItem(dek []byte, pseudonym, class, itemID string, meta ItemMeta, data []byte) ([]byte, error) {
	meta.Size = int64(len(data))
	meta.V = 1
	mb, err := marshalItemMeta(&meta)
	if err != nil {
		return nil, fmt.Errorf("pack: encode item meta: %w", err)
	}
	// The plaintext and compressed bytes live only until Seal has copied them into the
	// ciphertext, so their buffers are pooled: per record, only the ciphertext is allocated.
	pb := getBuf(4 + len(mb) + len(data))
	defer putBuf(pb)
	plain := binary.BigEndian.AppendUint32((*pb)[:0], uint32(len(mb)))
	plain = append(append(plain, mb...), data...)
	*pb = plain
	cb := getBuf(len(plain)/2 + 64)
	defer putBuf(cb)
	compressed := c.enc.EncodeAll(plain, (*cb)[:0])
	*cb = compressed
	nonce := crypto.DeriveNonce(dek, itemID, sha256.Sum256(compressed))
	return crypto.Seal(dek, ItemAAD(pseudonym, class, itemID), nonce, compressed)
}

// bufPool holds scratch buffers of SealItem. Buffers over maxPooled are not kept, so one large
// record does not pin its memory.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooled = 1 << 20

func getBuf(n int) *[]byte {
	b := bufPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	return b
}

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooled {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// OpenItem authenticates, decrypts and decompresses an item held in memory.
func (c *Codec) OpenItem(dek []byte, pseudonym, class, itemID string, ciphertext []byte) (ItemMeta, []byte, error) {
	compressed, err := crypto.Open(dek, ItemAAD(pseudonym, class, itemID), ciphertext)
	if err != nil {
		return ItemMeta{}, nil, err
	}
	plain, err := c.dec.DecodeAll(compressed, nil)
	if err != nil {
		return ItemMeta{}, nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
	}
	return splitPlain(plain)
}

func splitPlain(plain []byte) (ItemMeta, []byte, error) {
	if len(plain) < 4 {
		return ItemMeta{}, nil, fmt.Errorf("%w: short header", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(plain)
	if n > maxMeta || int(n) > len(plain)-4 {
		return ItemMeta{}, nil, fmt.Errorf("%w: bad meta length", ErrCorrupt)
	}
	var meta ItemMeta
	if err := json.Unmarshal(plain[4:4+n], &meta); err != nil || meta.V != 1 {
		return ItemMeta{}, nil, fmt.Errorf("%w: bad meta", ErrCorrupt)
	}
	data := plain[4+n:]
	if int64(len(data)) != meta.Size {
		return ItemMeta{}, nil, fmt.Errorf("%w: size %d, meta says %d", ErrCorrupt, len(data), meta.Size)
	}
	return meta, data, nil
}

// StreamItem compresses and encrypts a record read from r into w with memory that does not grow
// with the record's size. meta.Size must be the exact size of r's content. The nonce is random:
// streaming cannot know the compressed digest in advance (design.md section 6). The record is
// compressed in pieces of streamPiece bytes, each its own zstd frame, on every core at once
// (compressPieces); the frames follow one another in the record's order.
func StreamItem(w io.Writer, dek []byte, pseudonym, class, itemID string, meta ItemMeta, r io.Reader) error {
	hdr, err := plaintextHeader(meta)
	if err != nil {
		return err
	}
	nonce, err := crypto.RandomNonce()
	if err != nil {
		return err
	}
	ew, err := crypto.NewWriter(w, dek, ItemAAD(pseudonym, class, itemID), nonce)
	if err != nil {
		return err
	}
	enc := streamEncoder()
	if _, err := ew.Write(enc.EncodeAll(hdr, nil)); err != nil {
		return err
	}
	n, err := compressPieces(ew, enc, r, meta.Size)
	if err != nil {
		return err
	}
	if n != meta.Size {
		return fmt.Errorf("pack: record is %d bytes, reference says %d", n, meta.Size)
	}
	return ew.Close()
}

// streamPiece is the size of the pieces a streamed record is compressed in. Each is a frame of
// its own, so pieces compress on several cores at once; matches do not cross pieces, which
// costs little at the fastest level. Small pieces keep the memory of a streamed record small:
// the pieces in flight are most of it.
const streamPiece = 512 << 10

// streamEncoder compresses the pieces of streamed records: EncodeAll runs on up to
// streamConcurrency pieces at once, for every record of the process.
var streamEncoder = sync.OnceValue(func() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(streamConcurrency()),
		zstd.WithWindowSize(streamPiece), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic("pack: zstd encoder: " + err.Error()) // only for invalid options
	}
	return enc
})

// piece is one piece of a streamed record on its way through compressPieces.
type piece struct {
	in   *[]byte
	out  *[]byte
	done chan struct{}
}

// compressPieces reads r to its end (or to one byte past size, which is then an error for the
// caller) in pieces of streamPiece bytes, compresses them concurrently with enc and writes the
// frames to w in order. At most streamConcurrency()+2 pieces are held at once (one being read,
// the others compressing or waiting to be written). It returns the bytes read from r.
func compressPieces(w io.Writer, enc *zstd.Encoder, r io.Reader, size int64) (int64, error) {
	workers := streamConcurrency()
	// At most workers+1 pieces are between reader and writer (order's buffer and the one the
	// writer waits for), so jobs, which holds only some of them, never blocks the reader.
	order := make(chan *piece, workers) // pieces in record order, as read
	jobs := make(chan *piece, workers+1)
	stop := make(chan struct{})
	var readErr error
	var n int64
	go func() { // reader: the only one touching r, n and readErr until order is closed
		defer close(order)
		defer close(jobs)
		for n <= size {
			in := getBuf(streamPiece)
			k, err := io.ReadFull(r, (*in)[:streamPiece])
			n += int64(k)
			if k == 0 {
				putBuf(in)
			} else {
				*in = (*in)[:k]
				p := &piece{in: in, done: make(chan struct{})}
				select {
				case order <- p:
					jobs <- p
				case <-stop:
					putBuf(in)
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				readErr = fmt.Errorf("pack: read record: %w", err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				out := getBuf(len(*p.in)/2 + 64)
				*out = enc.EncodeAll(*p.in, (*out)[:0])
				putBuf(p.in)
				p.out = out
				close(p.done)
			}
		}()
	}
	var writeErr error
	for p := range order {
		<-p.done
		if writeErr == nil {
			if _, err := w.Write(*p.out); err != nil {
				writeErr = err
				close(stop)
			}
		}
		putBuf(p.out)
	}
	wg.Wait()
	if writeErr != nil {
		return n, writeErr
	}
	return n, readErr
}

// ItemReader streams one stored item: Meta is filled before the first Read of the record bytes.
type ItemReader struct {
	Meta ItemMeta
	zr   *zstd.Decoder
	src  *sourceReader
	left int64
}

// sourceReader remembers the error of the reader an item is read from, so that a failed read
// (a dropped connection) is reported as itself and not as a corrupt item.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// OpenItemStream authenticates and decrypts an item read from r as a stream. Read returns
// crypto.ErrAuth as soon as a segment fails authentication; a caller must not trust bytes it
// read before an error.
func OpenItemStream(r io.Reader, dek []byte, pseudonym, class, itemID string) (*ItemReader, error) {
	src := &sourceReader{r: r}
	dr, err := crypto.NewReader(src, dek, ItemAAD(pseudonym, class, itemID))
	if err != nil {
		return nil, err
	}
	zr, err := zstd.NewReader(dr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd reader: %w", err)
	}
	var lb [4]byte
	if _, err := io.ReadFull(zr, lb[:]); err != nil {
		zr.Close()
		return nil, streamErr(src, err)
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n > maxMeta {
		zr.Close()
		return nil, fmt.Errorf("%w: bad meta length", ErrCorrupt)
	}
	mb := make([]byte, n)
	if _, err := io.ReadFull(zr, mb); err != nil {
		zr.Close()
		return nil, streamErr(src, err)
	}
	it := &ItemReader{zr: zr, src: src}
	if err := json.Unmarshal(mb, &it.Meta); err != nil || it.Meta.V != 1 || it.Meta.Size < 0 {
		zr.Close()
		return nil, fmt.Errorf("%w: bad meta", ErrCorrupt)
	}
	it.left = it.Meta.Size
	return it, nil
}

func streamErr(src *sourceReader, err error) error {
	if src.err != nil {
		return fmt.Errorf("pack: read item: %w", src.err)
	}
	if errors.Is(err, crypto.ErrAuth) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// Read reads record bytes. At the end it checks that the stream ends exactly at meta.Size and
// that the final segment authenticated.
func (it *ItemReader) Read(p []byte) (int, error) {
	if it.left == 0 {
		// Drain to EOF so the final segment's tag is checked.
		var one [1]byte
		n, err := io.ReadFull(it.zr, one[:])
		if n > 0 {
			return 0, fmt.Errorf("%w: longer than meta size", ErrCorrupt)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, io.EOF
		}
		return 0, streamErr(it.src, err)
	}
	if int64(len(p)) > it.left {
		p = p[:it.left]
	}
	n, err := it.zr.Read(p)
	it.left -= int64(n)
	if err == io.EOF {
		if it.left > 0 {
			return n, fmt.Errorf("%w: shorter than meta size", ErrCorrupt)
		}
		err = nil
	} else if err != nil {
		err = streamErr(it.src, err)
	}
	return n, err
}

// Close releases the decoder.
func (it *ItemReader) Close() error {
	it.zr.Close()
	return nil
}

// ReadAllLimited reads an item stream to the end, refusing more than max bytes.
func ReadAllLimited(it *ItemReader, max int64) ([]byte, error) {
	if it.Meta.Size > max {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, it.Meta.Size)
	}
	var buf bytes.Buffer
	buf.Grow(int(it.Meta.Size))
	if _, err := io.Copy(&buf, it); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// streamConcurrency is how many pieces of streamed records are compressed at once: one per
// core (at most 4), so that a single large item is not limited to one core's zstd speed. Each
// concurrent encoder holds about a piece (512 KiB) of memory besides the piece itself.
func streamConcurrency() int { return min(runtime.GOMAXPROCS(0), 4) }
