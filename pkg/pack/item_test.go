package pack_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Fixed keys and names: tests and the committed fuzz corpus depend on them.
var (
	testDEK     = bytes.Repeat([]byte{0x11}, crypto.KeySize)
	otherDEK    = bytes.Repeat([]byte{0x22}, crypto.KeySize)
	testCatalog = bytes.Repeat([]byte{0x33}, crypto.KeySize)
)

const (
	testPseudo = "p00112233445566778899aabbccddeeff"
	testClass  = "critical"
	testItemID = "paabbccddeeff00112233445566778899"
	testPackID = "0123456789abcdef0123456789abcdef"
)

func newCodec(t testing.TB) *pack.Codec {
	t.Helper()
	c, err := pack.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// random returns n incompressible bytes.
func random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testMeta() pack.ItemMeta {
	return pack.ItemMeta{Tenant: "acme", CustomerID: "alice@example.com", RecordKey: "orders/42",
		EventID: "ev-7", EventTime: time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
		ContentType: "application/json"}
}

// compressedLen is the length of the zstd layer inside a sealed item.
func compressedLen(t testing.TB, sealed []byte) int64 {
	t.Helper()
	n, err := crypto.PlaintextSize(int64(len(sealed)))
	if err != nil {
		t.Fatalf("sealed item has an impossible length %d", len(sealed))
	}
	return n
}

// openStream opens an item with OpenItemStream and reads it to the end.
func openStream(r io.Reader, dek []byte, pseudo, class, id string) (pack.ItemMeta, []byte, error) {
	ir, err := pack.OpenItemStream(r, dek, pseudo, class, id)
	if err != nil {
		return pack.ItemMeta{}, nil, err
	}
	defer ir.Close()
	data, err := io.ReadAll(ir)
	return ir.Meta, data, err
}

func checkMeta(t *testing.T, got pack.ItemMeta, want pack.ItemMeta, size int) {
	t.Helper()
	want.V, want.Size = 1, int64(size)
	if !got.EventTime.Equal(want.EventTime) {
		t.Fatalf("event time %v, want %v", got.EventTime, want.EventTime)
	}
	got.EventTime, want.EventTime = time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("meta %+v, want %+v", got, want)
	}
}

// itemSizes are record sizes around the segment size, for compressible and incompressible data.
var itemSizes = []int{0, 1, crypto.SegmentSize - 1, crypto.SegmentSize, crypto.SegmentSize + 1, 3*crypto.SegmentSize + 17}

// Subtests share one codec, which must be safe for concurrent use.
func TestItemRoundTrip(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	for _, size := range itemSizes {
		for kind, gen := range map[string]func(uint64, int) []byte{"random": random, "zeros": func(_ uint64, n int) []byte { return make([]byte, n) }} {
			t.Run(fmt.Sprintf("%s-%d", kind, size), func(t *testing.T) {
				t.Parallel()
				data := gen(uint64(size), size)
				sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), data)
				if err != nil {
					t.Fatal(err)
				}
				compressedLen(t, sealed)

				meta, got, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, sealed)
				if err != nil {
					t.Fatalf("OpenItem: %v", err)
				}
				checkMeta(t, meta, testMeta(), size)
				if !bytes.Equal(got, data) {
					t.Fatal("OpenItem returned other bytes")
				}

				// The stream opener, fed in awkward pieces, agrees.
				meta, got, err = openStream(iotest.HalfReader(bytes.NewReader(sealed)), testDEK, testPseudo, testClass, testItemID)
				if err != nil {
					t.Fatalf("OpenItemStream: %v", err)
				}
				checkMeta(t, meta, testMeta(), size)
				if !bytes.Equal(got, data) {
					t.Fatal("OpenItemStream returned other bytes")
				}

				// A streamed item opens with both openers too.
				var streamed bytes.Buffer
				m := testMeta()
				m.Size = int64(size)
				if err := pack.StreamItem(&streamed, testDEK, testPseudo, testClass, testItemID, m, iotest.OneByteReader(bytes.NewReader(data))); err != nil {
					t.Fatalf("StreamItem: %v", err)
				}
				compressedLen(t, streamed.Bytes())
				if _, got, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, streamed.Bytes()); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("OpenItem of a streamed item: equal=%v err=%v", bytes.Equal(got, data), err)
				}
				if _, got, err := openStream(&streamed, testDEK, testPseudo, testClass, testItemID); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("OpenItemStream of a streamed item: equal=%v err=%v", bytes.Equal(got, data), err)
				}
			})
		}
	}
}

// sealWithCompressedLen finds a record of incompressible bytes whose compressed item is exactly
// c bytes long, so that segment boundaries fall where the test wants them.
func sealWithCompressedLen(t *testing.T, codec *pack.Codec, c int64) ([]byte, []byte) {
	t.Helper()
	src := random(uint64(c), int(c)+64)
	seal := func(n int64) ([]byte, int64) {
		sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), src[:n])
		if err != nil {
			t.Fatal(err)
		}
		return sealed, compressedLen(t, sealed)
	}
	n := c - 200
	for range 3 { // zstd stores random bytes raw: the overhead is nearly constant
		_, got := seal(n)
		n += c - got
	}
	for d := range int64(16) {
		for _, m := range []int64{n + d, n - d - 1} {
			if m < 0 {
				continue
			}
			if sealed, got := seal(m); got == c {
				return src[:m], sealed
			}
		}
	}
	t.Fatalf("no record size gives a compressed item of %d bytes", c)
	return nil, nil
}

// Items whose compressed bytes end just before, on and after a segment boundary.
func TestItemSegmentBoundaries(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	seg := int64(crypto.SegmentSize)
	for _, c := range []int64{seg - 1, seg, seg + 1, 2 * seg} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			t.Parallel()
			data, sealed := sealWithCompressedLen(t, codec, c)
			if want := crypto.CiphertextSize(c); int64(len(sealed)) != want {
				t.Fatalf("sealed %d bytes, design.md 4.3 says %d", len(sealed), want)
			}
			if _, got, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, sealed); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("OpenItem: equal=%v err=%v", bytes.Equal(got, data), err)
			}
			if _, got, err := openStream(bytes.NewReader(sealed), testDEK, testPseudo, testClass, testItemID); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("OpenItemStream: equal=%v err=%v", bytes.Equal(got, data), err)
			}
			// Dropping the final segment whole (it may hold nothing but its tag) is truncation.
			assertAuthFails(t, codec, sealed[:crypto.HeaderSize+(c/seg)*(seg+crypto.TagSize)])
		})
	}
}

// assertAuthFails opens damaged bytes with both openers and wants crypto.ErrAuth, or
// crypto.ErrUnsupportedVersion when the version byte changed.
func assertAuthFails(t *testing.T, codec *pack.Codec, damaged []byte) {
	t.Helper()
	ok := func(err error) bool {
		return errors.Is(err, crypto.ErrAuth) || errors.Is(err, crypto.ErrUnsupportedVersion)
	}
	if _, _, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, damaged); !ok(err) {
		t.Fatalf("OpenItem of %d damaged bytes: %v", len(damaged), err)
	}
	if _, _, err := openStream(bytes.NewReader(damaged), testDEK, testPseudo, testClass, testItemID); !ok(err) {
		t.Fatalf("OpenItemStream of %d damaged bytes: %v", len(damaged), err)
	}
}

func TestItemWrongBinding(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	data := []byte("balance=100")
	sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), data)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                  string
		dek                   []byte
		pseudo, class, itemID string
	}{
		{"wrong key", otherDEK, testPseudo, testClass, testItemID},
		{"wrong customer", testDEK, "p00112233445566778899aabbccddeef0", testClass, testItemID},
		{"wrong class", testDEK, testPseudo, "important", testItemID},
		{"wrong item", testDEK, testPseudo, testClass, "paabbccddeeff00112233445566778890"},
		{"fields shifted", testDEK, testPseudo + testClass, "", testItemID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := codec.OpenItem(tc.dek, tc.pseudo, tc.class, tc.itemID, sealed); !errors.Is(err, crypto.ErrAuth) {
				t.Errorf("OpenItem = %v, want crypto.ErrAuth", err)
			}
			if _, _, err := openStream(bytes.NewReader(sealed), tc.dek, tc.pseudo, tc.class, tc.itemID); !errors.Is(err, crypto.ErrAuth) {
				t.Errorf("OpenItemStream = %v, want crypto.ErrAuth", err)
			}
		})
	}
	short := testDEK[:16]
	if _, _, err := codec.OpenItem(short, testPseudo, testClass, testItemID, sealed); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("OpenItem with a 16-byte key = %v, want crypto.ErrKeySize", err)
	}
	if _, err := codec.SealItem(short, testPseudo, testClass, testItemID, testMeta(), data); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("SealItem with a 16-byte key = %v, want crypto.ErrKeySize", err)
	}
}

// Every bit flip, truncation, extension or reordering of a stored item fails authentication,
// cleanly, in both openers.
func TestItemTampering(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	small, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), []byte("a small record"))
	if err != nil {
		t.Fatal(err)
	}
	// Three segments: flips are tried in every header byte, around each boundary and at random.
	large, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), random(3, 2*crypto.SegmentSize+100))
	if err != nil {
		t.Fatal(err)
	}
	sealedSeg := crypto.SegmentSize + crypto.TagSize
	r := rand.New(rand.NewPCG(5, 5))
	for name, sealed := range map[string][]byte{"small": small, "large": large} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var positions []int
			if len(sealed) < 1000 {
				for i := range sealed {
					positions = append(positions, i)
				}
			} else {
				for i := range crypto.HeaderSize + 4 {
					positions = append(positions, i)
				}
				for b := crypto.HeaderSize + sealedSeg; b < len(sealed); b += sealedSeg {
					for d := -crypto.TagSize - 1; d <= 1; d++ {
						positions = append(positions, b+d)
					}
				}
				for range 64 {
					positions = append(positions, r.IntN(len(sealed)))
				}
				positions = append(positions, len(sealed)-1)
			}
			damaged := bytes.Clone(sealed)
			for _, pos := range positions {
				for bit := range 8 {
					if (pos >= crypto.HeaderSize || len(sealed) > 1000) && bit != pos%8 {
						continue // one bit per byte but in the small item's header keeps -race quick
					}
					damaged[pos] ^= 1 << bit
					assertAuthFails(t, codec, damaged)
					damaged[pos] ^= 1 << bit
				}
			}

			var lengths []int
			if len(sealed) < 1000 {
				for n := range len(sealed) {
					lengths = append(lengths, n)
				}
			} else {
				lengths = []int{0, 1, crypto.HeaderSize - 1, crypto.HeaderSize, crypto.HeaderSize + 1,
					crypto.HeaderSize + crypto.TagSize - 1, crypto.HeaderSize + sealedSeg - 1, crypto.HeaderSize + sealedSeg,
					crypto.HeaderSize + sealedSeg + 1, crypto.HeaderSize + 2*sealedSeg, len(sealed) - crypto.TagSize, len(sealed) - 1}
			}
			for _, n := range lengths {
				assertAuthFails(t, codec, sealed[:n])
			}
			for _, extra := range [][]byte{{0}, make([]byte, crypto.TagSize), sealed[crypto.HeaderSize:]} {
				assertAuthFails(t, codec, append(bytes.Clone(sealed), extra...))
			}
		})
	}
	t.Run("reordered segments", func(t *testing.T) {
		t.Parallel()
		body := large[crypto.HeaderSize:]
		swapped := slicesConcat(large[:crypto.HeaderSize], body[sealedSeg:2*sealedSeg], body[:sealedSeg], body[2*sealedSeg:])
		assertAuthFails(t, codec, swapped)
		dup := slicesConcat(large[:crypto.HeaderSize], body[:sealedSeg], body[:sealedSeg], body[2*sealedSeg:])
		assertAuthFails(t, codec, dup)
	})
	t.Run("swapped items", func(t *testing.T) {
		t.Parallel()
		// Another item of the same customer, same class: its bytes do not open as this item.
		other, err := codec.SealItem(testDEK, testPseudo, testClass, "paabbccddeeff00112233445566778890", testMeta(), []byte("a small record"))
		if err != nil {
			t.Fatal(err)
		}
		assertAuthFails(t, codec, other)
	})
}

func slicesConcat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// A stream that fails to read is reported as such, not as damage: a restore or a repairer
// must be able to tell a dropped connection (errors.Is the reader's error) from rot.
func TestItemStreamReadError(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), random(4, 3*crypto.SegmentSize))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(sealed[:crypto.HeaderSize+crypto.SegmentSize+crypto.TagSize+10]), iotest.ErrReader(boom))
	if _, _, err := openStream(r, testDEK, testPseudo, testClass, testItemID); !errors.Is(err, boom) || errors.Is(err, pack.ErrCorrupt) {
		t.Fatalf("OpenItemStream over a failing reader = %v, want the reader's error and not ErrCorrupt", err)
	}
}

func TestReadAllLimited(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	data := random(6, 1000)
	sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), data)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		max     int64
		wantErr error
	}{{1000, nil}, {1 << 20, nil}, {999, pack.ErrTooLarge}, {0, pack.ErrTooLarge}} {
		ir, err := pack.OpenItemStream(bytes.NewReader(sealed), testDEK, testPseudo, testClass, testItemID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pack.ReadAllLimited(ir, tc.max)
		ir.Close()
		if !errors.Is(err, tc.wantErr) || (err == nil && !bytes.Equal(got, data)) {
			t.Errorf("ReadAllLimited(max %d) = %d bytes, %v; want %v", tc.max, len(got), err, tc.wantErr)
		}
	}
}

func TestStreamItemErrors(t *testing.T) {
	t.Parallel()
	data := []byte("twelve bytes")
	boom := errors.New("disk gone")
	for _, tc := range []struct {
		name string
		size int64
		r    io.Reader
		want error
	}{
		{"reference says more", 13, bytes.NewReader(data), nil},
		{"reference says less", 11, bytes.NewReader(data), nil},
		{"source fails", 12, io.MultiReader(bytes.NewReader(data[:5]), iotest.ErrReader(boom)), boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMeta()
			m.Size = tc.size
			err := pack.StreamItem(io.Discard, testDEK, testPseudo, testClass, testItemID, m, tc.r)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("StreamItem = %v, want an error (%v)", err, tc.want)
			}
		})
	}
	m := testMeta()
	m.Size = 12
	if err := pack.StreamItem(io.Discard, testDEK[:31], testPseudo, testClass, testItemID, m, bytes.NewReader(data)); !errors.Is(err, crypto.ErrKeySize) {
		t.Fatalf("StreamItem with a short key = %v, want crypto.ErrKeySize", err)
	}
}

// Sealing is deterministic (design.md 4.4): the same item gives the same bytes in any codec,
// and any change of key, id or content gives other bytes. Streamed items use random nonces.
func TestSealItemDeterministic(t *testing.T) {
	t.Parallel()
	a, b := newCodec(t), newCodec(t)
	data := random(7, 5000)
	seal := func(c *pack.Codec, dek []byte, id string, data []byte) []byte {
		t.Helper()
		s, err := c.SealItem(dek, testPseudo, testClass, id, testMeta(), data)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := seal(a, testDEK, testItemID, data)
	if !bytes.Equal(first, seal(b, testDEK, testItemID, data)) || !bytes.Equal(first, seal(a, testDEK, testItemID, data)) {
		t.Fatal("sealing the same item twice gave different bytes")
	}
	changed := bytes.Clone(data)
	changed[0] ^= 1
	for name, other := range map[string][]byte{
		"key":     seal(a, otherDEK, testItemID, data),
		"item id": seal(a, testDEK, "paabbccddeeff00112233445566778890", data),
		"content": seal(a, testDEK, testItemID, changed),
	} {
		if bytes.Equal(first[:crypto.HeaderSize], other[:crypto.HeaderSize]) {
			t.Errorf("another %s reuses the salt and nonce prefix", name)
		}
	}
	stream := func() []byte {
		var buf bytes.Buffer
		m := testMeta()
		m.Size = int64(len(data))
		if err := pack.StreamItem(&buf, testDEK, testPseudo, testClass, testItemID, m, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if bytes.Equal(stream()[:crypto.HeaderSize], stream()[:crypto.HeaderSize]) {
		t.Fatal("two streamed items share a salt and nonce prefix")
	}
}

// The bytes follow design.md section 4 exactly, so a program of one's own can read them.
func TestItemFormat(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	data := []byte(`{"order":42}`)
	sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), data)
	if err != nil {
		t.Fatal(err)
	}
	aad := crypto.AAD("custos-item", testPseudo, testClass, testItemID)
	if !bytes.Equal(pack.ItemAAD(testPseudo, testClass, testItemID), aad) {
		t.Fatal("ItemAAD differs from design.md 4.3")
	}
	compressed, err := crypto.Open(testDEK, aad, sealed)
	if err != nil {
		t.Fatal(err)
	}
	nonce := crypto.DeriveNonce(testDEK, testItemID, sha256.Sum256(compressed))
	if !bytes.Equal(sealed[1:33], nonce.Salt[:]) || !bytes.Equal(sealed[33:40], nonce.Prefix[:]) {
		t.Fatal("salt and nonce prefix are not derived as design.md 4.4 says")
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plain, err := dec.DecodeAll(compressed, nil)
	if err != nil {
		t.Fatalf("not one zstd frame: %v", err)
	}
	n := binary.BigEndian.Uint32(plain)
	var meta map[string]any
	if err := json.Unmarshal(plain[4:4+n], &meta); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"v": 1.0, "tenant": "acme", "customer_id": "alice@example.com", "record_key": "orders/42",
		"event_id": "ev-7", "event_time": "2026-03-04T05:06:07.891011121Z", "content_type": "application/json", "size": 12.0}
	if fmt.Sprint(meta) != fmt.Sprint(want) {
		t.Fatalf("meta %v\nwant %v", meta, want)
	}
	if !bytes.Equal(plain[4+n:], data) {
		t.Fatal("record bytes do not follow the meta")
	}
	// Identifiers live only inside the encryption.
	for _, id := range []string{"acme", "alice", "orders/42", "ev-7", "order"} {
		if bytes.Contains(sealed, []byte(id)) {
			t.Errorf("sealed item contains %q", id)
		}
	}
}

// sealPlain seals an arbitrary item plaintext (u32 meta length ‖ meta ‖ data) as the worker
// would, to reach the parsers behind the encryption.
func sealPlain(t testing.TB, plain []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return sealCompressed(t, enc.EncodeAll(plain, nil))
}

func sealCompressed(t testing.TB, compressed []byte) []byte {
	t.Helper()
	nonce := crypto.DeriveNonce(testDEK, testItemID, sha256.Sum256(compressed))
	sealed, err := crypto.Seal(testDEK, pack.ItemAAD(testPseudo, testClass, testItemID), nonce, compressed)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

func plainItem(meta string, data []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(meta)))
	return append(append(out, meta...), data...)
}

// Authentic items whose content is malformed are ErrCorrupt in both openers, never a panic.
func TestItemCorruptContent(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	good := `{"v":1,"tenant":"t","customer_id":"c","record_key":"k","event_id":"e","event_time":"2026-01-01T00:00:00Z","size":3}`
	for _, tc := range []struct {
		name   string
		sealed []byte
	}{
		{"not zstd", sealCompressed(t, []byte("plain text, not a zstd frame"))},
		{"empty", sealCompressed(t, nil)},
		{"short header", sealPlain(t, []byte{0, 0})},
		{"meta length past the end", sealPlain(t, plainItem(good, []byte("abc"))[:20])},
		{"meta length over the limit", sealPlain(t, binary.BigEndian.AppendUint32(nil, 1<<30))},
		{"meta not JSON", sealPlain(t, plainItem("{not json", []byte("abc")))},
		{"meta version 2", sealPlain(t, plainItem(strings.Replace(good, `"v":1`, `"v":2`, 1), []byte("abc")))},
		{"meta without version", sealPlain(t, plainItem(strings.Replace(good, `"v":1,`, ``, 1), []byte("abc")))},
		{"record shorter than size", sealPlain(t, plainItem(good, []byte("ab")))},
		{"record longer than size", sealPlain(t, plainItem(good, []byte("abcd")))},
		{"negative size", sealPlain(t, plainItem(strings.Replace(good, `"size":3`, `"size":-1`, 1), nil))},
		{"garbage after the frame", append(bytes.Clone(sealPlain(t, plainItem(good, []byte("abc")))), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, tc.sealed); !errors.Is(err, pack.ErrCorrupt) && !errors.Is(err, crypto.ErrAuth) {
				t.Errorf("OpenItem = %v, want pack.ErrCorrupt", err)
			}
			_, _, err := openStreamNoPanic(t, tc.sealed)
			if !errors.Is(err, pack.ErrCorrupt) && !errors.Is(err, crypto.ErrAuth) {
				t.Errorf("OpenItemStream = %v, want pack.ErrCorrupt", err)
			}
		})
	}
	if _, got, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, sealPlain(t, plainItem(good, []byte("abc")))); err != nil || string(got) != "abc" {
		t.Fatalf("the well-formed control item: %q, %v", got, err)
	}
}

// openStreamNoPanic turns a panic of the stream opener into a test failure with its cause.
func openStreamNoPanic(t testing.TB, sealed []byte) (meta pack.ItemMeta, data []byte, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("OpenItemStream panicked: %v", p)
		}
	}()
	ir, err := pack.OpenItemStream(bytes.NewReader(sealed), testDEK, testPseudo, testClass, testItemID)
	if err != nil {
		return pack.ItemMeta{}, nil, err
	}
	defer ir.Close()
	data, err = pack.ReadAllLimited(ir, 1<<20)
	return ir.Meta, data, err
}

// failAfter accepts n bytes, then fails every write.
type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// A record streamed in several pieces, compressed at once on several cores, reads back whole
// and in order, through both openers, at sizes around the piece boundaries; a source longer
// than the reference says is refused; a writer that fails stops the streaming with its error
// and leaves no goroutine behind (TestMain checks).
func TestStreamItemPieces(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	const piece = 512 << 10
	for _, size := range []int{piece - 1, piece, piece + 1, 2 * piece, 5*piece + 12345} {
		var data []byte
		for i := 0; len(data) < size; i++ { // compressible, and different in every piece
			data = fmt.Appendf(data, "line %d of the export: order=%d status=shipped\n", i, i*7919%100003)
		}
		data = data[:size]
		m := testMeta()
		m.Size = int64(size)
		var streamed bytes.Buffer
		if err := pack.StreamItem(&streamed, testDEK, testPseudo, testClass, testItemID, m, iotest.HalfReader(bytes.NewReader(data))); err != nil {
			t.Fatalf("size %d: StreamItem: %v", size, err)
		}
		if streamed.Len() > size/2 {
			t.Errorf("size %d: streamed item is %d bytes: not compressed", size, streamed.Len())
		}
		if _, got, err := codec.OpenItem(testDEK, testPseudo, testClass, testItemID, streamed.Bytes()); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: OpenItem: equal=%v err=%v", size, bytes.Equal(got, data), err)
		}
		if _, got, err := openStream(bytes.NewReader(streamed.Bytes()), testDEK, testPseudo, testClass, testItemID); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: OpenItemStream: equal=%v err=%v", size, bytes.Equal(got, data), err)
		}
		m.Size = int64(size - piece/2)
		if err := pack.StreamItem(io.Discard, testDEK, testPseudo, testClass, testItemID, m, bytes.NewReader(data)); err == nil {
			t.Fatalf("size %d: a source longer than the reference was streamed", size)
		}
	}
	data := random(9, 6*piece)
	m := testMeta()
	m.Size = int64(len(data))
	boom := errors.New("spool disk full")
	if err := pack.StreamItem(&failAfter{n: 2 * piece, err: boom}, testDEK, testPseudo, testClass, testItemID, m, bytes.NewReader(data)); !errors.Is(err, boom) {
		t.Fatalf("StreamItem into a failing writer = %v, want %v", err, boom)
	}
}
