package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
)

// MemStore is a Store in process memory, for tests and benchmarks. Keys are not wrapped and
// are lost with the process. The zero value is ready to use.
type MemStore struct {
	mu   sync.Mutex
	keys map[string][]byte // nil value: destroyed
	kms  KMS
	envs map[string]Envelope
}

var _ EnvelopeStore = (*MemStore)(nil)

// NewMemStore returns an empty MemStore. Its Envelope fails: use NewMemStoreWithKMS where
// manifests are written.
func NewMemStore() *MemStore { return &MemStore{} }

// NewMemStoreWithKMS returns an empty MemStore whose Envelope wraps keys with kms.
func NewMemStoreWithKMS(kms KMS) *MemStore { return &MemStore{kms: kms} }

// Envelope returns the scope's key wrapped by the store's KMS, creating the key on first use.
func (s *MemStore) Envelope(ctx context.Context, scope string) (Envelope, error) {
	dek, err := s.DataKey(ctx, scope)
	if err != nil {
		return Envelope{}, err
	}
	if s.kms == nil {
		return Envelope{}, fmt.Errorf("keys: MemStore without a KMS cannot wrap keys")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.envs[scope]; ok {
		return e, nil
	}
	wrapped, err := s.kms.Wrap(ctx, dek, []byte(scope))
	if err != nil {
		return Envelope{}, err
	}
	if s.envs == nil {
		s.envs = make(map[string]Envelope)
	}
	e := Envelope{KEK: s.kms.KeyID(), DEK: wrapped}
	s.envs[scope] = e
	return e, nil
}

// DataKey returns the scope's key, creating it on first use.
func (s *MemStore) DataKey(_ context.Context, scope string) ([]byte, error) {
	if err := ValidateScope(scope); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if dek, ok := s.keys[scope]; ok {
		return cloneKey(dek)
	}
	dek := make([]byte, DEKSize)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("keys: generate data key: %w", err)
	}
	if s.keys == nil {
		s.keys = make(map[string][]byte)
	}
	s.keys[scope] = dek
	return bytes.Clone(dek), nil
}

// Lookup returns an existing key.
func (s *MemStore) Lookup(_ context.Context, scope string) ([]byte, error) {
	if err := ValidateScope(scope); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dek, ok := s.keys[scope]
	if !ok {
		return nil, ErrNotFound
	}
	return cloneKey(dek)
}

// Destroy forgets the scope's key for good.
func (s *MemStore) Destroy(_ context.Context, scope string) error {
	if err := ValidateScope(scope); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[string][]byte)
	}
	clear(s.keys[scope])
	s.keys[scope] = nil
	delete(s.envs, scope)
	return nil
}

// cloneKey returns a copy a caller may keep or modify, or ErrDestroyed for a destroyed key.
func cloneKey(dek []byte) ([]byte, error) {
	if dek == nil {
		return nil, ErrDestroyed
	}
	return bytes.Clone(dek), nil
}
