package keys_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/keystest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemStore(t *testing.T) {
	t.Parallel()
	keystest.Run(t, func(t *testing.T) keys.Store { return keys.NewMemStore() })
}

func TestKVStore(t *testing.T) {
	t.Parallel()
	keystest.Run(t, func(t *testing.T) keys.Store {
		return newKVStore(t, natstest.Start(t), testKMS(t))
	})
}

func testKMS(t testing.TB) *keys.LocalKMS {
	t.Helper()
	kms, err := keys.LoadOrCreateKeyFile(t.TempDir() + "/custos.key")
	if err != nil {
		t.Fatal(err)
	}
	return kms
}

func newKVStore(t testing.TB, srv *natstest.Server, kms keys.KMS, opts ...keys.Option) *keys.KVStore {
	t.Helper()
	s, err := keys.NewKVStore(context.Background(), srv.JS, kms, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
