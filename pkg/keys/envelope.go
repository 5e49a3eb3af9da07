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
	if !Holds(kms, e.KEK) {
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

// Holds reports whether kms can unwrap keys wrapped by the KEK named keyID: its active KEK, or
// a retired one it still holds (a KMS with versions, like the rotated key file).
func Holds(kms KMS, keyID string) bool {
	if h, ok := kms.(interface{ Holds(string) bool }); ok {
		return h.Holds(keyID)
	}
	return keyID == kms.KeyID()
}

// Rewrap re-wraps every live data key the store holds under the KMS's active KEK (after a
// rotation), with a compare-and-set per key so that a concurrent destroy wins. It returns how
// many keys it re-wrapped and how many live keys the store holds. Destroyed scopes are left
// alone: their keys are gone.
func (s *KVStore) Rewrap(ctx context.Context) (rewrapped, live int, err error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("keys: list data keys: %w", err)
	}
	var scopes []string
	for k := range lister.Keys() {
		if ValidateScope(k) == nil { // not ActiveKEKKey
			scopes = append(scopes, k)
		}
	}
	for _, scope := range scopes {
		for attempt := 0; ; attempt++ {
			done, isLive, err := s.rewrapOne(ctx, scope)
			if err == nil {
				if isLive {
					live++
				}
				if done {
					rewrapped++
				}
				break
			}
			if !errors.Is(err, jetstream.ErrKeyExists) || attempt == 3 {
				return rewrapped, live, err
			}
		}
	}
	return rewrapped, live, nil
}

// rewrapOne re-wraps one scope's key if it is live and wrapped by another KEK than the active one.
func (s *KVStore) rewrapOne(ctx context.Context, scope string) (done, live bool, err error) {
	entry, err := s.kv.Get(ctx, scope)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("keys: read data key of %s: %w", scope, err)
	}
	var r record
	if err := json.Unmarshal(entry.Value(), &r); err != nil || r.V != 1 {
		return false, false, fmt.Errorf("%w: %s", ErrCorrupt, scope)
	}
	if r.Destroyed != "" {
		return false, false, nil
	}
	if r.KMSKeyID == s.kms.KeyID() {
		return false, true, nil
	}
	dek, err := Envelope{KEK: r.KMSKeyID, DEK: r.Wrapped}.Open(ctx, s.kms, scope)
	if err != nil {
		return false, true, err
	}
	defer clear(dek)
	wrapped, err := s.kms.Wrap(ctx, dek, []byte(scope))
	if err != nil {
		return false, true, fmt.Errorf("keys: wrap data key of %s: %w", scope, err)
	}
	r.KMSKeyID, r.Wrapped = s.kms.KeyID(), wrapped
	val, err := json.Marshal(r)
	if err != nil {
		return false, true, err
	}
	if _, err := s.kv.Update(ctx, scope, val, entry.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, true, jetstream.ErrKeyExists
		}
		return false, true, fmt.Errorf("keys: store re-wrapped data key of %s: %w", scope, err)
	}
	s.invalidate(scope, false)
	return true, true, nil
}

// Live returns the envelope of every live data key the store holds, by scope.
func (s *KVStore) Live(ctx context.Context) (map[string]Envelope, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: list data keys: %w", err)
	}
	var scopes []string
	for k := range lister.Keys() {
		if ValidateScope(k) == nil { // not ActiveKEKKey
			scopes = append(scopes, k)
		}
	}
	out := map[string]Envelope{}
	for _, scope := range scopes {
		env, err := s.Raw(ctx, scope)
		if errors.Is(err, ErrDestroyed) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[scope] = env
	}
	return out, nil
}

// ActiveKEKKey is the key-store entry naming the active KEK once a rotation happened. It is not
// a scope (scopes have no dot), so no data key can take its place.
const ActiveKEKKey = "meta.active_kek"

// SetActiveKEK records the KMS's active KEK in the store after a rotation: from then on a
// process whose key file predates it creates no key and does not start (ErrStaleKEK).
func (s *KVStore) SetActiveKEK(ctx context.Context) error {
	if _, err := s.kv.Put(ctx, ActiveKEKKey, []byte(s.kms.KeyID())); err != nil {
		return fmt.Errorf("keys: record the active KEK: %w", err)
	}
	return nil
}
