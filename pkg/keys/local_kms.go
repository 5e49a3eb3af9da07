package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
)

const (
	wrapVersion     = 0x01
	wrapNonceSize   = 12
	wrapDomain      = "custos-dek-v1"
	pseudonymDomain = "custos-pseudonym-v1"
	keyFileVersion  = 1
)

// LocalKMS is the embedded KMS: a KEK and a pseudonym key read from a local key file. The
// file must be kept apart from the backup targets; losing it loses every backup.
type LocalKMS struct {
	keyID        string
	aead         cipher.AEAD
	pseudonymKey []byte
	// retired are earlier KEK versions still held after a rotation: they unwrap, never wrap.
	retired map[string]cipher.AEAD
	// macs keeps keyed HMACs for Pseudonym: a worker takes several pseudonyms per event, and
	// keying a new HMAC costs more than the MAC of the short input itself.
	macs sync.Pool
}

var (
	_ KMS           = (*LocalKMS)(nil)
	_ Pseudonymizer = (*LocalKMS)(nil)
)

// keyFile is the JSON of the key file; []byte fields are standard base64. Version 1 holds one
// KEK (key_id, kek); version 2, written by a rotation, holds every KEK version (keks) and names
// the active one.
type keyFile struct {
	Version      int          `json:"version"`
	KeyID        string       `json:"key_id,omitempty"`
	KEK          []byte       `json:"kek,omitempty"`
	PseudonymKey []byte       `json:"pseudonym_key"`
	Active       string       `json:"active,omitempty"`
	KEKs         []kekVersion `json:"keks,omitempty"`
}

// kekVersion is one KEK of a version 2 key file. A destroyed version keeps its id and the time
// it was destroyed, never its key.
type kekVersion struct {
	KeyID     string `json:"key_id"`
	KEK       []byte `json:"kek,omitempty"`
	Created   string `json:"created,omitempty"`
	Destroyed string `json:"destroyed,omitempty"`
}

// NewLocalKMS returns a KMS for a 32-byte KEK and a 32-byte pseudonym key.
func NewLocalKMS(kek, pseudonymKey []byte) (*LocalKMS, error) {
	if len(kek) != 32 || len(pseudonymKey) != 32 {
		return nil, fmt.Errorf("%w: kek and pseudonym_key must be 32 bytes", ErrKeyFile)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keys: gcm: %w", err)
	}
	return &LocalKMS{keyID: localKeyID(kek), aead: aead, pseudonymKey: append([]byte(nil), pseudonymKey...)}, nil
}

func localKeyID(kek []byte) string {
	sum := sha256.Sum256(kek)
	return "local-" + hex.EncodeToString(sum[:4])
}

// LoadKeyFile reads a key file. A missing file is an error matching fs.ErrNotExist; a
// malformed one matches ErrKeyFile.
func LoadKeyFile(path string) (*LocalKMS, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: read key file: %w", err)
	}
	f, err := parseKeyFile(path, data)
	if err != nil {
		return nil, err
	}
	return f.kms()
}

// parseKeyFile decodes and checks a key file of version 1 or 2, as version 2.
func parseKeyFile(path string, data []byte) (keyFile, error) {
	var f keyFile
	// The decoder's message is dropped: it may quote bytes of the file.
	if json.Unmarshal(data, &f) != nil {
		return f, fmt.Errorf("%w: %s: malformed JSON", ErrKeyFile, path)
	}
	if len(f.PseudonymKey) != 32 {
		return f, fmt.Errorf("%w: %s: pseudonym_key must be 32 bytes", ErrKeyFile, path)
	}
	switch f.Version {
	case 1:
		f = keyFile{Version: 2, PseudonymKey: f.PseudonymKey, Active: f.KeyID,
			KEKs: []kekVersion{{KeyID: f.KeyID, KEK: f.KEK}}}
	case 2:
	case pseudonymFileVersion:
		return f, fmt.Errorf("%w: %s holds no KEK (version 3): keys.backend must name the KMS that holds it", ErrKeyFile, path)
	default:
		return f, fmt.Errorf("%w: %s: version %d, want 1 or 2", ErrKeyFile, path, f.Version)
	}
	active := false
	for _, v := range f.KEKs {
		switch {
		case v.Destroyed != "" && len(v.KEK) == 0:
		case len(v.KEK) != 32:
			return f, fmt.Errorf("%w: %s: kek %s must be 32 bytes", ErrKeyFile, path, v.KeyID)
		case v.KeyID != localKeyID(v.KEK):
			return f, fmt.Errorf("%w: %s: key_id does not match kek", ErrKeyFile, path)
		}
		if v.KeyID == f.Active {
			active = v.Destroyed == ""
		}
	}
	if !active {
		return f, fmt.Errorf("%w: %s: the active KEK %q is missing or destroyed", ErrKeyFile, path, f.Active)
	}
	return f, nil
}

// kms builds the LocalKMS of a parsed key file and clears the file's key bytes.
func (f keyFile) kms() (*LocalKMS, error) {
	var k *LocalKMS
	for _, v := range f.KEKs {
		if v.KeyID == f.Active {
			var err error
			if k, err = NewLocalKMS(v.KEK, f.PseudonymKey); err != nil {
				return nil, err
			}
		}
	}
	for _, v := range f.KEKs {
		if v.KeyID == f.Active || len(v.KEK) == 0 {
			continue
		}
		r, err := NewLocalKMS(v.KEK, f.PseudonymKey)
		if err != nil {
			return nil, err
		}
		if k.retired == nil {
			k.retired = map[string]cipher.AEAD{}
		}
		k.retired[v.KeyID] = r.aead
	}
	for _, v := range f.KEKs {
		clear(v.KEK)
	}
	return k, nil
}

// LoadOrCreateKeyFile reads the key file at path, or creates it with fresh random keys (mode
// 0600, parent directories 0700) if it does not exist. Creation is atomic and create-only, so
// processes racing to create it all end up with the one file that won.
func LoadOrCreateKeyFile(path string) (*LocalKMS, error) {
	k, err := LoadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	f := keyFile{Version: keyFileVersion, KEK: make([]byte, 32), PseudonymKey: make([]byte, 32)}
	if _, err := rand.Read(f.KEK); err != nil {
		return nil, fmt.Errorf("keys: generate kek: %w", err)
	}
	if _, err := rand.Read(f.PseudonymKey); err != nil {
		return nil, fmt.Errorf("keys: generate pseudonym key: %w", err)
	}
	f.KeyID = localKeyID(f.KEK)
	data, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("keys: encode key file: %w", err)
	}
	err = createFile(path, data)
	clear(data)
	if errors.Is(err, fs.ErrExist) {
		return LoadKeyFile(path) // another process created it first: use theirs
	}
	if err != nil {
		return nil, err
	}
	return NewLocalKMS(f.KEK, f.PseudonymKey)
}

// createFile writes data to path only if path does not exist (see installFile).
func createFile(path string, data []byte) error { return installFile(path, data, false) }

// installFile writes data to path, never showing a partial file: temp file in the same
// directory (mode 0600), fsync, then a hard link (create-only: a link, unlike a rename, fails if
// path exists, so a racing creator cannot replace a key already in use) or, with replace, a
// rename (a rotation replacing the file), then an fsync of the directory.
func installFile(path string, data []byte, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keys: create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".custos-key-*")
	if err != nil {
		return fmt.Errorf("keys: create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keys: write key file: %w", err)
	}
	install := os.Link
	if replace {
		install = os.Rename
	}
	if err := install(tmp.Name(), path); err != nil {
		return fmt.Errorf("keys: install key file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keys: sync key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keys: sync key directory: %w", err)
	}
	return nil
}

// KeyID returns "local-" and the first 8 hex digits of SHA-256(KEK).
func (k *LocalKMS) KeyID() string { return k.keyID }

// Wrap seals dek under the KEK with a random nonce, bound to aad.
func (k *LocalKMS) Wrap(_ context.Context, dek, aad []byte) ([]byte, error) {
	out := make([]byte, 1+wrapNonceSize, 1+wrapNonceSize+len(dek)+k.aead.Overhead())
	out[0] = wrapVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("keys: wrap nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:], dek, wrapAD(aad)), nil
}

// Holds reports whether the KMS can unwrap keys wrapped by the KEK named keyID: the active
// KEK or a retired one not yet destroyed.
func (k *LocalKMS) Holds(keyID string) bool {
	_, ok := k.retired[keyID]
	return ok || keyID == k.keyID
}

// Unwrap opens a key made by Wrap with the same aad, under the active KEK or a retired one that
// is still held, or returns ErrUnwrap.
func (k *LocalKMS) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	dek, err := k.unwrap(k.aead, wrapped, aad)
	if err == nil {
		return dek, nil
	}
	for _, a := range k.retired {
		if dek, rerr := k.unwrap(a, wrapped, aad); rerr == nil {
			return dek, nil
		}
	}
	return nil, err
}

func (k *LocalKMS) unwrap(aead cipher.AEAD, wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) < 1+wrapNonceSize+aead.Overhead() || wrapped[0] != wrapVersion {
		return nil, ErrUnwrap
	}
	dek, err := aead.Open(nil, wrapped[1:1+wrapNonceSize], wrapped[1+wrapNonceSize:], wrapAD(aad))
	if err != nil {
		return nil, ErrUnwrap
	}
	return dek, nil
}

func wrapAD(aad []byte) []byte { return append([]byte(wrapDomain), aad...) }

// Pseudonym returns "p" and 32 hex digits of a keyed HMAC of the tenant and customer id: a
// stable name that reveals nothing without the pseudonym key. It is a valid scope, NATS KV
// key and object-name token. It panics if an argument is longer than 65535 bytes;
// identifiers must be bounded where they enter the system.
func (k *LocalKMS) Pseudonym(tenant, customerID string) string {
	m, ok := k.macs.Get().(hash.Hash)
	if ok {
		m.Reset()
	} else {
		m = hmac.New(sha256.New, k.pseudonymKey)
	}
	defer k.macs.Put(m)
	b := make([]byte, 0, len(pseudonymDomain)+4+len(tenant)+len(customerID))
	b = append(b, pseudonymDomain...)
	b = appendField(b, tenant)
	b = appendField(b, customerID)
	m.Write(b)
	var sum [sha256.Size]byte
	return "p" + hex.EncodeToString(m.Sum(sum[:0])[:16])
}

func appendField(b []byte, f string) []byte {
	if len(f) > math.MaxUint16 {
		panic(fmt.Sprintf("keys: pseudonym field of %d bytes exceeds 65535", len(f)))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}
