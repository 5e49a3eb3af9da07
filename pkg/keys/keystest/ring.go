package keystest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/keys"
)

// RunRing checks the keys.Ring contract. newRing returns a ring with exactly one (active) KEK
// version, fresh for each call; reopen opens the same backend state again, as another process
// would. Both register their own cleanup with t.
func RunRing(t *testing.T, newRing func(t *testing.T) keys.Ring, reopen func(t *testing.T, r keys.Ring) keys.Ring) {
	t.Helper()
	ctx := context.Background()
	dek := func(t *testing.T) []byte {
		b := make([]byte, keys.DEKSize)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("WrapUnwrapBoundToAAD", func(t *testing.T) {
		r := newRing(t)
		d := dek(t)
		w, err := r.Wrap(ctx, d, []byte("p01"))
		if err != nil {
			t.Fatalf("Wrap: %v", err)
		}
		if bytes.Contains(w, d) {
			t.Fatal("wrapped key contains the plaintext key")
		}
		got, err := r.Unwrap(ctx, w, []byte("p01"))
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("Unwrap: err = %v, same = %v", err, bytes.Equal(got, d))
		}
		if _, err := r.Unwrap(ctx, w, []byte("p02")); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("Unwrap with another aad: err = %v, want ErrUnwrap", err)
		}
		bad := slices.Clone(w)
		bad[len(bad)-1] ^= 1
		if _, err := r.Unwrap(ctx, bad, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("Unwrap of modified bytes: err = %v, want ErrUnwrap", err)
		}
		if _, err := r.Unwrap(ctx, []byte{1, 2}, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("Unwrap of short bytes: err = %v, want ErrUnwrap", err)
		}
		if !r.Holds(r.KeyID()) || r.Holds("no-such-version") {
			t.Fatal("Holds: wrong answer for the active id or an unknown one")
		}
	})

	t.Run("RotateTwiceThenDestroy", func(t *testing.T) {
		r := newRing(t)
		d0 := dek(t)
		id0 := r.KeyID()
		w0, err := r.Wrap(ctx, d0, []byte("p01"))
		if err != nil {
			t.Fatal(err)
		}
		if ret, err := r.Retired(ctx); err != nil || len(ret) != 0 {
			t.Fatalf("Retired before a rotation = %v, %v; want none", ret, err)
		}
		old, id1, err := r.Rotate(ctx)
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if old != id0 || id1 == id0 || r.KeyID() != id1 {
			t.Fatalf("Rotate returned (%s, %s), active %s; want (%s, new)", old, id1, r.KeyID(), id0)
		}
		d1 := dek(t)
		w1, err := r.Wrap(ctx, d1, []byte("p02"))
		if err != nil {
			t.Fatal(err)
		}
		_, id2, err := r.Rotate(ctx)
		if err != nil {
			t.Fatalf("second Rotate: %v", err)
		}
		if id2 == id1 || id2 == id0 {
			t.Fatalf("ids reused: %s %s %s", id0, id1, id2)
		}
		for _, c := range []struct {
			w, d []byte
			aad  string
		}{{w0, d0, "p01"}, {w1, d1, "p02"}} {
			if got, err := r.Unwrap(ctx, c.w, []byte(c.aad)); err != nil || !bytes.Equal(got, c.d) {
				t.Fatalf("Unwrap under a retired version: err = %v", err)
			}
		}
		ret, err := r.Retired(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ret)
		want := []string{id0, id1}
		slices.Sort(want)
		if !slices.Equal(ret, want) || !r.Holds(id0) || !r.Holds(id1) {
			t.Fatalf("Retired = %v, want %v", ret, want)
		}

		// Another process opening the backend sees the same active version and opens old keys.
		o := reopen(t, r)
		if o.KeyID() != id2 {
			t.Fatalf("reopened ring: active %s, want %s", o.KeyID(), id2)
		}
		if got, err := o.Unwrap(ctx, w0, []byte("p01")); err != nil || !bytes.Equal(got, d0) {
			t.Fatalf("reopened ring: Unwrap under a retired version: err = %v", err)
		}
		// A re-wrap under the active version survives the destroy.
		w2, err := r.Wrap(ctx, d0, []byte("p01"))
		if err != nil {
			t.Fatal(err)
		}

		gone, err := r.DestroyRetired(ctx)
		if err != nil {
			t.Fatalf("DestroyRetired: %v", err)
		}
		slices.Sort(gone)
		if !slices.Equal(gone, want) {
			t.Fatalf("DestroyRetired = %v, want %v", gone, want)
		}
		for _, c := range []struct {
			w   []byte
			aad string
		}{{w0, "p01"}, {w1, "p02"}} {
			if _, err := r.Unwrap(ctx, c.w, []byte(c.aad)); !errors.Is(err, keys.ErrUnwrap) {
				t.Fatalf("Unwrap under a destroyed version: err = %v, want ErrUnwrap", err)
			}
		}
		if r.Holds(id0) || r.Holds(id1) || !r.Holds(id2) {
			t.Fatal("Holds after DestroyRetired: destroyed versions still held, or the active one not")
		}
		if got, err := r.Unwrap(ctx, w2, []byte("p01")); err != nil || !bytes.Equal(got, d0) {
			t.Fatalf("Unwrap under the active version after destroy: err = %v", err)
		}
		// Destroyed everywhere, not only in this process.
		o2 := reopen(t, r)
		if _, err := o2.Unwrap(ctx, w0, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("reopened ring: Unwrap under a destroyed version: err = %v, want ErrUnwrap", err)
		}
		if again, err := r.DestroyRetired(ctx); err != nil || len(again) != 0 {
			t.Fatalf("second DestroyRetired = %v, %v; want none, nil", again, err)
		}
		if ret, err := r.Retired(ctx); err != nil || len(ret) != 0 {
			t.Fatalf("Retired after destroy = %v, %v; want none", ret, err)
		}
	})
}
