package stack_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/stack"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	cfg := stack.Config{MaxPuts: 4, MaxGets: 4, InitialBackoff: time.Millisecond}
	t.Run("mem", func(t *testing.T) {
		targettest.Run(t, func(t *testing.T) target.Target { return stack.Build(mem.New(), cfg) })
	})
	t.Run("fs", func(t *testing.T) {
		targettest.Run(t, func(t *testing.T) target.Target {
			tg, err := fs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return stack.Build(tg, cfg)
		})
	})
}

// Retries happen inside one logical operation: one span, with an event per retry.
func TestRetriesInsideOneSpan(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	f := faulty.New(mem.New())
	tg := stack.Build(f, stack.Config{TracerProvider: tp, InitialBackoff: time.Millisecond, MaxPuts: 1})
	f.FailNextPuts(2)
	targettest.Put(t, tg, "packs/a", []byte("x"))
	ended := spans.Ended()
	if len(ended) != 1 || ended[0].Name() != "target.put" {
		t.Fatalf("spans = %v, want one target.put", ended)
	}
	if n := len(ended[0].Events()); n != 2 {
		t.Errorf("%d retry events, want 2", n)
	}
}
