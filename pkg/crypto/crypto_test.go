package crypto_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/crypto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testDEK = bytes.Repeat([]byte{0x42}, crypto.KeySize)
	testAAD = crypto.AAD("custos-item", "p0123456789abcdef0123456789abcdef", "critical", "item-1")
)

func testNonce(t testing.TB) crypto.Nonce {
	t.Helper()
	n, err := crypto.RandomNonce()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func plaintext(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testSizes() []int {
	sizes := []int{0, 1, 15, 16, 17, 4096, 65535, 65536, 65537, 2*65536 - 1, 3 * 65536, 3*65536 + 1}
	r := rand.New(rand.NewPCG(7, 7))
	for range 5 {
		sizes = append(sizes, r.IntN(5*crypto.SegmentSize))
	}
	return sizes
}

// writeChunked writes p in chunks of the given size (0 means all at once).
func writeChunked(t *testing.T, w io.WriteCloser, p []byte, chunk int) {
	t.Helper()
	if chunk == 0 {
		chunk = max(len(p), 1)
	}
	for len(p) > 0 {
		k := min(chunk, len(p))
		if n, err := w.Write(p[:k]); err != nil || n != k {
			t.Fatalf("write: n=%d err=%v", n, err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range testSizes() {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			pt := plaintext(size, uint64(size))
			nonce := testNonce(t)
			sealed, err := crypto.Seal(testDEK, testAAD, nonce, pt)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := int64(len(sealed)), crypto.CiphertextSize(int64(size)); got != want {
				t.Fatalf("len = %d, CiphertextSize = %d", got, want)
			}
			if n, err := crypto.PlaintextSize(int64(len(sealed))); err != nil || n != int64(size) {
				t.Fatalf("PlaintextSize = %d, %v; want %d", n, err, size)
			}
			opened, err := crypto.Open(testDEK, testAAD, sealed)
			if err != nil || !bytes.Equal(opened, pt) {
				t.Fatalf("Open: err=%v equal=%v", err, bytes.Equal(opened, pt))
			}

			// The streaming writer must produce the same bytes however it is fed.
			for _, chunk := range []int{0, 1, 7, 4093, 65535, 65536, 65537, 200000} {
				if chunk == 1 && size > 70000 {
					continue // byte-at-a-time is covered by the smaller sizes
				}
				var buf bytes.Buffer
				w, err := crypto.NewWriter(&buf, testDEK, testAAD, nonce)
				if err != nil {
					t.Fatal(err)
				}
				writeChunked(t, w, pt, chunk)
				if !bytes.Equal(buf.Bytes(), sealed) {
					t.Fatalf("chunk %d: writer output differs from Seal", chunk)
				}
			}

			for name, wrap := range map[string]func(io.Reader) io.Reader{
				"plain": func(r io.Reader) io.Reader { return r },
				"half":  iotest.HalfReader,
				"byte":  iotest.OneByteReader,
			} {
				r, err := crypto.NewReader(wrap(bytes.NewReader(sealed)), testDEK, testAAD)
				if err != nil {
					t.Fatalf("%s: NewReader: %v", name, err)
				}
				if err := iotest.TestReader(r, pt); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
		})
	}
}

// segments of a test ciphertext of 2 full segments and a final one of 100 bytes.
const (
	sealedSeg = crypto.SegmentSize + crypto.TagSize
	seg0      = crypto.HeaderSize
	seg1      = seg0 + sealedSeg
	seg2      = seg1 + sealedSeg
)

func TestTamper(t *testing.T) {
	t.Parallel()
	pt := plaintext(2*crypto.SegmentSize+100, 1)
	sealed, err := crypto.Seal(testDEK, testAAD, testNonce(t), pt)
	if err != nil {
		t.Fatal(err)
	}
	other, err := crypto.Seal(testDEK, testAAD, testNonce(t), pt)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := crypto.Seal(testDEK, testAAD, testNonce(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(c []byte) []byte) []byte { return f(bytes.Clone(sealed)) }
	flip := func(i int) []byte { return edit(func(c []byte) []byte { c[i] ^= 0x01; return c }) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name       string
		ciphertext []byte
		dek, aad   []byte
		want       error
	}{
		{name: "version", ciphertext: flip(0), want: crypto.ErrUnsupportedVersion},
		{name: "version zero", ciphertext: edit(func(c []byte) []byte { c[0] = 0; return c }), want: crypto.ErrUnsupportedVersion},
		{name: "salt", ciphertext: flip(1), want: crypto.ErrAuth},
		{name: "nonce prefix", ciphertext: flip(39), want: crypto.ErrAuth},
		{name: "first segment body", ciphertext: flip(seg0 + 5), want: crypto.ErrAuth},
		{name: "first segment tag", ciphertext: flip(seg1 - 1), want: crypto.ErrAuth},
		{name: "final segment", ciphertext: flip(seg2 + 3), want: crypto.ErrAuth},
		{name: "final tag", ciphertext: flip(len(sealed) - 1), want: crypto.ErrAuth},
		{name: "missing final segment", ciphertext: sealed[:seg2], want: crypto.ErrAuth},
		{name: "missing last byte", ciphertext: sealed[:len(sealed)-1], want: crypto.ErrAuth},
		{name: "header only", ciphertext: sealed[:seg0], want: crypto.ErrAuth},
		{name: "short header", ciphertext: sealed[:20], want: crypto.ErrAuth},
		{name: "version byte only", ciphertext: sealed[:1], want: crypto.ErrAuth},
		{name: "nothing", ciphertext: nil, want: crypto.ErrAuth},
		{name: "mid segment", ciphertext: sealed[:seg1+1000], want: crypto.ErrAuth},
		{name: "empty item without final segment", ciphertext: empty[:crypto.HeaderSize], want: crypto.ErrAuth},
		{name: "trailing byte", ciphertext: cat(sealed, []byte{0}), want: crypto.ErrAuth},
		{name: "trailing tag-sized", ciphertext: cat(sealed, make([]byte, crypto.TagSize)), want: crypto.ErrAuth},
		{name: "trailing copy of final segment", ciphertext: cat(sealed, sealed[seg2:]), want: crypto.ErrAuth},
		{name: "trailing empty final segment", ciphertext: cat(empty, empty[crypto.HeaderSize:]), want: crypto.ErrAuth},
		{name: "segments swapped", ciphertext: cat(sealed[:seg0], sealed[seg1:seg2], sealed[seg0:seg1], sealed[seg2:]), want: crypto.ErrAuth},
		{name: "segment dropped", ciphertext: cat(sealed[:seg1], sealed[seg2:]), want: crypto.ErrAuth},
		{name: "segment duplicated", ciphertext: cat(sealed[:seg1], sealed[seg0:]), want: crypto.ErrAuth},
		{name: "header of another item", ciphertext: cat(other[:seg0], sealed[seg0:]), want: crypto.ErrAuth},
		{name: "segment of another item", ciphertext: cat(sealed[:seg1], other[seg1:seg2], sealed[seg2:]), want: crypto.ErrAuth},
		{name: "wrong key", ciphertext: sealed, dek: bytes.Repeat([]byte{0x43}, 32), want: crypto.ErrAuth},
		{name: "wrong aad", ciphertext: sealed, aad: crypto.AAD("custos-item", "p0123456789abcdef0123456789abcdef", "critical", "item-2"), want: crypto.ErrAuth},
		{name: "empty aad", ciphertext: sealed, aad: []byte{}, want: crypto.ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dek, aad := testDEK, testAAD
			if tt.dek != nil {
				dek = tt.dek
			}
			if tt.aad != nil {
				aad = tt.aad
			}
			if got, err := crypto.Open(dek, aad, tt.ciphertext); !errors.Is(err, tt.want) || got != nil {
				t.Errorf("Open: err = %v, want %v (plaintext returned: %v)", err, tt.want, got != nil)
			}
			if err := readAll(tt.ciphertext, dek, aad); !errors.Is(err, tt.want) {
				t.Errorf("NewReader: err = %v, want %v", err, tt.want)
			}
		})
	}
}

// readAll decrypts through NewReader and returns the first error.
func readAll(ciphertext, dek, aad []byte) error {
	r, err := crypto.NewReader(bytes.NewReader(ciphertext), dek, aad)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, r)
	return err
}

func TestDeriveNonce(t *testing.T) {
	t.Parallel()
	pt := []byte("a customer record")
	digest := sha256.Sum256(pt)
	n1 := crypto.DeriveNonce(testDEK, "item-1", digest)
	if n1 != crypto.DeriveNonce(testDEK, "item-1", digest) {
		t.Fatal("DeriveNonce is not deterministic")
	}
	c1, _ := crypto.Seal(testDEK, testAAD, n1, pt)
	c2, _ := crypto.Seal(testDEK, testAAD, crypto.DeriveNonce(testDEK, "item-1", digest), pt)
	if !bytes.Equal(c1, c2) {
		t.Fatal("identical input gave different ciphertexts")
	}
	for name, n := range map[string]crypto.Nonce{
		"other item":    crypto.DeriveNonce(testDEK, "item-2", digest),
		"other content": crypto.DeriveNonce(testDEK, "item-1", sha256.Sum256([]byte("another record"))),
		"other key":     crypto.DeriveNonce(bytes.Repeat([]byte{1}, 32), "item-1", digest),
		"item id shift": crypto.DeriveNonce(testDEK, "item-1\x00", digest),
	} {
		if n == n1 || n.Salt == n1.Salt || n.Prefix == n1.Prefix {
			t.Errorf("%s: nonce not distinct", name)
		}
	}
	r1, r2 := testNonce(t), testNonce(t)
	if r1 == r2 {
		t.Error("RandomNonce repeated")
	}
}

// TestKnownAnswer rebuilds the format from the spec in the package doc with the primitives
// directly, and pins one small vector so that any change of the format is noticed.
func TestKnownAnswer(t *testing.T) {
	t.Parallel()
	dek := make([]byte, 32)
	for i := range dek {
		dek[i] = byte(i)
	}
	aad := []byte("\x00\x0bcustos-item\x00\x02p1\x00\x08critical\x00\x02i1")
	if got := crypto.AAD("custos-item", "p1", "critical", "i1"); !bytes.Equal(got, aad) {
		t.Fatalf("AAD = %x, want %x", got, aad)
	}

	pt := plaintext(crypto.SegmentSize+1000, 3) // one full segment and a final one
	digest := sha256.Sum256(pt)

	info := append([]byte("custos-item-nonce-v1\x00\x06item-1"), digest[:]...)
	sp, err := hkdf.Key(sha256.New, dek, nil, string(info), 39)
	if err != nil {
		t.Fatal(err)
	}
	nonce := crypto.DeriveNonce(dek, "item-1", digest)
	if !bytes.Equal(nonce.Salt[:], sp[:32]) || !bytes.Equal(nonce.Prefix[:], sp[32:]) {
		t.Fatal("DeriveNonce differs from the spec")
	}

	header := append([]byte{0x01}, sp...)
	k, err := hkdf.Key(sha256.New, dek, sp[:32], "custos-item-v1"+string(aad), 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCM(block)
	segNonce := func(i uint32, last byte) []byte {
		n := append(bytes.Clone(sp[32:]), 0, 0, 0, 0, last)
		binary.BigEndian.PutUint32(n[7:], i)
		return n
	}
	want := bytes.Clone(header)
	want = gcm.Seal(want, segNonce(0, 0), pt[:crypto.SegmentSize], header)
	want = gcm.Seal(want, segNonce(1, 1), pt[crypto.SegmentSize:], header)

	got, err := crypto.Seal(dek, aad, nonce, pt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Seal differs from the spec")
	}

	// A pinned vector: 6 bytes, one final segment.
	small := []byte("custos")
	got, err = crypto.Seal(dek, aad, crypto.DeriveNonce(dek, "i1", sha256.Sum256(small)), small)
	if err != nil {
		t.Fatal(err)
	}
	const pinned = "01f230179c8bae5e116f180ceee3e5b1775484fad9759f29087f145e781f81e094ddfbd26aef7788687b72c2b18b41a97680151a3e8c5b7ac98e08ed64e1"
	if hex.EncodeToString(got) != pinned {
		t.Fatalf("pinned vector changed:\n got %x\nwant %s", got, pinned)
	}
}

func TestAAD(t *testing.T) {
	t.Parallel()
	if bytes.Equal(crypto.AAD("ab", "c"), crypto.AAD("a", "bc")) {
		t.Fatal("AAD is ambiguous")
	}
	if got := crypto.AAD(); len(got) != 0 {
		t.Fatalf("AAD() = %x", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for an over-long field")
		}
	}()
	crypto.AAD(string(make([]byte, crypto.MaxFieldLen+1)))
}

func TestSizes(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 65535, 65536, 65537, 1 << 40} {
		c := crypto.CiphertextSize(n)
		if got, err := crypto.PlaintextSize(c); err != nil || got != n {
			t.Errorf("PlaintextSize(CiphertextSize(%d)) = %d, %v", n, got, err)
		}
	}
	if crypto.CiphertextSize(-1) != -1 {
		t.Error("CiphertextSize(-1) != -1")
	}
	// Lengths no ciphertext has: too short, or a tail too short to hold a final segment's tag.
	for _, c := range []int64{-1, 0, 40, 55, 40 + 65552, 40 + 65552 + 15, 40 + 2*65552} {
		if _, err := crypto.PlaintextSize(c); !errors.Is(err, crypto.ErrAuth) {
			t.Errorf("PlaintextSize(%d) err = %v, want ErrAuth", c, err)
		}
	}
}

type failWriter struct{ after int }

var errDisk = errors.New("disk full")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errDisk
	}
	f.after--
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	t.Parallel()
	if _, err := crypto.NewWriter(io.Discard, make([]byte, 16), nil, crypto.Nonce{}); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("short key: %v", err)
	}
	if _, err := crypto.Seal(make([]byte, 31), nil, crypto.Nonce{}, nil); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("Seal short key: %v", err)
	}
	if _, err := crypto.Open(nil, nil, nil); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("Open no key: %v", err)
	}
	if _, err := crypto.NewReader(bytes.NewReader(nil), nil, nil); !errors.Is(err, crypto.ErrKeySize) {
		t.Errorf("NewReader no key: %v", err)
	}

	w, _ := crypto.NewWriter(io.Discard, testDEK, testAAD, testNonce(t))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, crypto.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}

	// A failing destination is reported and sticks.
	w, _ = crypto.NewWriter(&failWriter{after: 1}, testDEK, testAAD, testNonce(t))
	if _, err := w.Write(make([]byte, 3*crypto.SegmentSize)); !errors.Is(err, errDisk) {
		t.Errorf("Write: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, errDisk) {
		t.Errorf("second Write: %v", err)
	}
	if err := w.Close(); !errors.Is(err, errDisk) {
		t.Errorf("Close: %v", err)
	}
}

func TestReaderIOError(t *testing.T) {
	t.Parallel()
	sealed, _ := crypto.Seal(testDEK, testAAD, testNonce(t), plaintext(100000, 2))
	errRead := errors.New("connection reset")
	r, err := crypto.NewReader(io.MultiReader(bytes.NewReader(sealed[:seg1+10]), iotest.ErrReader(errRead)), testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, errRead) || errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("err = %v, want the read error", err)
	}
	if _, err := crypto.NewReader(iotest.ErrReader(errRead), testDEK, testAAD); !errors.Is(err, errRead) {
		t.Fatalf("NewReader err = %v", err)
	}
}

func TestWriterAllocs(t *testing.T) {
	w, _ := crypto.NewWriter(io.Discard, testDEK, testAAD, testNonce(t))
	defer w.Close()
	p := make([]byte, 100000) // unaligned, so both the buffered and the direct path run
	if allocs := testing.AllocsPerRun(20, func() { _, _ = w.Write(p) }); allocs != 0 {
		t.Fatalf("Write allocates %v times per call", allocs)
	}
}

func BenchmarkWriter(b *testing.B) {
	for _, chunk := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			p := plaintext(chunk, 1)
			w, _ := crypto.NewWriter(io.Discard, testDEK, testAAD, testNonce(b))
			b.SetBytes(int64(chunk))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = w.Write(p)
			}
			_ = w.Close()
		})
	}
}

// BenchmarkRawGCM is the baseline BenchmarkWriter is measured against: AES-256-GCM sealing
// 64 KiB in place with no framing.
func BenchmarkRawGCM(b *testing.B) {
	block, _ := aes.NewCipher(testDEK)
	gcm, _ := cipher.NewGCM(block)
	buf := make([]byte, crypto.SegmentSize+crypto.TagSize)
	nonce := make([]byte, 12)
	b.SetBytes(crypto.SegmentSize)
	for b.Loop() {
		gcm.Seal(buf[:0], nonce, buf[:crypto.SegmentSize], nil)
	}
}

func BenchmarkReader(b *testing.B) {
	const size = 8 << 20
	sealed, _ := crypto.Seal(testDEK, testAAD, testNonce(b), plaintext(size, 1))
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r, _ := crypto.NewReader(bytes.NewReader(sealed), testDEK, testAAD)
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealSmall(b *testing.B) {
	p := plaintext(1000, 1)
	nonce := testNonce(b)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		_, _ = crypto.Seal(testDEK, testAAD, nonce, p)
	}
}
