package pkcs11kms_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/keys"
)

// FuzzUnwrap feeds Unwrap modified wrapped keys (mask is XORed into a valid one, repeating
// over its length) and arbitrary bytes (raw). Anything but the valid key must fail with
// keys.ErrUnwrap: no panic, no other error, no key.
func FuzzUnwrap(f *testing.F) {
	ctx := context.Background()
	r := open(f, newToken(f), true)
	dek := bytes.Repeat([]byte{0x5a}, keys.DEKSize)
	aad := []byte("p01")
	valid, err := r.Wrap(ctx, dek, aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, false)                 // the valid key itself
	f.Add([]byte{0x03}, false)             // format byte
	f.Add([]byte{0, 0x10}, false)          // id length
	f.Add([]byte{2, 16, 1, 2, 3, 4}, true) // a bare header
	f.Add(slices.Clone(valid[:30]), true)  // a valid header, nothing after it
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		w := b
		if !raw {
			w = slices.Clone(valid)
			for i, x := range b {
				w[i%len(w)] ^= x
			}
		}
		got, err := r.Unwrap(ctx, w, aad)
		if bytes.Equal(w, valid) {
			if err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("Unwrap of the valid key: err = %v, same = %v", err, bytes.Equal(got, dek))
			}
			return
		}
		if !errors.Is(err, keys.ErrUnwrap) || got != nil {
			t.Fatalf("Unwrap of % x: err = %v, key returned = %v; want ErrUnwrap", w, err, got != nil)
		}
	})
}
