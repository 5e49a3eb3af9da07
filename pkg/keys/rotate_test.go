package keys_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
)

var rotatedAt = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// A rotation adds a KEK version that wraps from then on; the retired one still unwraps until it
// is destroyed, after which nothing it wrapped opens: that is what completes an erasure of
// copies under object lock (an erased customer's key is never re-wrapped).
func TestRotateAndDestroyKeyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "custos.key")
	k1, err := keys.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dek := make([]byte, keys.DEKSize)
	dek[0] = 7
	wrapped1, err := k1.Wrap(ctx, dek, []byte("perased"))
	if err != nil {
		t.Fatal(err)
	}
	oldID, newID, err := keys.RotateKeyFile(path, rotatedAt)
	if err != nil || oldID != k1.KeyID() || newID == oldID {
		t.Fatalf("RotateKeyFile = %s, %s, %v", oldID, newID, err)
	}
	k2, err := keys.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k2.KeyID() != newID || !k2.Holds(oldID) || !k2.Holds(newID) || k2.Fingerprint() != k1.Fingerprint() {
		t.Fatalf("rotated KMS: active %s, holds old %v: want %s active, the old held, the same pseudonym key", k2.KeyID(), k2.Holds(oldID), newID)
	}
	if got, err := k2.Unwrap(ctx, wrapped1, []byte("perased")); err != nil || got[0] != 7 {
		t.Fatalf("a key wrapped before the rotation: %v", err)
	}
	wrapped2, err := k2.Wrap(ctx, dek, []byte("plive"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k1.Unwrap(ctx, wrapped2, []byte("plive")); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("the old key file opened a key wrapped by the new KEK: %v", err)
	}
	if retired, err := keys.RetiredKEKs(path); err != nil || len(retired) != 1 || retired[0] != oldID {
		t.Fatalf("RetiredKEKs = %v, %v", retired, err)
	}
	gone, err := keys.DestroyRetiredKEKs(path, rotatedAt)
	if err != nil || len(gone) != 1 || gone[0] != oldID {
		t.Fatalf("DestroyRetiredKEKs = %v, %v", gone, err)
	}
	k3, err := keys.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k3.Holds(oldID) {
		t.Fatal("the destroyed KEK is still held")
	}
	if _, err := k3.Unwrap(ctx, wrapped1, []byte("perased")); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("a key wrapped by the destroyed KEK still opens: %v", err)
	}
	if got, err := k3.Unwrap(ctx, wrapped2, []byte("plive")); err != nil || got[0] != 7 {
		t.Fatalf("a key wrapped by the active KEK: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if len(raw) == 0 {
		t.Fatal("empty key file")
	}
}

// After a rotation the key store re-wraps every live key under the new KEK (destroyed scopes
// stay destroyed), and a process still on the old key file creates no key and cannot start.
func TestKVStoreRewrapAndStaleKeyFile(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Start(t)
	path := filepath.Join(t.TempDir(), "custos.key")
	k1, err := keys.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := keys.NewKVStore(ctx, ns.JS, k1)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	want := map[string][]byte{}
	for _, scope := range []string{"catalog", "pa", "pb"} {
		if want[scope], err = old.DataKey(ctx, scope); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Destroy(ctx, "pgone"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.RotateKeyFile(path, rotatedAt); err != nil {
		t.Fatal(err)
	}
	k2, err := keys.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := keys.NewKVStore(ctx, ns.JS, k2)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if err := cur.SetActiveKEK(ctx); err != nil {
		t.Fatal(err)
	}
	rewrapped, live, err := cur.Rewrap(ctx)
	if err != nil || rewrapped != 3 || live != 3 {
		t.Fatalf("Rewrap = %d of %d, %v; want 3 of 3", rewrapped, live, err)
	}
	envs, err := cur.Live(ctx)
	if err != nil || len(envs) != 3 {
		t.Fatalf("Live = %v, %v", envs, err)
	}
	for scope, e := range envs {
		if e.KEK != k2.KeyID() {
			t.Errorf("%s still wrapped by %s", scope, e.KEK)
		}
		got, err := cur.Lookup(ctx, scope)
		if err != nil || string(got) != string(want[scope]) {
			t.Errorf("%s after the rotation: %v (the data key itself must not change)", scope, err)
		}
	}
	if _, err := cur.Lookup(ctx, "pgone"); !errors.Is(err, keys.ErrDestroyed) {
		t.Errorf("a destroyed scope after the rotation: %v", err)
	}
	// The process on the old key file: no new key, and no fresh start.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := old.DataKey(ctx, "pnew")
		if errors.Is(err, keys.ErrStaleKEK) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old key file still creates keys after the rotation: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, err := keys.NewKVStore(ctx, ns.JS, k1); !errors.Is(err, keys.ErrStaleKEK) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("NewKVStore with the old key file = %v, want ErrStaleKEK", err)
	}
}
