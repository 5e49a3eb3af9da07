// Command indierestore restores every customer from one local-disk (fs) target and the key file,
// written from docs/design.md alone (sections 2 to 5, 7 and 11). It imports no Custos package:
// it is the proof that the document is a complete specification of what Custos writes. The test
// in tests/indie runs it beside `custos restore --all` and compares the trees they write.
//
//	indierestore -key KEYFILE -dir FS_TARGET_ROOT -out DIR
//
// It prints "indierestore customers=N records=N erased=N" and exits non-zero if any object fails
// a check.
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Constants of docs/design.md.
const (
	// Section 4: the item format.
	itemVersion   = 0x01
	headerSize    = 40 // version ‖ salt(32) ‖ nonce prefix(7)
	saltSize      = 32
	prefixSize    = 7
	segmentSize   = 65536
	tagSize       = 16
	sealedSegment = segmentSize + tagSize
	maxMeta       = 65536
	infoSegment   = "custos-item-v1"

	// Section 3: the key file and wrapped data keys.
	wrapVersion    = 0x01
	wrapNonceSize  = 12
	wrapDomain     = "custos-dek-v1"
	catalogScope   = "catalog"
	pseudonymDom   = "custos-pseudonym-v1"
	fingerprintDom = "custos-pseudonym-check-v1"

	// Section 11: catalog objects.
	magic     = "CUSTOSC1"
	maxHeader = 4096
)

func main() {
	keyPath := flag.String("key", "", "key file (docs/design.md section 3)")
	dir := flag.String("dir", "", "root directory of a local-disk (fs) target")
	out := flag.String("out", "", "directory to write the restored records to")
	flag.Parse()
	if *keyPath == "" || *dir == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: indierestore -key KEYFILE -dir FS_TARGET_ROOT -out DIR")
		os.Exit(2)
	}
	rep, err := run(*keyPath, *dir, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "indierestore:", err)
		os.Exit(1)
	}
	fmt.Printf("indierestore customers=%d records=%d erased=%d\n", rep.customers, rep.records, rep.erased)
	for _, f := range rep.failures {
		fmt.Fprintln(os.Stderr, "FAILED:", f)
	}
	if len(rep.failures) > 0 {
		os.Exit(2)
	}
}

type report struct {
	customers, records, erased int
	failures                   []string
}

// ---- Key file (section 3) ----

type keyFile struct {
	Version      int    `json:"version"`
	KeyID        string `json:"key_id"`
	KEK          string `json:"kek"`
	PseudonymKey string `json:"pseudonym_key"`
	// Version 2 (after a rotation, section 11): every KEK version, one active.
	Active string `json:"active"`
	KEKs   []struct {
		KeyID     string `json:"key_id"`
		KEK       string `json:"kek"`
		Destroyed string `json:"destroyed"`
	} `json:"keks"`
}

type kms struct {
	keyID        string                 // the active KEK
	keks         map[string]cipher.AEAD // every KEK version held, by id
	pseudonymKey []byte
	root         string // the target, where key envelopes are read (section 11, KEK epochs)
}

func loadKeyFile(path string) (*kms, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("key file: malformed JSON")
	}
	pk, err := b64(f.PseudonymKey)
	if err != nil || len(pk) != 32 {
		return nil, fmt.Errorf("key file: pseudonym_key must be 32 bytes of standard base64")
	}
	k := &kms{keks: map[string]cipher.AEAD{}, pseudonymKey: pk}
	add := func(id, kekB64 string) error {
		kek, err := b64(kekB64)
		if err != nil || len(kek) != 32 {
			return fmt.Errorf("key file: kek must be 32 bytes of standard base64")
		}
		sum := sha256.Sum256(kek)
		if want := "local-" + hex.EncodeToString(sum[:4]); id != want {
			return fmt.Errorf("key file: key_id %q does not match the kek (%s)", id, want)
		}
		aead, err := newGCM(kek)
		if err != nil {
			return err
		}
		k.keks[id] = aead
		return nil
	}
	switch f.Version {
	case 1:
		if err := add(f.KeyID, f.KEK); err != nil {
			return nil, err
		}
		k.keyID = f.KeyID
	case 2:
		for _, v := range f.KEKs {
			if v.Destroyed != "" {
				continue
			}
			if err := add(v.KeyID, v.KEK); err != nil {
				return nil, err
			}
		}
		k.keyID = f.Active
	default:
		return nil, fmt.Errorf("key file: version %d", f.Version)
	}
	if k.keks[k.keyID] == nil {
		return nil, fmt.Errorf("key file: the active KEK %q is not held", k.keyID)
	}
	return k, nil
}

// b64 decodes standard base64 with padding (RFC 4648 section 4), as every []byte in Custos JSON.
func b64(s string) ([]byte, error) { return base64.StdEncoding.Strict().DecodeString(s) }

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// unwrap opens a wrapped data key: 0x01 ‖ nonce(12) ‖ AES-256-GCM(KEK, nonce, DEK, ad =
// "custos-dek-v1" ‖ scope), the ciphertext ending with the 16-byte tag.
func (k *kms) unwrap(kekID string, wrapped []byte, scope string) ([]byte, error) {
	aead := k.keks[kekID]
	if aead == nil {
		// Wrapped by a KEK destroyed after a rotation: the rotation wrote the scope's key
		// envelope under the active KEK (an erased scope has none).
		return k.fromEnvelope(scope)
	}
	if len(wrapped) < 1+wrapNonceSize+tagSize || wrapped[0] != wrapVersion {
		return nil, fmt.Errorf("data key of %s: malformed wrapped key", scope)
	}
	dek, err := aead.Open(nil, wrapped[1:1+wrapNonceSize], wrapped[1+wrapNonceSize:], []byte(wrapDomain+scope))
	if err != nil {
		return nil, fmt.Errorf("data key of %s does not unwrap", scope)
	}
	if len(dek) != 32 {
		return nil, fmt.Errorf("data key of %s is %d bytes", scope, len(dek))
	}
	return dek, nil
}

// fromEnvelope reads keys/<active kek id>/<2 chars after the first>/<scope> from the target.
func (k *kms) fromEnvelope(scope string) ([]byte, error) {
	if len(scope) < 3 {
		return nil, fmt.Errorf("scope %q too short for an envelope name", scope)
	}
	b, err := os.ReadFile(filepath.Join(k.root, "keys", k.keyID, scope[1:3], scope))
	if err != nil {
		return nil, fmt.Errorf("data key of %s: its KEK is not held and no envelope under %s: %w", scope, k.keyID, err)
	}
	var e struct {
		V     int    `json:"v"`
		Scope string `json:"scope"`
		KEK   string `json:"kek"`
		DEK   string `json:"dek"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.V != 1 || e.Scope != scope || e.KEK != k.keyID {
		return nil, fmt.Errorf("key envelope of %s is malformed", scope)
	}
	wrapped, err := b64(e.DEK)
	if err != nil {
		return nil, fmt.Errorf("key envelope of %s: dek is not standard base64", scope)
	}
	return k.unwrap(k.keyID, wrapped, scope)
}

func u16framed(fields ...string) []byte {
	var b []byte
	for _, f := range fields {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

func (k *kms) pseudonym(tenant, customer string) string {
	m := hmac.New(sha256.New, k.pseudonymKey)
	m.Write([]byte(pseudonymDom))
	m.Write(u16framed(tenant, customer))
	return "p" + hex.EncodeToString(m.Sum(nil)[:16])
}

func (k *kms) fingerprint() string {
	m := hmac.New(sha256.New, k.pseudonymKey)
	m.Write([]byte(fingerprintDom))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// ---- Item encryption (section 4, step 3) ----

// open authenticates and decrypts an item-format ciphertext.
func open(dek, ad, c []byte) ([]byte, error) {
	if len(c) < headerSize+tagSize || c[0] != itemVersion {
		return nil, errors.New("not an item ciphertext")
	}
	header := c[:headerSize]
	salt := header[1 : 1+saltSize]
	prefix := header[1+saltSize:]
	key, err := hkdf.Key(sha256.New, dek, salt, infoSegment+string(ad), 32)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	body := c[headerSize:]
	full, last := len(body)/sealedSegment, len(body)%sealedSegment
	if last < tagSize {
		return nil, errors.New("item ciphertext has no final segment")
	}
	out := make([]byte, 0, full*segmentSize+last-tagSize)
	nonce := make([]byte, 12)
	copy(nonce, prefix)
	for i := 0; i <= full; i++ {
		seg := body[i*sealedSegment : min(len(body), (i+1)*sealedSegment)]
		binary.BigEndian.PutUint32(nonce[prefixSize:], uint32(i))
		nonce[11] = 0
		if i == full {
			nonce[11] = 1
		}
		if out, err = aead.Open(out, nonce, seg, header); err != nil {
			return nil, fmt.Errorf("segment %d does not authenticate", i)
		}
	}
	return out, nil
}

// ---- Catalog objects (section 11) ----

type catalogHeader struct {
	V   int    `json:"v"`
	KEK string `json:"kek"`
	DEK string `json:"dek"`
	PK  string `json:"pk"`
}

type opener struct {
	k     *kms
	cache map[string][]byte
}

var errKeyMismatch = errors.New("the key file is not the one these backups were written with")

// catalog opens a catalog object whose body was sealed with associated data ad.
func (o *opener) catalog(b, ad []byte) ([]byte, error) {
	if len(b) < len(magic)+4 || string(b[:len(magic)]) != magic {
		return nil, errors.New("not a catalog object")
	}
	n := binary.BigEndian.Uint32(b[len(magic):])
	rest := b[len(magic)+4:]
	if n > maxHeader || int(n) > len(rest) {
		return nil, fmt.Errorf("catalog header of %d bytes", n)
	}
	var h catalogHeader
	if err := json.Unmarshal(rest[:n], &h); err != nil || h.V != 1 {
		return nil, errors.New("malformed catalog header")
	}
	if h.PK != o.k.fingerprint() {
		return nil, fmt.Errorf("%w (fingerprint %s, the key file's is %s)", errKeyMismatch, h.PK, o.k.fingerprint())
	}
	dek, ok := o.cache[h.KEK+"\x00"+h.DEK]
	if !ok {
		wrapped, err := b64(h.DEK)
		if err != nil {
			return nil, errors.New("catalog header: dek is not standard base64")
		}
		if dek, err = o.k.unwrap(h.KEK, wrapped, catalogScope); err != nil {
			return nil, err
		}
		o.cache[h.KEK+"\x00"+h.DEK] = dek
	}
	return open(dek, ad, rest[n:])
}

// ---- Manifests (section 5) ----

type entry struct {
	ID        string `json:"id"`
	Customer  string `json:"customer"`
	Seq       uint64 `json:"seq"`
	EventTime string `json:"event_time"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	SHA256    string `json:"sha256"`
}

type wrappedKey struct {
	KEK string `json:"kek"`
	DEK string `json:"dek"`
}

type manifest struct {
	V     int                   `json:"v"`
	Pack  string                `json:"pack"`
	Class string                `json:"class"`
	Items []entry               `json:"items"`
	Keys  map[string]wrappedKey `json:"keys"`
}

type itemMeta struct {
	V          int    `json:"v"`
	Tenant     string `json:"tenant"`
	CustomerID string `json:"customer_id"`
	RecordKey  string `json:"record_key"`
	Size       int64  `json:"size"`
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validPseudonym(s string) bool { return len(s) == 33 && s[0] == 'p' && isHex(s[1:], 32) }

// list returns, sorted, the ids of the objects named prefix/<shard(id)>/<id> under the fs
// target's root for which valid(id) holds; other names are ignored. Every directory entry whose
// name starts with "." is the target's own (staging in .tmp), not an object.
func list(root, prefix string, valid func(string) bool, shard func(string) string) ([]string, error) {
	var ids []string
	base := filepath.Join(root, prefix)
	err := filepath.WalkDir(base, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) && p == base {
				return filepath.SkipDir
			}
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != base {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) == 2 && valid(parts[1]) && parts[0] == shard(parts[1]) {
			ids = append(ids, parts[1])
		}
		return nil
	})
	sort.Strings(ids)
	return ids, err
}

type located struct {
	pack  string
	class string
	e     entry
	t     time.Time
	order int
}

func run(keyPath, root, out string) (report, error) {
	var rep report
	k, err := loadKeyFile(keyPath)
	if err != nil {
		return rep, err
	}
	k.root = root
	o := &opener{k: k, cache: map[string][]byte{}}

	// 1. Erasure records: erasures/<2 hex after the p>/<pseudonym>.
	pseudoShard := func(p string) string { return p[1:3] }
	erasures, err := list(root, "erasures", validPseudonym, pseudoShard)
	if err != nil {
		return rep, err
	}
	erased := map[string]bool{}
	for _, p := range erasures {
		b, err := os.ReadFile(filepath.Join(root, "erasures", p[1:3], p))
		if err != nil {
			return rep, err
		}
		js, err := o.catalog(b, u16framed("custos-erasure", p))
		if errors.Is(err, errKeyMismatch) {
			return rep, err
		}
		var e struct {
			V        int    `json:"v"`
			Customer string `json:"customer"`
			Erased   string `json:"erased"`
		}
		if err == nil {
			err = json.Unmarshal(js, &e)
		}
		if err != nil || e.V != 1 || e.Customer != p {
			// Not an erasure: a forged or damaged record is never honoured.
			rep.failures = append(rep.failures, fmt.Sprintf("erasure record %s: does not authenticate", p))
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Erased); err != nil {
			rep.failures = append(rep.failures, fmt.Sprintf("erasure record %s: bad time", p))
			continue
		}
		erased[p] = true
	}

	// 2. Manifests, in pack id order; their items in manifest order.
	ids, err := list(root, "manifests", func(s string) bool { return isHex(s, 32) }, func(s string) string { return s[:2] })
	if err != nil {
		return rep, err
	}
	var items []located
	keys := map[[2]string]wrappedKey{} // (pack, customer) → wrapped data key
	for _, id := range ids {
		b, err := os.ReadFile(filepath.Join(root, "manifests", id[:2], id))
		if err != nil {
			return rep, err
		}
		js, err := o.catalog(b, u16framed("custos-manifest", id))
		if errors.Is(err, errKeyMismatch) {
			return rep, err
		}
		var m manifest
		if err == nil {
			if err = json.Unmarshal(js, &m); err == nil && (m.V != 1 || m.Pack != id) {
				err = errors.New("version or pack id does not match its name")
			}
		}
		if err != nil {
			rep.failures = append(rep.failures, fmt.Sprintf("manifest %s: %v", id, err))
			continue
		}
		for c, wk := range m.Keys {
			keys[[2]string{id, c}] = wk
		}
		for _, e := range m.Items {
			t, err := time.Parse(time.RFC3339Nano, e.EventTime)
			if err != nil {
				rep.failures = append(rep.failures, fmt.Sprintf("manifest %s: item %s: bad event time", id, e.ID))
				continue
			}
			items = append(items, located{pack: id, class: m.Class, e: e, t: t, order: len(items)})
		}
	}

	// 3. One copy per item id (the first met); then oldest first by event time as an instant,
	// then stream sequence, then the order met, so the newest version is written last.
	seen := map[string]bool{}
	kept := items[:0]
	for _, it := range items {
		if !seen[it.e.ID] {
			seen[it.e.ID] = true
			kept = append(kept, it)
		}
	}
	items = kept
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if !a.t.Equal(b.t) {
			return a.t.Before(b.t)
		}
		if a.e.Seq != b.e.Seq {
			return a.e.Seq < b.e.Seq
		}
		return a.order < b.order
	})

	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return rep, err
	}
	defer dec.Close()
	deks := map[string][]byte{}
	customers := map[string]bool{}
	records := map[string]bool{}
	skipped := map[string]bool{}
	for _, it := range items {
		c := it.e.Customer
		if erased[c] {
			if !skipped[c] {
				skipped[c] = true
				rep.erased++
			}
			continue
		}
		dek, ok := deks[c]
		if !ok {
			wk, found := keys[[2]string{it.pack, c}]
			if !found {
				rep.failures = append(rep.failures, fmt.Sprintf("manifest %s holds no data key of %s", it.pack, c))
				continue
			}
			wrapped, err := b64(wk.DEK)
			if err == nil {
				dek, err = k.unwrap(wk.KEK, wrapped, c)
			}
			if err != nil {
				rep.failures = append(rep.failures, fmt.Sprintf("manifest %s: %v", it.pack, err))
				continue
			}
			deks[c] = dek
		}
		meta, err := restoreItem(root, out, k, dec, dek, it)
		if err != nil {
			rep.failures = append(rep.failures, fmt.Sprintf("item %s in pack %s: %v", it.e.ID, it.pack, err))
			continue
		}
		customers[c] = true
		records[meta.Tenant+"\x00"+meta.CustomerID+"\x00"+meta.RecordKey] = true
	}
	rep.customers, rep.records = len(customers), len(records)
	return rep, nil
}

// restoreItem reads one item from its pack, checks and opens it, and writes its record.
func restoreItem(root, out string, k *kms, dec *zstd.Decoder, dek []byte, it located) (itemMeta, error) {
	var meta itemMeta
	if it.e.Offset < 0 || it.e.Length < 0 {
		return meta, errors.New("bad byte range")
	}
	f, err := os.Open(filepath.Join(root, "packs", it.pack[:2], it.pack))
	if err != nil {
		return meta, err
	}
	defer f.Close()
	c := make([]byte, it.e.Length)
	if _, err := f.ReadAt(c, it.e.Offset); err != nil {
		return meta, fmt.Errorf("read: %w", err)
	}
	sum := sha256.Sum256(c)
	if hex.EncodeToString(sum[:]) != it.e.SHA256 {
		return meta, errors.New("SHA-256 differs from the manifest")
	}
	z, err := open(dek, u16framed("custos-item", it.e.Customer, it.class, it.e.ID), c)
	if err != nil {
		return meta, err
	}
	plain, err := dec.DecodeAll(z, nil)
	if err != nil {
		return meta, fmt.Errorf("decompress: %w", err)
	}
	if len(plain) < 4 {
		return meta, errors.New("short item plaintext")
	}
	n := binary.BigEndian.Uint32(plain)
	if n > maxMeta || int64(n) > int64(len(plain)-4) {
		return meta, errors.New("bad meta length")
	}
	if err := json.Unmarshal(plain[4:4+n], &meta); err != nil || meta.V != 1 {
		return meta, errors.New("bad meta")
	}
	data := plain[4+n:]
	if int64(len(data)) != meta.Size {
		return meta, fmt.Errorf("record is %d bytes, meta says %d", len(data), meta.Size)
	}
	// The identifiers inside must be those the item is filed under.
	if p := k.pseudonym(meta.Tenant, meta.CustomerID); p != it.e.Customer {
		return meta, fmt.Errorf("item holds a record of %s, the manifest files it under %s", p, it.e.Customer)
	}
	dst := filepath.Join(out, escape(meta.Tenant), escape(meta.CustomerID), escape(meta.RecordKey))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return meta, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".indie-*")
	if err != nil {
		return meta, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return meta, err
	}
	return meta, os.Rename(tmp.Name(), dst)
}

// escape makes one path element of any string (design.md section 7): url.PathEscape, and
// "%" + hex + "_" for the strings it leaves empty or as a dot-name.
func escape(s string) string {
	e := url.PathEscape(s)
	if e == "" || e == "." || e == ".." {
		return "%" + hex.EncodeToString([]byte(s)) + "_"
	}
	return e
}
