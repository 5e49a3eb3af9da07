// Package keystest is the conformance suite every keys.Store implementation runs.
package keystest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/pkg/keys"
)

// Run checks the keys.Store contract. newStore must return a fresh, empty store for each
// call; it registers its own cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) keys.Store) {
	t.Helper()
	ctx := context.Background()

	t.Run("CreateOnFirstUse", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if _, err := s.Lookup(ctx, "p01"); !errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("Lookup before creation: err = %v, want ErrNotFound", err)
		}
		dek, err := s.DataKey(ctx, "p01")
		if err != nil {
			t.Fatalf("DataKey: %v", err)
		}
		if len(dek) != keys.DEKSize || bytes.Equal(dek, make([]byte, keys.DEKSize)) {
			t.Fatalf("DataKey returned %d bytes, or all zero", len(dek))
		}
		got, err := s.Lookup(ctx, "p01")
		if err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("Lookup after creation: err = %v, same key = %v", err, bytes.Equal(got, dek))
		}
	})

	t.Run("StableAndDistinct", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		a1 := mustKey(t, s, "catalog")
		a1[0] ^= 0xff // a caller modifying its copy must not change the stored key
		a2 := mustKey(t, s, "catalog")
		a1[0] ^= 0xff
		if !bytes.Equal(a1, a2) {
			t.Fatal("DataKey returned a different key on the second call")
		}
		if b := mustKey(t, s, "p02"); bytes.Equal(a2, b) {
			t.Fatal("two scopes share a key")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		const n = 8
		got := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = s.DataKey(ctx, "p03") })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
				t.Fatalf("goroutine %d: err = %v, same key = %v", i, errs[i], bytes.Equal(got[i], got[0]))
			}
		}
	})

	t.Run("Destroy", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		mustKey(t, s, "p04")
		other := mustKey(t, s, "p05")
		for range 2 { // idempotent
			if err := s.Destroy(ctx, "p04"); err != nil {
				t.Fatalf("Destroy: %v", err)
			}
		}
		if _, err := s.Lookup(ctx, "p04"); !errors.Is(err, keys.ErrDestroyed) {
			t.Fatalf("Lookup after Destroy: err = %v, want ErrDestroyed", err)
		}
		if _, err := s.DataKey(ctx, "p04"); !errors.Is(err, keys.ErrDestroyed) {
			t.Fatalf("DataKey after Destroy: err = %v, want ErrDestroyed", err)
		}
		if got := mustKey(t, s, "p05"); !bytes.Equal(got, other) {
			t.Fatal("Destroy changed another scope's key")
		}
	})

	t.Run("DestroyedNeverCreated", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.Destroy(ctx, "p06"); err != nil {
			t.Fatalf("Destroy of a scope without key: %v", err)
		}
		for range 3 {
			if _, err := s.DataKey(ctx, "p06"); !errors.Is(err, keys.ErrDestroyed) {
				t.Fatalf("DataKey: err = %v, want ErrDestroyed", err)
			}
		}
		if _, err := s.Lookup(ctx, "p06"); !errors.Is(err, keys.ErrDestroyed) {
			t.Fatalf("Lookup: err = %v, want ErrDestroyed", err)
		}
	})

	t.Run("InvalidScope", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		for _, scope := range []string{"", "P01", "a b", "a.b", "a/b", "a*", ">", "ü", "alice@example.com", strings.Repeat("a", 65)} {
			if _, err := s.DataKey(ctx, scope); !errors.Is(err, keys.ErrInvalidScope) {
				t.Errorf("DataKey(%q): err = %v, want ErrInvalidScope", scope, err)
			}
			if _, err := s.Lookup(ctx, scope); !errors.Is(err, keys.ErrInvalidScope) {
				t.Errorf("Lookup(%q): err = %v, want ErrInvalidScope", scope, err)
			}
			if err := s.Destroy(ctx, scope); !errors.Is(err, keys.ErrInvalidScope) {
				t.Errorf("Destroy(%q): err = %v, want ErrInvalidScope", scope, err)
			}
		}
		for _, scope := range []string{"a", "catalog", "p0123456789abcdef0123456789abcdef", "a_b-c", strings.Repeat("z", 64)} {
			if _, err := s.DataKey(ctx, scope); err != nil {
				t.Errorf("DataKey(%q): %v", scope, err)
			}
		}
	})
}

func mustKey(t *testing.T, s keys.Store, scope string) []byte {
	t.Helper()
	dek, err := s.DataKey(context.Background(), scope)
	if err != nil {
		t.Fatal(fmt.Errorf("DataKey(%s): %w", scope, err))
	}
	return dek
}
