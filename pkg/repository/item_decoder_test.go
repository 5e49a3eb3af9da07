package repository_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
)

// ItemDecoder opens what pack.Codec seals, item after item with one decoder, and refuses what
// pack.OpenItemStream refuses.
func TestItemDecoder(t *testing.T) {
	t.Parallel()
	codec, err := pack.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	dek := bytes.Repeat([]byte{7}, 32)
	dec, err := repository.NewItemDecoder(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	zenc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zenc.Close()
	meta := pack.ItemMeta{Tenant: "shop", CustomerID: "c1", RecordKey: "k", EventID: "e", EventTime: time.Unix(1, 0).UTC()}
	for _, n := range []int{0, 1, 100, crypto.SegmentSize, 3*crypto.SegmentSize + 7} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		sealed, err := codec.SealItem(dek, "p1", "critical", "item", meta, data)
		if err != nil {
			t.Fatal(err)
		}
		m, got, err := dec.Open(sealed, dek, "p1", "critical", "item")
		if err != nil || !bytes.Equal(got, data) || m.RecordKey != "k" || m.Size != int64(n) {
			t.Fatalf("%d bytes: %+v, %d bytes, %v", n, m, len(got), err)
		}
		// The same record as a producer compressed it: two zstd frames, read alike.
		sealed2, err := codec.SealCompressed(dek, "p1", "critical", "item", meta, zenc.EncodeAll(data, nil), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		m, got, err = dec.Open(sealed2, dek, "p1", "critical", "item")
		if err != nil || !bytes.Equal(got, data) || m.Size != int64(n) {
			t.Fatalf("%d bytes, compressed by the producer: %+v, %d bytes, %v", n, m, len(got), err)
		}
		// Another item id (the key is bound to it) and a flipped byte fail authentication.
		if _, _, err := dec.Open(sealed, dek, "p1", "critical", "other"); !errors.Is(err, crypto.ErrAuth) {
			t.Errorf("%d bytes, other id: %v", n, err)
		}
		bad := bytes.Clone(sealed)
		bad[len(bad)/2] ^= 1
		if _, _, err := dec.Open(bad, dek, "p1", "critical", "item"); !errors.Is(err, crypto.ErrAuth) {
			t.Errorf("%d bytes, flipped: %v", n, err)
		}
	}
	// A record over the limit (compressed well under it) is left to a stream.
	sealed, err := codec.SealItem(dek, "p1", "critical", "item", meta, make([]byte, 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dec.Open(sealed, dek, "p1", "critical", "item"); !errors.Is(err, repository.ErrItemTooLarge) {
		t.Errorf("2 MiB of zeros: %v, want ErrItemTooLarge", err)
	}
}
