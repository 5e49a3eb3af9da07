package keys

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Envelope is a data key wrapped by a KEK, as stored in the key store and in the targets
// (docs/design.md sections 3 and 11). It holds no secret: only the KEK opens it.
type Envelope struct {
	KEK string `json:"kek"` // KMS key id of the wrapping KEK
	DEK []byte `json:"dek"` // the wrapped data key
}

// Open unwraps e for scope with kms. It returns ErrUnwrap when kms does not hold e's KEK or
// the envelope belongs to another scope.
func (e Envelope) Open(ctx context.Context, kms KMS, scope string) ([]byte, error) {
	if e.KEK != kms.KeyID() {
		return nil, fmt.Errorf("keys: data key of %s is wrapped by KMS key %q, not %q: %w", scope, e.KEK, kms.KeyID(), ErrUnwrap)
	}
	dek, err := kms.Unwrap(ctx, e.DEK, []byte(scope))
	if err != nil {
		return nil, fmt.Errorf("keys: unwrap data key of %s: %w", scope, err)
	}
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("%w: %s: data key of %d bytes", ErrCorrupt, scope, len(dek))
	}
	return dek, nil
}

// EnvelopeStore is a Store that also gives the wrapped form of a scope's key, which the
// workers copy into every manifest so that the targets alone can be restored from.
type EnvelopeStore interface {
	Store
	// Envelope returns the scope's wrapped key, creating the key on first use like DataKey.
	Envelope(ctx context.Context, scope string) (Envelope, error)
}

var _ EnvelopeStore = (*KVStore)(nil)

// pseudonymCheckDomain is the HMAC input of the pseudonym-key fingerprint.
const pseudonymCheckDomain = "custos-pseudonym-check-v1"

// Fingerprint identifies the pseudonym key without revealing it: hex of the first 8 bytes of
// HMAC-SHA256(pseudonym_key, "custos-pseudonym-check-v1"). Every catalog object records it, so
// a reader with another key file stops with an error instead of finding no customer.
func (k *LocalKMS) Fingerprint() string {
	m := hmac.New(sha256.New, k.pseudonymKey)
	m.Write([]byte(pseudonymCheckDomain))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// Envelope returns the scope's wrapped key, creating the key on first use.
func (s *KVStore) Envelope(ctx context.Context, scope string) (Envelope, error) {
	if err := ValidateScope(scope); err != nil {
		return Envelope{}, err
	}
	if e, _, ok := s.cached(scope); ok && e.destroyed {
		return Envelope{}, ErrDestroyed
	} else if ok && e.env.DEK != nil {
		return e.env, nil
	}
	if _, err := s.DataKey(ctx, scope); err != nil {
		return Envelope{}, err
	}
	if e, _, ok := s.cached(scope); ok && e.env.DEK != nil {
		return e.env, nil
	}
	r, err := s.read(ctx, scope) // the cache is off or was just invalidated
	if err != nil {
		return Envelope{}, err
	}
	if r.Destroyed != "" {
		return Envelope{}, ErrDestroyed
	}
	return Envelope{KEK: r.KMSKeyID, DEK: r.Wrapped}, nil
}

// Import stores a wrapped key read from a target (catalog rebuild), create-only: a key the
// store already has, or a destroyed marker, is kept. It checks that the envelope opens.
func (s *KVStore) Import(ctx context.Context, scope string, e Envelope) error {
	if err := ValidateScope(scope); err != nil {
		return err
	}
	if _, err := e.Open(ctx, s.kms, scope); err != nil {
		return err
	}
	val, err := json.Marshal(record{V: 1, KMSKeyID: e.KEK, Wrapped: e.DEK, Created: s.now().UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, scope, val); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("keys: import data key of %s: %w", scope, err)
	}
	return nil
}

// Raw returns the scope's record as stored: ErrNotFound when absent, ErrDestroyed when marked
// destroyed, else its envelope. It neither creates nor unwraps.
func (s *KVStore) Raw(ctx context.Context, scope string) (Envelope, error) {
	r, err := s.read(ctx, scope)
	if err != nil {
		return Envelope{}, err
	}
	if r.Destroyed != "" {
		return Envelope{}, ErrDestroyed
	}
	return Envelope{KEK: r.KMSKeyID, DEK: r.Wrapped}, nil
}
