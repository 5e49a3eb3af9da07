package pkcs11kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/custos-dev/custos/pkg/keys"
)

const (
	wrapVersion = 0x02
	ivSize      = 12
	tagSize     = 16
	wrapDomain  = "custos-dek-v1"

	// DefaultLabelPrefix is the CKA_LABEL prefix of the KEK versions when Config leaves it empty.
	DefaultLabelPrefix = "custos-kek"
)

// Named errors, matched with errors.Is. None carries key material or a PIN.
var (
	// ErrPIN means the token rejected the PIN, or this process is logged in to the token with
	// another one.
	ErrPIN = errors.New("pkcs11kms: PIN rejected")
	// ErrToken means the token was not found (or not initialized) in the module.
	ErrToken = errors.New("pkcs11kms: token not found")
	// ErrNoKEK means the token holds no KEK version and Open was not asked to create one.
	ErrNoKEK = errors.New("pkcs11kms: no KEK on the token")
	// ErrObject means a key object under the label prefix is not a usable KEK version.
	ErrObject = errors.New("pkcs11kms: invalid KEK object")
	// ErrClosed means the ring was closed.
	ErrClosed = errors.New("pkcs11kms: ring closed")
	// errGone means a KEK version's object disappeared from the token after it was read
	// (another process destroyed it).
	errGone = errors.New("pkcs11kms: KEK version no longer on the token")
)

// Config says how to reach the token.
type Config struct {
	// Module is the path of the vendor's PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel names the token (CKA_LABEL of the token, at most 32 bytes); it must be unique
	// among the module's tokens.
	TokenLabel string
	// PIN is the token's user PIN.
	PIN string
	// LabelPrefix starts the CKA_LABEL of every KEK version; DefaultLabelPrefix when empty.
	LabelPrefix string
}

func (c Config) withDefaults() (Config, error) {
	if c.LabelPrefix == "" {
		c.LabelPrefix = DefaultLabelPrefix
	}
	switch {
	case c.Module == "":
		return c, errors.New("pkcs11kms: config: Module (the PKCS#11 library path) is required")
	case c.TokenLabel == "" || len(c.TokenLabel) > 32:
		return c, errors.New("pkcs11kms: config: TokenLabel must be 1 to 32 bytes")
	case c.PIN == "":
		return c, errors.New("pkcs11kms: config: PIN is required")
	}
	return c, nil
}

// Ring is a keys.Ring whose KEK versions are AES-256 key objects on a PKCS#11 token. It is
// safe for concurrent use; Rotate and DestroyRetired are serialized.
type Ring struct {
	token  string
	prefix string
	m      *module
	slot   uint
	pool   *sessions

	admin sync.Mutex // serializes Rotate and DestroyRetired

	mu sync.RWMutex
	vs versions // guarded by mu, as are the handles of its versions

	closeOnce sync.Once
}

var _ keys.Ring = (*Ring)(nil)

// Open logs in to the token named by cfg and reads its KEK versions. With create and no
// version on the token, it generates version 1; without create, it fails with ErrNoKEK.
// Close releases the sessions.
func Open(ctx context.Context, cfg Config, create bool) (*Ring, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	slot, err := m.findToken(cfg.TokenLabel)
	if err != nil {
		m.release()
		return nil, err
	}
	sh, err := openSession(m, slot, cfg.TokenLabel)
	if err != nil {
		m.release()
		return nil, err
	}
	if err := m.login(sh, slot, cfg.TokenLabel, cfg.PIN); err != nil {
		_ = m.ctx.CloseSession(sh)
		m.release()
		return nil, err
	}
	r := &Ring{token: cfg.TokenLabel, prefix: cfg.LabelPrefix, m: m, slot: slot,
		pool: newSessions(m, slot, cfg.TokenLabel, cfg.PIN, sh)}
	if err := r.load(ctx, create); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// load reads the versions, generating version 1 on an empty token when create is set.
func (r *Ring) load(ctx context.Context, create bool) error {
	r.admin.Lock()
	defer r.admin.Unlock()
	return r.pool.do(ctx, func(sh p11.SessionHandle) error {
		vs, err := scan(r.m.ctx, sh, r.token, r.prefix)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			if !create {
				return fmt.Errorf("%w: token %q holds no key labelled %s (open with create to generate version 1)",
					ErrNoKEK, r.token, versionLabel(r.prefix, 1))
			}
			if err := generate(r.m.ctx, sh, r.token, r.prefix, 1, nil); err != nil {
				return err
			}
			if vs, err = scan(r.m.ctx, sh, r.token, r.prefix); err != nil {
				return err
			}
		}
		r.set(vs)
		return nil
	})
}

func (r *Ring) set(vs versions) {
	r.mu.Lock()
	r.vs = vs
	r.mu.Unlock()
}

func (r *Ring) versions() versions {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.vs
}

// KeyID names the active version: "p11-" and the hex of its CKA_ID.
func (r *Ring) KeyID() string { return r.versions().active().keyID }

// Holds reports whether keyID names the active version or a retired one still held.
func (r *Ring) Holds(keyID string) bool { return r.versions().byKeyID(keyID) != nil }

// Wrap seals dek under the active version inside the token, bound to aad.
func (r *Ring) Wrap(ctx context.Context, dek, aad []byte) ([]byte, error) {
	if len(dek) == 0 {
		return nil, errors.New("pkcs11kms: wrap: empty data key")
	}
	v := r.versions().active()
	iv := make([]byte, ivSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("pkcs11kms: wrap iv: %w", err)
	}
	var ct []byte
	err := r.withKey(ctx, v, func(sh p11.SessionHandle, h p11.ObjectHandle) error {
		params := p11.NewGCMParams(iv, wrapAD(aad), tagSize*8)
		defer params.Free()
		if err := r.m.ctx.EncryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		out, err := r.m.ctx.Encrypt(sh, dek)
		if err != nil {
			return err
		}
		// Some tokens ignore the IV given and write their own back: record the one used.
		if used := params.IV(); !bytes.Equal(used, iv) {
			if len(used) != ivSize {
				return fmt.Errorf("token used a %d-byte IV", len(used))
			}
			copy(iv, used)
		}
		ct = out
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11kms: wrap under %s on token %q: %w", v.keyID, r.token, err)
	}
	if len(ct) != len(dek)+tagSize {
		return nil, fmt.Errorf("pkcs11kms: wrap under %s on token %q: ciphertext of %d bytes for a %d-byte key",
			v.keyID, r.token, len(ct), len(dek))
	}
	out := make([]byte, 0, 2+len(v.id)+ivSize+len(ct))
	out = append(out, wrapVersion, byte(len(v.id)))
	out = append(out, v.id...)
	out = append(out, iv...)
	return append(out, ct...), nil
}

// Unwrap opens a key made by Wrap with the same aad, under the version named in it. It returns
// keys.ErrUnwrap for malformed or modified bytes, another aad, or a version not held; a
// failure of the token itself is another error.
func (r *Ring) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) < 2 || wrapped[0] != wrapVersion || wrapped[1] == 0 {
		return nil, keys.ErrUnwrap
	}
	n := int(wrapped[1])
	if len(wrapped) < 2+n+ivSize+tagSize {
		return nil, keys.ErrUnwrap
	}
	id, iv, ct := wrapped[2:2+n], wrapped[2+n:2+n+ivSize], wrapped[2+n+ivSize:]
	v := r.versions().byID(id)
	if v == nil {
		return nil, keys.ErrUnwrap
	}
	var dek []byte
	err := r.withKey(ctx, v, func(sh p11.SessionHandle, h p11.ObjectHandle) error {
		params := p11.NewGCMParams(bytes.Clone(iv), wrapAD(aad), tagSize*8)
		defer params.Free()
		if err := r.m.ctx.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		var err error
		if dek, err = r.m.ctx.Decrypt(sh, ct); err != nil {
			return fmt.Errorf("%w: %w", errDecrypt, err)
		}
		return nil
	})
	switch {
	case err == nil:
		return dek, nil
	case errors.Is(err, errGone), rejected(err):
		return nil, keys.ErrUnwrap
	}
	return nil, fmt.Errorf("pkcs11kms: unwrap under %s on token %q: %w", v.keyID, r.token, err)
}

// errDecrypt marks an error of C_Decrypt, after the token accepted key and parameters.
var errDecrypt = errors.New("decrypt")

// rejected reports whether the token refused the wrapped bytes rather than failed itself.
// Tokens differ in the code they return for a failed tag: SoftHSM2 2.6 returns
// CKR_GENERAL_ERROR, others CKR_ENCRYPTED_DATA_INVALID or, since PKCS#11 3.0,
// CKR_AEAD_DECRYPT_FAILED. So any failure of C_Decrypt counts, but for those that say the
// session, the device or its memory failed.
func rejected(err error) bool {
	if isCode(err, p11.CKR_MECHANISM_PARAM_INVALID) {
		return true // from C_DecryptInit: an IV or tag the token will not take
	}
	if !errors.Is(err, errDecrypt) || brokenSession(err) {
		return false
	}
	return !isCode(err, p11.CKR_HOST_MEMORY) && !isCode(err, p11.CKR_DEVICE_MEMORY) &&
		!isCode(err, p11.CKR_FUNCTION_CANCELED)
}

// withKey runs fn with a session and v's object handle. If the token no longer knows the
// handle, the object is looked up again by its CKA_ID once; errGone if it was destroyed.
func (r *Ring) withKey(ctx context.Context, v *version, fn func(sh p11.SessionHandle, h p11.ObjectHandle) error) error {
	return r.pool.do(ctx, func(sh p11.SessionHandle) error {
		r.mu.RLock()
		h := v.handle
		r.mu.RUnlock()
		err := fn(sh, h)
		if !isCode(err, p11.CKR_KEY_HANDLE_INVALID) && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return err
		}
		h, ok, err := findHandle(r.m.ctx, sh, v)
		if err != nil {
			return err
		}
		if !ok {
			return errGone
		}
		r.mu.Lock()
		v.handle = h
		r.mu.Unlock()
		return fn(sh, h)
	})
}

func wrapAD(aad []byte) []byte { return append([]byte(wrapDomain), aad...) }

// Rotate generates the next version on the token and makes it active. It reads the token's
// versions first, so the new number follows the highest one there, seen by this ring or not.
func (r *Ring) Rotate(ctx context.Context) (oldID, newID string, err error) {
	r.admin.Lock()
	defer r.admin.Unlock()
	err = r.pool.do(ctx, func(sh p11.SessionHandle) error {
		vs, err := scan(r.m.ctx, sh, r.token, r.prefix)
		if err != nil {
			return err
		}
		old := vs.active()
		if old == nil {
			return fmt.Errorf("%w: token %q holds no KEK version to rotate from", ErrNoKEK, r.token)
		}
		if err := generate(r.m.ctx, sh, r.token, r.prefix, old.num+1, vs); err != nil {
			return err
		}
		if vs, err = scan(r.m.ctx, sh, r.token, r.prefix); err != nil {
			return err
		}
		if vs.active().num != old.num+1 {
			return fmt.Errorf("pkcs11kms: rotate on token %q: version %d appeared alongside ours; rotations must not run concurrently",
				r.token, vs.active().num)
		}
		r.set(vs)
		oldID, newID = old.keyID, vs.active().keyID
		return nil
	})
	if err != nil {
		return "", "", err
	}
	return oldID, newID, nil
}

// Retired returns the ids of the retired versions on the token, read anew.
func (r *Ring) Retired(ctx context.Context) ([]string, error) {
	var ids []string
	err := r.pool.do(ctx, func(sh p11.SessionHandle) error {
		vs, err := scan(r.m.ctx, sh, r.token, r.prefix)
		ids = vs.retiredIDs()
		return err
	})
	return ids, err
}

// DestroyRetired destroys, with C_DestroyObject, every version on the token but the highest,
// and returns their ids. Callers must first have re-wrapped every live data key under the
// active version: what the destroyed versions wrapped never opens again.
func (r *Ring) DestroyRetired(ctx context.Context) ([]string, error) {
	r.admin.Lock()
	defer r.admin.Unlock()
	var gone []string
	err := r.pool.do(ctx, func(sh p11.SessionHandle) error {
		vs, err := scan(r.m.ctx, sh, r.token, r.prefix)
		if err != nil {
			return err
		}
		for _, v := range vs[:max(len(vs)-1, 0)] {
			err := r.m.ctx.DestroyObject(sh, v.handle)
			if err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				err = fmt.Errorf("pkcs11kms: destroy %q on token %q: %w", v.label, r.token, err)
				if vs, serr := scan(r.m.ctx, sh, r.token, r.prefix); serr == nil {
					r.set(vs)
				}
				return err
			}
			gone = append(gone, v.keyID)
		}
		if vs, err = scan(r.m.ctx, sh, r.token, r.prefix); err != nil {
			return err
		}
		r.set(vs)
		return nil
	})
	return gone, err
}

// Close closes the ring's sessions, waiting for operations in flight. It is idempotent; the
// ring fails with ErrClosed afterwards.
func (r *Ring) Close() error {
	r.closeOnce.Do(func() {
		r.pool.close()
		r.m.logout(r.slot)
		r.m.release()
	})
	return nil
}
