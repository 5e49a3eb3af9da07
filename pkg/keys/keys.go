// Package keys holds the key hierarchy of Custos: a key-encryption key (KEK) inside a KMS, one
// data key (DEK) per scope wrapped by the KEK, and keyed pseudonyms for customers.
//
// A scope is a customer pseudonym ("p" + 32 hex, see [LocalKMS.Pseudonym]) or a system scope
// such as "catalog". Destroying a scope's DEK (crypto-shredding) makes every copy of data
// encrypted under it unreadable at once, including copies under object lock.
//
// The formats (docs/design.md section 3):
//
//	key file:   {"version":1,"key_id":"local-<8 hex>","kek":"<base64>","pseudonym_key":"<base64>"}
//	wrapped:    0x01 ‖ nonce(12) ‖ AES-256-GCM(KEK, nonce, DEK, ad = "custos-dek-v1" ‖ scope)
//	KV value:   {"v":1,"kms_key_id":"…","wrapped":"<base64>","created":"RFC3339"}
//	destroyed:  {"v":1,"destroyed":"RFC3339"}
//	pseudonym:  "p" ‖ hex(HMAC-SHA256(pseudonym_key,
//	                "custos-pseudonym-v1" ‖ u16(len tenant) ‖ tenant ‖ u16(len customer) ‖ customer)[:16])
package keys

import (
	"context"
	"errors"
)

// DEKSize is the length of a data key.
const DEKSize = 32

// Named errors, matched with errors.Is. No error message carries key material, and none
// carries a rejected scope, which might be a raw customer identifier passed by mistake.
var (
	// ErrNotFound means the scope has no data key yet (Lookup does not create one).
	ErrNotFound = errors.New("keys: data key not found")
	// ErrDestroyed means the scope's data key was destroyed; it is never recreated.
	ErrDestroyed = errors.New("keys: data key destroyed")
	// ErrInvalidScope means a scope is not 1 to 64 characters of [a-z0-9_-].
	ErrInvalidScope = errors.New("keys: invalid scope")
	// ErrUnwrap means a wrapped key could not be unwrapped: another KEK, another scope, or
	// modified bytes.
	ErrUnwrap = errors.New("keys: unwrap data key failed")
	// ErrCorrupt means a stored key record is not well formed.
	ErrCorrupt = errors.New("keys: corrupt key record")
	// ErrKeyFile means a key file is malformed.
	ErrKeyFile = errors.New("keys: invalid key file")
	// ErrStaleKEK means the key store's active KEK is newer than this process's key file (a
	// rotation happened): the process must be restarted with the current key file.
	ErrStaleKEK = errors.New("keys: key file predates the key store's active KEK")
	// ErrBucketConfig means the key bucket is configured in a way that defeats
	// crypto-shredding (it keeps more than one revision per key).
	ErrBucketConfig = errors.New("keys: key bucket keeps history")
)

// KMS holds a key-encryption key and wraps data keys with it. The local key file
// ([LocalKMS]) is the embedded default; Vault transit or a cloud KMS implement the same
// interface. aad binds a wrapped key to its scope: Unwrap with another aad must fail with
// ErrUnwrap.
type KMS interface {
	// KeyID names the KEK; it is stored beside every wrapped key so the right KEK can be
	// chosen after a rotation.
	KeyID() string
	Wrap(ctx context.Context, dek, aad []byte) ([]byte, error)
	Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error)
}

// Pseudonymizer maps a customer to a stable, keyed pseudonym that is safe in object names,
// KV keys, logs and the audit log.
type Pseudonymizer interface {
	Pseudonym(tenant, customerID string) string
	// Fingerprint identifies the pseudonym key without revealing it; catalog objects record it
	// so that a reader with another key stops with an error.
	Fingerprint() string
}

// Store gives the data key of a scope. Implementations must be safe for concurrent use by
// many goroutines and, where shared, many processes: every caller must get the same key for
// a scope, and once Destroy returns, no caller may get the key again (ErrDestroyed).
type Store interface {
	// DataKey returns the scope's key, creating it on first use. It returns ErrDestroyed
	// for a destroyed scope and never creates a new key for it.
	DataKey(ctx context.Context, scope string) ([]byte, error)
	// Lookup returns an existing key: ErrNotFound if none was created, ErrDestroyed if it
	// was destroyed. Restores use it so that they never create keys.
	Lookup(ctx context.Context, scope string) ([]byte, error)
	// Destroy crypto-shreds the scope's key. It is idempotent, and destroying a scope
	// that has no key yet stops one from ever being created.
	Destroy(ctx context.Context, scope string) error
}

// ValidateScope returns ErrInvalidScope unless scope is 1 to 64 characters of [a-z0-9_-],
// which makes it a valid NATS KV key and object-name token.
func ValidateScope(scope string) error {
	if len(scope) == 0 || len(scope) > 64 {
		return ErrInvalidScope
	}
	for i := range len(scope) {
		c := scope[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return ErrInvalidScope
		}
	}
	return nil
}
