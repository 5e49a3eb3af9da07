package keys

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Ring is a KMS whose KEK has versions: the active version wraps; retired versions still
// unwrap until they are destroyed. Every KEK backend (the key file, PKCS#11, AWS KMS)
// implements it; docs/design.md section 12 describes each.
//
// The contract, checked by keystest.RunRing:
//   - KeyID names the active version and changes with every Rotate; ids are never reused.
//   - Unwrap opens a key wrapped by the active version or by a retired version still held, and
//     fails with ErrUnwrap for another aad, modified bytes, or a destroyed version.
//   - Rotate creates a new version and makes it active; the previous one is retired.
//   - DestroyRetired destroys every retired version for good, and is idempotent. Keys wrapped by
//     them never open again, here or in any process.
//   - State read at open: a process sees another process's rotation only when it opens the ring
//     again (the key store's meta.active_kek catches a stale process, see ErrStaleKEK).
//
// Rotations and destroys must not run concurrently with each other on one ring.
type Ring interface {
	KMS
	// Holds reports whether keyID names the active version or a retired one still held.
	Holds(keyID string) bool
	// Rotate makes a new version active and returns the previous and the new ids.
	Rotate(ctx context.Context) (oldID, newID string, err error)
	// Retired returns the ids of retired versions not yet destroyed.
	Retired(ctx context.Context) ([]string, error)
	// DestroyRetired destroys every retired version and returns their ids.
	DestroyRetired(ctx context.Context) ([]string, error)
	// Close releases the backend's sessions or clients.
	Close() error
}

// Keyring is what a process holds: the KEK versions of one backend and the pseudonym key. It
// is a KMS, a Ring and a Pseudonymizer.
type Keyring struct {
	Ring
	pseudo Pseudonyms
}

// Pseudonyms is what the pseudonym key gives: pseudonyms and derived signing keys.
type Pseudonyms interface {
	Pseudonymizer
	Signer
}

var (
	_ Ring          = (*Keyring)(nil)
	_ Pseudonymizer = (*Keyring)(nil)
)

// NewKeyring joins a KEK ring and a pseudonymizer.
func NewKeyring(r Ring, p Pseudonyms) *Keyring { return &Keyring{Ring: r, pseudo: p} }

// Pseudonym returns the customer's keyed pseudonym (see [LocalKMS.Pseudonym]).
func (k *Keyring) Pseudonym(tenant, customerID string) string {
	return k.pseudo.Pseudonym(tenant, customerID)
}

// Fingerprint identifies the pseudonym key.
func (k *Keyring) Fingerprint() string { return k.pseudo.Fingerprint() }

// FileRing is the key-file backend: every KEK version lives in the local key file (version 2).
type FileRing struct {
	path string
	now  func() time.Time

	mu  sync.RWMutex
	kms *LocalKMS
}

var _ Ring = (*FileRing)(nil)

// OpenFileRing loads the key file at path, creating it with fresh keys when create is set and
// it does not exist.
func OpenFileRing(path string, create bool) (*FileRing, error) {
	load := LoadKeyFile
	if create {
		load = LoadOrCreateKeyFile
	}
	k, err := load(path)
	if err != nil {
		return nil, err
	}
	return &FileRing{path: path, now: time.Now, kms: k}, nil
}

// LocalKMS returns the key file's current state: its active and held retired KEKs and the
// pseudonym key.
func (r *FileRing) LocalKMS() *LocalKMS {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.kms
}

// KeyID names the active KEK version.
func (r *FileRing) KeyID() string { return r.LocalKMS().KeyID() }

// Wrap wraps dek under the active version.
func (r *FileRing) Wrap(ctx context.Context, dek, aad []byte) ([]byte, error) {
	return r.LocalKMS().Wrap(ctx, dek, aad)
}

// Unwrap opens a key wrapped by the active or a held retired version.
func (r *FileRing) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	return r.LocalKMS().Unwrap(ctx, wrapped, aad)
}

// Holds reports whether keyID is the active version or a held retired one.
func (r *FileRing) Holds(keyID string) bool { return r.LocalKMS().Holds(keyID) }

// Rotate adds a KEK version to the key file and makes it active (see RotateKeyFile).
func (r *FileRing) Rotate(_ context.Context) (string, string, error) {
	oldID, newID, err := RotateKeyFile(r.path, r.now())
	if err != nil {
		return "", "", err
	}
	return oldID, newID, r.reload()
}

// Retired returns the retired versions the key file still holds.
func (r *FileRing) Retired(_ context.Context) ([]string, error) { return RetiredKEKs(r.path) }

// DestroyRetired removes the retired versions' key bytes from the key file.
func (r *FileRing) DestroyRetired(_ context.Context) ([]string, error) {
	gone, err := DestroyRetiredKEKs(r.path, r.now())
	if err != nil {
		return nil, err
	}
	return gone, r.reload()
}

// Close does nothing: the key file is read at open.
func (r *FileRing) Close() error { return nil }

func (r *FileRing) reload() error {
	k, err := LoadKeyFile(r.path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.kms = k
	r.mu.Unlock()
	return nil
}

// pseudonymFileVersion is the key file of a process whose KEKs live in an external KMS: it
// holds the pseudonym key only.
const pseudonymFileVersion = 3

// LoadPseudonyms reads the pseudonym key from a key file of any version. With create, a
// missing file is created holding a fresh pseudonym key and no KEK (version 3), for the
// backends that keep the KEK outside the file.
func LoadPseudonyms(path string, create bool) (Pseudonyms, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		f := keyFile{Version: pseudonymFileVersion, PseudonymKey: make([]byte, 32)}
		if _, err := rand.Read(f.PseudonymKey); err != nil {
			return nil, fmt.Errorf("keys: generate pseudonym key: %w", err)
		}
		data, err := json.Marshal(f)
		if err != nil {
			return nil, err
		}
		err = createFile(path, data)
		clear(data)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		return LoadPseudonyms(path, false)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: read key file: %w", err)
	}
	defer clear(data)
	var f keyFile
	if json.Unmarshal(data, &f) != nil {
		return nil, fmt.Errorf("%w: %s: malformed JSON", ErrKeyFile, path)
	}
	if f.Version < 1 || f.Version > pseudonymFileVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want 1 to 3", ErrKeyFile, path, f.Version)
	}
	if len(f.PseudonymKey) != 32 {
		return nil, fmt.Errorf("%w: %s: pseudonym_key must be 32 bytes", ErrKeyFile, path)
	}
	return pseudonymsOnly{&LocalKMS{pseudonymKey: append([]byte(nil), f.PseudonymKey...)}}, nil
}

// pseudonymsOnly exposes the pseudonym key of a LocalKMS that holds no KEK.
type pseudonymsOnly struct{ k *LocalKMS }

func (p pseudonymsOnly) Pseudonym(tenant, customerID string) string {
	return p.k.Pseudonym(tenant, customerID)
}

func (p pseudonymsOnly) Fingerprint() string { return p.k.Fingerprint() }

// Path returns the key file's path.
func (r *FileRing) Path() string { return r.path }
