package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
)

// Keys created in a batch are the keys a later reader (another process, no cache) finds; a
// destroyed scope maps to nil and is not recreated; duplicates in the input are one scope.
func TestDataKeysBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, kms := natstest.Start(t), testKMS(t)
	a := newKVStore(t, srv, kms)
	if err := a.Destroy(ctx, "pdead"); err != nil {
		t.Fatal(err)
	}
	scopes := []string{"pdead"}
	for i := range 100 {
		scopes = append(scopes, fmt.Sprintf("p%03d", i), fmt.Sprintf("p%03d", i))
	}
	got, err := keys.DataKeys(ctx, a, scopes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 101 || got["pdead"] != nil {
		t.Fatalf("%d keys, destroyed scope maps to %x", len(got), got["pdead"])
	}
	reader := newKVStore(t, srv, kms, keys.WithCacheSize(0))
	for scope, dek := range got {
		if scope == "pdead" {
			continue
		}
		if want, err := reader.Lookup(ctx, scope); err != nil || !bytes.Equal(dek, want) || len(dek) != keys.DEKSize {
			t.Fatalf("%s: lookup err = %v, same key = %v", scope, err, bytes.Equal(dek, want))
		}
	}
}

// Two workers batch-creating overlapping sets of new customers at once agree on every key
// (create-only writes settle the race), and so does a plain DataKey racing them.
func TestDataKeysConcurrentWorkersAgree(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, kms := natstest.Start(t), testKMS(t)
	stores := []*keys.KVStore{newKVStore(t, srv, kms), newKVStore(t, srv, kms), newKVStore(t, srv, kms)}
	var scopes []string
	for i := range 64 {
		scopes = append(scopes, fmt.Sprintf("pc%02d", i))
	}
	results := make([]map[string][]byte, 4)
	errs := make([]error, 4)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			<-start
			if i == 3 { // one by one, in reverse order, through the third store
				results[i] = map[string][]byte{}
				for j := len(scopes) - 1; j >= 0; j-- {
					k, err := stores[2].DataKey(ctx, scopes[j])
					if err != nil {
						errs[i] = err
						return
					}
					results[i][scopes[j]] = k
				}
				return
			}
			results[i], errs[i] = keys.DataKeys(ctx, stores[i%2], scopes[i*8:])
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	for _, scope := range scopes {
		want := results[3][scope]
		for i := range 3 {
			if k, ok := results[i][scope]; ok && !bytes.Equal(k, want) {
				t.Fatalf("%s: caller %d got another key than caller 3", scope, i)
			}
		}
	}
}
