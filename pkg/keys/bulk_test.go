package keys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
)

// LookupMany answers exactly what Lookup answers for each scope, through the whole-bucket read
// (many scopes) and through one Get each (few), and for a store without a bulk read.
func TestLookupMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, kms := natstest.Start(t), testKMS(t)
	writer := newKVStore(t, srv, kms)
	mem := keys.NewMemStore()
	var scopes []string
	for i := range 150 {
		sc := fmt.Sprintf("p%03d", i)
		scopes = append(scopes, sc)
		switch {
		case i%10 == 3: // never created
			continue
		case i%10 == 5:
			if err := writer.Destroy(ctx, sc); err != nil {
				t.Fatal(err)
			}
			if err := mem.Destroy(ctx, sc); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := writer.DataKey(ctx, sc); err != nil {
			t.Fatal(err)
		}
		if _, err := mem.DataKey(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	// A scope asked twice, and one that is not a valid scope.
	scopes = append(scopes, "p000", "Not A Scope")
	reader := newKVStore(t, srv, kms, keys.WithCacheSize(0))

	for _, tc := range []struct {
		name   string
		store  keys.Store
		scopes []string
	}{
		{"bucket read", reader, scopes},
		{"one get each", reader, scopes[:20]},
		{"store without bulk read", mem, scopes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keys.LookupMany(ctx, tc.store, tc.scopes, 4)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.scopes) {
				t.Fatalf("%d answers for %d scopes", len(got), len(tc.scopes))
			}
			for i, sc := range tc.scopes {
				k, err := tc.store.Lookup(ctx, sc)
				if !bytes.Equal(got[i].Key, k) || !sameKind(got[i].Err, err) {
					t.Errorf("%s: LookupMany = %x, %v; Lookup = %x, %v", sc, got[i].Key, got[i].Err, k, err)
				}
			}
		})
	}
}

func sameKind(a, b error) bool {
	for _, e := range []error{keys.ErrNotFound, keys.ErrDestroyed, keys.ErrInvalidScope} {
		if errors.Is(a, e) != errors.Is(b, e) {
			return false
		}
	}
	return (a == nil) == (b == nil)
}
