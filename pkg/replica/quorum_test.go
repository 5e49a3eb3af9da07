package replica_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestWriteQuorum(t *testing.T) {
	data := []byte("pack bytes")
	sum := sha256.Sum256(data)
	for _, tc := range []struct {
		name      string
		min       int
		wantHeld  int
		abandoned bool
	}{
		{"two of three stops waiting for the hung target", 2, 2, true},
		{"zero means every target: the hung one fails only when the context ends", 0, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hung := faulty.New(mem.New(mem.WithLabel("hung")))
			hung.Delay(time.Hour)
			targets := []target.Target{mem.New(mem.WithLabel("a")), mem.New(mem.WithLabel("b")), hung}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			res := replica.WriteQuorum(ctx, noop.NewTracerProvider().Tracer(""), targets, "packs/00/x",
				int64(len(data)), sum, replica.BytesSource(data), target.PutOptions{},
				replica.Quorum{Min: tc.min, Grace: 50 * time.Millisecond})
			if got := replica.Durable(res); got != tc.wantHeld {
				t.Fatalf("durable in %d, want %d: %v", got, tc.wantHeld, replica.Err(res))
			}
			if errors.Is(res[2].Err, replica.ErrAbandoned) != tc.abandoned {
				t.Fatalf("hung target error %v, abandoned want %v", res[2].Err, tc.abandoned)
			}
			if tc.abandoned && time.Since(start) > time.Second {
				t.Fatalf("quorum write took %v", time.Since(start))
			}
			hung.Delay(0)
			if _, err := hung.Stat(context.Background(), "packs/00/x"); !errors.Is(err, target.ErrNotFound) {
				t.Fatalf("hung target shows the object after a cancelled write: %v", err)
			}
		})
	}
}
