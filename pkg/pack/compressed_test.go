package pack_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
)

func zstdOf(t *testing.T, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// A record its producer compressed reads back like any other item, through the in-memory and
// the streaming reader, with its true size in the meta; and sealing is deterministic.
func TestSealCompressedRoundTrip(t *testing.T) {
	c := newCodec(t)
	for _, size := range []int{0, 1, 1500, crypto.SegmentSize + 3, 200 << 10} {
		data := []byte(strings.Repeat(`{"order":42,"total":"19.99"},`, size/29+1))[:size]
		if size == crypto.SegmentSize+3 {
			data = random(7, size) // incompressible, several segments
		}
		z := zstdOf(t, data)
		sealed, err := c.SealCompressed(testDEK, testPseudo, testClass, testItemID, testMeta(), z, 256<<10)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		meta, got, err := c.OpenItem(testDEK, testPseudo, testClass, testItemID, sealed)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: OpenItem: %v (equal %v)", size, err, bytes.Equal(got, data))
		}
		checkMeta(t, meta, testMeta(), size)
		meta, got, err = openStream(bytes.NewReader(sealed), testDEK, testPseudo, testClass, testItemID)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: OpenItemStream: %v", size, err)
		}
		checkMeta(t, meta, testMeta(), size)
		again, err := c.SealCompressed(testDEK, testPseudo, testClass, testItemID, testMeta(), z, 256<<10)
		if err != nil || !bytes.Equal(again, sealed) {
			t.Fatalf("size %d: sealing twice gave other bytes (%v)", size, err)
		}
	}
}

// Anything but zstd data within the limit is refused with ErrBadCompressed, before any
// encryption: garbage, a skippable frame, a truncated frame, and a frame that decompresses past
// the limit (a small frame of many zeros).
func TestSealCompressedRefuses(t *testing.T) {
	c := newCodec(t)
	good := zstdOf(t, []byte(strings.Repeat("abc", 1000)))
	skippable := append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, good...)
	bomb := zstdOf(t, make([]byte, 8<<20))
	cases := map[string]struct {
		data []byte
		max  int64
	}{
		"garbage":       {[]byte("not zstd at all"), 1 << 20},
		"empty":         {nil, 1 << 20},
		"skippable":     {skippable, 1 << 20},
		"truncated":     {good[:len(good)-5], 1 << 20},
		"over limit":    {good, 2999},
		"bomb":          {bomb, 256 << 10},
		"bomb over cap": {zstdOf(t, make([]byte, pack.MaxCompressedRecord+1)), 1 << 40},
	}
	for name, tc := range cases {
		if len(tc.data) > 1<<20 {
			t.Fatalf("%s: the test frame should be small (%d bytes)", name, len(tc.data))
		}
		_, err := c.SealCompressed(testDEK, testPseudo, testClass, testItemID, testMeta(), tc.data, tc.max)
		if !errors.Is(err, pack.ErrBadCompressed) {
			t.Errorf("%s: got %v, want ErrBadCompressed", name, err)
		}
	}
	if _, err := c.SealCompressed(testDEK, testPseudo, testClass, testItemID, testMeta(), good, 3000); err != nil {
		t.Fatalf("a frame of exactly the limit: %v", err)
	}
}
