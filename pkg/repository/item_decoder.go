package repository

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
)

// ErrItemTooLarge means an item's record is larger than an ItemDecoder holds in memory: read
// it as a stream instead (pack.OpenItemStream).
var ErrItemTooLarge = errors.New("repository: record too large to decode in memory")

// maxItemMeta bounds the meta header of an item (design.md section 4).
const maxItemMeta = 64 << 10

// ItemDecoder opens items held in memory (design.md section 4) with the checks of
// pack.OpenItemStream, reusing its zstd decoder and buffers from one item to the next: restoring
// many small items, the allocations of a new stream each would cost more than the decryption.
// It is not safe for concurrent use: one per goroutine.
type ItemDecoder struct {
	max  int64
	zr   *zstd.Decoder
	data []byte
}

// NewItemDecoder returns a decoder that opens records of at most max bytes in memory.
func NewItemDecoder(max int64) (*ItemDecoder, error) {
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("repository: zstd reader: %w", err)
	}
	return &ItemDecoder{max: max, zr: zr}, nil
}

// Close releases the decoder.
func (d *ItemDecoder) Close() { d.zr.Close() }

// Open authenticates and decrypts sealed, the stored bytes of one item, and returns its meta
// and record bytes; data is valid until the next Open. Every segment is authenticated before
// any byte is decompressed. A record larger than the decoder's limit returns ErrItemTooLarge
// (after authentication).
func (d *ItemDecoder) Open(sealed, dek []byte, pseudonym, class, itemID string) (pack.ItemMeta, []byte, error) {
	compressed, err := crypto.Open(dek, pack.ItemAAD(pseudonym, class, itemID), sealed)
	if err != nil {
		return pack.ItemMeta{}, nil, err
	}
	if err := d.zr.Reset(bytes.NewReader(compressed)); err != nil {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: %v", pack.ErrCorrupt, err)
	}
	defer d.zr.Reset(nil) //nolint:errcheck // releases the compressed bytes
	var lb [4]byte
	if _, err := io.ReadFull(d.zr, lb[:]); err != nil {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: %v", pack.ErrCorrupt, err)
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n > maxItemMeta {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: bad meta length", pack.ErrCorrupt)
	}
	mb := make([]byte, n)
	if _, err := io.ReadFull(d.zr, mb); err != nil {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: %v", pack.ErrCorrupt, err)
	}
	var meta pack.ItemMeta
	if err := json.Unmarshal(mb, &meta); err != nil || meta.V != 1 || meta.Size < 0 {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: bad meta", pack.ErrCorrupt)
	}
	if meta.Size > d.max {
		return meta, nil, ErrItemTooLarge
	}
	if int64(cap(d.data)) < meta.Size {
		d.data = make([]byte, meta.Size)
	}
	data := d.data[:meta.Size]
	if _, err := io.ReadFull(d.zr, data); err != nil {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: shorter than meta size", pack.ErrCorrupt)
	}
	var one [1]byte
	if k, err := d.zr.Read(one[:]); k > 0 || (err != nil && err != io.EOF) {
		return pack.ItemMeta{}, nil, fmt.Errorf("%w: longer than meta size", pack.ErrCorrupt)
	}
	return meta, data, nil
}
