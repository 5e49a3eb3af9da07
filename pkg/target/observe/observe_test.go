package observe_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/observe"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	target *observe.Target
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(b.reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	b.target = observe.New(mem.New(mem.WithLabel("a")), observe.WithTracerProvider(tp), observe.WithMeterProvider(mp))
	return b
}

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target { return setup(t).target })
}

func TestSpansAndMetrics(t *testing.T) {
	b := setup(t)
	ctx := t.Context()
	targettest.Put(t, b.target, "packs/x", []byte("12345"))
	rc, err := b.target.GetRange(ctx, "packs/x", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.spans.Ended()); n != 1 {
		t.Errorf("%d spans ended before the body was closed, want 1 (put)", n)
	}
	io.ReadAll(rc)
	rc.Close()
	if _, err := b.target.Stat(ctx, "missing"); !errors.Is(err, target.ErrNotFound) {
		t.Fatal(err)
	}

	spans := b.spans.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	for i, want := range []struct {
		name  string
		bytes int64
		err   bool
	}{{"target.put", 5, false}, {"target.get_range", 3, false}, {"target.stat", -1, true}} {
		s := spans[i]
		attrs := attribute.NewSet(s.Attributes()...)
		if s.Name() != want.name {
			t.Errorf("span %d = %s, want %s", i, s.Name(), want.name)
		}
		if v, _ := attrs.Value(observe.KeyTarget); v.AsString() != "mem:a" {
			t.Errorf("%s: target = %q", s.Name(), v.AsString())
		}
		if v, _ := attrs.Value(observe.KeyKind); v.AsString() != "mem" {
			t.Errorf("%s: kind = %q", s.Name(), v.AsString())
		}
		if v, ok := attrs.Value(observe.KeyBytes); want.bytes >= 0 && v.AsInt64() != want.bytes || want.bytes < 0 && ok {
			t.Errorf("%s: bytes = %v, want %d", s.Name(), v.AsInt64(), want.bytes)
		}
		if (s.Status().Code == codes.Error) != want.err {
			t.Errorf("%s: status %v", s.Name(), s.Status())
		}
	}
	if set := attribute.NewSet(spans[2].Attributes()...); !set.HasValue(observe.KeyErrorType) {
		t.Error("stat span has no error.type")
	} else if v, _ := set.Value(observe.KeyErrorType); v.AsString() != "not_found" {
		t.Errorf("stat error.type = %q", v.AsString())
	}

	var rm metricdata.ResourceMetrics
	if err := b.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	hist := uint64(0)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					op, _ := p.Attributes.Value(observe.MetricKeyOperation)
					sums[m.Name+"/"+op.AsString()] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					hist += p.Count
				}
			}
		}
	}
	want := map[string]int64{
		"custos.target.operations/put": 1, "custos.target.operations/get_range": 1, "custos.target.operations/stat": 1,
		"custos.target.bytes/put": 5, "custos.target.bytes/get_range": 3, "custos.target.errors/stat": 1,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
	if len(sums) != len(want) || hist != 3 {
		t.Errorf("metrics = %v, %d durations; want exactly %v, 3 durations", sums, hist, want)
	}
}
