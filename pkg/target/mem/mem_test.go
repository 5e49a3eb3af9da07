package mem_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target { return mem.New() })
}

func TestRetentionExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	m := mem.New(mem.WithClock(func() time.Time { return now }))
	data := []byte("x")
	opts := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: now.Add(time.Hour)}
	if err := m.Put(t.Context(), "r", bytes.NewReader(data), 1, opts); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(t.Context(), "r"); !errors.Is(err, target.ErrLocked) {
		t.Fatalf("Delete = %v, want ErrLocked", err)
	}
	now = now.Add(time.Hour)
	if err := m.Delete(t.Context(), "r"); err != nil {
		t.Fatalf("Delete after expiry = %v", err)
	}
}
