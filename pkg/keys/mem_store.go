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
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

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
	return nil
}

// cloneKey returns a copy a caller may keep or modify, or ErrDestroyed for a destroyed key.
func cloneKey(dek []byte) ([]byte, error) {
	if dek == nil {
		return nil, ErrDestroyed
	}
	return bytes.Clone(dek), nil
}
