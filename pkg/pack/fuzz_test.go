package pack_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
)

// The fuzz targets below cover every parser of stored bytes (design.md sections 4 and 5), each
// layer reached directly so the fuzzer is not stopped by the layer above it:
//
//	FuzzOpenItem        a stored item: header, segments, zstd, meta, record
//	FuzzItemCompressed  the zstd layer of an authentic item
//	FuzzItemPlaintext   u32(len meta) ‖ meta ‖ record of an authentic item
//	FuzzOpenManifest    a stored manifest
//	FuzzManifestJSON    the JSON of an authentic manifest
//
// None may panic; every rejection must be a named error. The seed corpus is committed under
// testdata/fuzz (rewrite it with CUSTOS_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus).

// maxFuzzRecord bounds what the stream opener reads, so a small zstd frame that expands hugely
// costs a rejection rather than memory.
const maxFuzzRecord = 16 << 20

type opened struct {
	meta pack.ItemMeta
	data []byte
	err  error
}

// openBoth opens one stored item with both openers.
func openBoth(t *testing.T, codec *pack.Codec, sealed []byte) (mem, stream opened) {
	mem.meta, mem.data, mem.err = codec.OpenItem(testDEK, testPseudo, testClass, testItemID, sealed)
	ir, err := pack.OpenItemStream(bytes.NewReader(sealed), testDEK, testPseudo, testClass, testItemID)
	if err != nil {
		stream.err = err
		return mem, stream
	}
	defer ir.Close()
	stream.meta = ir.Meta
	stream.data, stream.err = pack.ReadAllLimited(ir, maxFuzzRecord)
	return mem, stream
}

// checkOpened asserts what any input must satisfy: named errors only, and both openers agree.
func checkOpened(t *testing.T, mem, stream opened, allowed ...error) {
	t.Helper()
	named := func(err error) bool {
		for _, a := range allowed {
			if errors.Is(err, a) {
				return true
			}
		}
		return false
	}
	if mem.err != nil && !named(mem.err) {
		t.Fatalf("OpenItem: unnamed error %v", mem.err)
	}
	if stream.err != nil && !named(stream.err) && !errors.Is(stream.err, pack.ErrTooLarge) {
		t.Fatalf("OpenItemStream: unnamed error %v", stream.err)
	}
	if errors.Is(stream.err, pack.ErrTooLarge) {
		return // the stream opener was told to stop early; nothing to compare
	}
	if (mem.err == nil) != (stream.err == nil) {
		t.Fatalf("openers disagree: OpenItem %v, OpenItemStream %v", mem.err, stream.err)
	}
	if mem.err != nil {
		return
	}
	if !bytes.Equal(mem.data, stream.data) || fmt.Sprint(mem.meta) != fmt.Sprint(stream.meta) {
		t.Fatal("openers return different items")
	}
	if mem.meta.V != 1 || mem.meta.Size != int64(len(mem.data)) {
		t.Fatalf("accepted an item with meta %+v and %d bytes", mem.meta, len(mem.data))
	}
}

func FuzzOpenItem(f *testing.F) {
	codec := newCodec(f)
	for _, data := range [][]byte{nil, []byte("x"), []byte(`{"a":1}`)} {
		sealed, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), data)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, sealed []byte) {
		mem, stream := openBoth(t, codec, sealed)
		checkOpened(t, mem, stream, crypto.ErrAuth, crypto.ErrUnsupportedVersion, pack.ErrCorrupt)
	})
}

func FuzzItemCompressed(f *testing.F) {
	codec := newCodec(f)
	f.Add([]byte{})
	f.Add([]byte("\x28\xb5\x2f\xfd"))
	f.Fuzz(func(t *testing.T, compressed []byte) {
		mem, stream := openBoth(t, codec, sealCompressed(t, compressed))
		checkOpened(t, mem, stream, pack.ErrCorrupt)
	})
}

func FuzzItemPlaintext(f *testing.F) {
	codec := newCodec(f)
	f.Add(plainItem(`{"v":1,"size":3}`, []byte("abc")))
	f.Add(plainItem(`{"v":1,"size":-1}`, nil))
	f.Fuzz(func(t *testing.T, plain []byte) {
		mem, stream := openBoth(t, codec, sealPlain(t, plain))
		checkOpened(t, mem, stream, pack.ErrCorrupt)
	})
}

func FuzzOpenManifest(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		m, err := pack.OpenManifest(testCatalog, testPackID, sealed)
		switch {
		case errors.Is(err, crypto.ErrAuth), errors.Is(err, crypto.ErrUnsupportedVersion), errors.Is(err, pack.ErrCorrupt):
		case err != nil:
			t.Fatalf("unnamed error %v", err)
		case m.V != 1 || m.Pack != testPackID:
			t.Fatalf("accepted manifest %+v", m)
		}
	})
}

func FuzzManifestJSON(f *testing.F) {
	f.Add([]byte(`{"v":1,"pack":"` + testPackID + `","items":[]}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		m, err := pack.OpenManifest(testCatalog, testPackID, sealManifestJSON(t, testPackID, js))
		if err != nil {
			if !errors.Is(err, pack.ErrCorrupt) {
				t.Fatalf("unnamed error %v", err)
			}
			return
		}
		if m.V != 1 || m.Pack != testPackID {
			t.Fatalf("accepted manifest %+v", m)
		}
		// Whatever is accepted survives a round trip unchanged.
		again, err := pack.SealManifest(testCatalog, m)
		if err != nil {
			t.Fatalf("accepted manifest does not seal: %v", err)
		}
		m2, err := pack.OpenManifest(testCatalog, testPackID, again)
		if err != nil {
			t.Fatalf("re-sealed manifest rejected: %v", err)
		}
		a, _ := json.Marshal(m)
		b, _ := json.Marshal(m2)
		if !bytes.Equal(a, b) {
			t.Fatalf("manifest changed in a round trip:\n%s\n%s", a, b)
		}
	})
}

// sealManifestJSON seals arbitrary JSON as the manifest of packID.
func sealManifestJSON(t testing.TB, packID string, js []byte) []byte {
	t.Helper()
	sealed, err := crypto.Seal(testCatalog, crypto.AAD("custos-manifest", packID), crypto.DeriveNonce(testCatalog, packID, sha256.Sum256(js)), js)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

// TestWriteFuzzCorpus rewrites the committed seed corpus; it runs only when
// CUSTOS_WRITE_FUZZ_CORPUS=1. Every seed but valid-streamed (random nonce) is deterministic, so
// rewriting changes nothing else unless the formats change.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CUSTOS_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set CUSTOS_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(target, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	codec := newCodec(t)
	small, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), []byte(`{"balance":100}`))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := codec.SealItem(testDEK, testPseudo, testClass, testItemID, testMeta(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var streamed bytes.Buffer
	m := testMeta()
	m.Size = 5
	if err := pack.StreamItem(&streamed, testDEK, testPseudo, testClass, testItemID, m, strings.NewReader("large")); err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	write("FuzzOpenItem", "valid-small", small)
	write("FuzzOpenItem", "valid-empty", empty)
	write("FuzzOpenItem", "valid-streamed", streamed.Bytes())
	write("FuzzOpenItem", "bad-tag", flip(small, len(small)-1))
	write("FuzzOpenItem", "bad-salt", flip(small, 5))
	write("FuzzOpenItem", "truncated", small[:len(small)-1])
	write("FuzzOpenItem", "trailing-byte", append(bytes.Clone(small), 0))
	write("FuzzOpenItem", "header-only", small[:crypto.HeaderSize])
	write("FuzzOpenItem", "version-2", append([]byte{2}, small[1:]...))

	good := `{"v":1,"tenant":"t","customer_id":"c","record_key":"k","event_id":"e","event_time":"2026-01-01T00:00:00Z","size":3}`
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	frame := enc.EncodeAll(plainItem(good, []byte("abc")), nil)
	half := len(good) / 2
	skippable := append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, frame...)
	write("FuzzItemCompressed", "valid", frame)
	write("FuzzItemCompressed", "two-frames", slicesConcat(enc.EncodeAll(plainItem(good, nil)[:4+half], nil), enc.EncodeAll([]byte(good[half:]+"abc"), nil)))
	write("FuzzItemCompressed", "skippable-frame", skippable)
	write("FuzzItemCompressed", "truncated-frame", frame[:len(frame)-2])
	write("FuzzItemCompressed", "not-zstd", []byte("plain text"))

	write("FuzzItemPlaintext", "valid", plainItem(good, []byte("abc")))
	write("FuzzItemPlaintext", "negative-size", plainItem(strings.Replace(good, `"size":3`, `"size":-1`, 1), nil))
	write("FuzzItemPlaintext", "huge-size", plainItem(strings.Replace(good, `"size":3`, `"size":9223372036854775807`, 1), []byte("abc")))
	write("FuzzItemPlaintext", "size-mismatch", plainItem(good, []byte("ab")))
	write("FuzzItemPlaintext", "meta-length-past-end", plainItem(good, []byte("abc"))[:30])
	write("FuzzItemPlaintext", "meta-not-json", plainItem("{", []byte("abc")))
	write("FuzzItemPlaintext", "version-2", plainItem(strings.Replace(good, `"v":1`, `"v":2`, 1), []byte("abc")))

	mf := `{"v":1,"pack":"` + testPackID + `","class":"critical","size":3,"sha256":"00","newest_event":"2026-01-01T00:00:00.5Z",` +
		`"items":[{"id":"pa","customer":"pb","seq":1,"event_time":"2026-01-01T00:00:00.5Z","offset":0,"length":3,"sha256":"00"}]}`
	write("FuzzOpenManifest", "valid", sealManifestJSON(t, testPackID, []byte(mf)))
	write("FuzzOpenManifest", "other-pack", sealManifestJSON(t, "ffffffffffffffffffffffffffffffff", []byte(mf)))
	write("FuzzOpenManifest", "truncated", sealManifestJSON(t, testPackID, []byte(mf))[:60])

	write("FuzzManifestJSON", "valid", []byte(mf))
	write("FuzzManifestJSON", "other-pack", []byte(strings.Replace(mf, testPackID, "ffffffffffffffffffffffffffffffff", 1)))
	write("FuzzManifestJSON", "version-2", []byte(strings.Replace(mf, `"v":1`, `"v":2`, 1)))
	write("FuzzManifestJSON", "bad-time", []byte(strings.Replace(mf, `2026-01-01T00:00:00.5Z`, `yesterday`, 1)))
	write("FuzzManifestJSON", "not-json", []byte(`{"v":1,`))
}
