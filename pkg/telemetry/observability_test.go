package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/custos-dev/custos/pkg/telemetry"
)

// A line logged with a span's context carries its trace_id and span_id; durations are seconds.
func TestLoggerTraceIDsAndSeconds(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "handle")
	defer span.End()

	var buf bytes.Buffer
	log, err := telemetry.NewLogger(telemetry.LogConfig{Writer: &buf}) // not a terminal: JSON
	if err != nil {
		t.Fatal(err)
	}
	log = log.With("component", "worker", "ack_wait", 30*time.Second)
	log.InfoContext(telemetry.WithLogAttrs(ctx, slog.String("event_id", "ev-1")), "event acknowledged", "took", 1500*time.Millisecond)
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got:\n%s", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, lines[0])
	}
	sc := span.SpanContext()
	if rec["trace_id"] != sc.TraceID().String() || rec["span_id"] != sc.SpanID().String() {
		t.Fatalf("trace ids missing or wrong: %s (want %s %s)", lines[0], sc.TraceID(), sc.SpanID())
	}
	if rec["event_id"] != "ev-1" {
		t.Fatalf("the event id carried by the context is missing: %s", lines[0])
	}
	if rec["took"] != 1.5 || rec["ack_wait"] != 30.0 {
		t.Fatalf("durations not in seconds: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Fatalf("trace_id on a line logged without a span: %s", lines[1])
	}

	buf.Reset()
	text, err := telemetry.NewLogger(telemetry.LogConfig{Writer: &buf, Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	text.WarnContext(ctx, "retry", "delay", 250*time.Millisecond)
	if s := buf.String(); !strings.Contains(s, "delay=0.25") || !strings.Contains(s, "trace_id="+sc.TraceID().String()) {
		t.Fatalf("text line: %s", s)
	}
	if _, err := telemetry.NewLogger(telemetry.LogConfig{Format: "xml"}); !errors.Is(err, telemetry.ErrUnknownLogFormat) {
		t.Fatalf("format xml: %v", err)
	}
}

// The admin listener serves the MeterProvider's instruments under their Prometheus names, an
// exemplar with the trace id on a histogram when OpenMetrics is asked for, and /healthz.
func TestAdminServesMetricsAndHealth(t *testing.T) {
	ctx := context.Background()
	m, err := telemetry.NewMetrics(ctx, telemetry.Config{ServiceName: "custos-test", InstanceID: "w-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(ctx)
	meter := m.Provider().Meter("test")
	acked, _ := meter.Int64Counter("custos.events.acked", metric.WithUnit("{event}"))
	lat, _ := meter.Float64Histogram("custos.publish_to_durable.duration", metric.WithUnit("s"))
	bytesC, _ := meter.Int64Counter("custos.target.bytes", metric.WithUnit("By"))
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(ctx) }()
	sctx, span := tp.Tracer("test").Start(ctx, "process")
	acked.Add(sctx, 3, metric.WithAttributes())
	lat.Record(sctx, 0.2)
	bytesC.Add(ctx, 10)
	span.End()

	var healthy error
	a := telemetry.NewAdmin(telemetry.AdminConfig{Listen: "127.0.0.1:0", Metrics: m.Handler(),
		Healthy: func(context.Context) error { return healthy }})
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	if err := a.Start(ctx); !errors.Is(err, telemetry.ErrAdminStarted) {
		t.Fatalf("second Start: %v", err)
	}
	base := "http://" + a.Addr()
	get := func(path, accept string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics", "")
	for _, want := range []string{"custos_events_acked_total", "custos_publish_to_durable_duration_seconds_bucket",
		"custos_target_bytes_total", `service_instance_id="w-1"`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics (%d) lacks %s:\n%s", code, want, body)
		}
	}
	_, om := get("/metrics", "application/openmetrics-text; version=1.0.0")
	if !strings.Contains(om, `trace_id="`+span.SpanContext().TraceID().String()+`"`) {
		t.Fatalf("no exemplar with the trace id in OpenMetrics:\n%s", om)
	}
	if code, body := get("/healthz", ""); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	healthy = errors.New("not connected to NATS")
	if code, body := get("/healthz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "NATS") {
		t.Fatalf("/healthz unhealthy = %d %q", code, body)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// The port is free again.
	b := telemetry.NewAdmin(telemetry.AdminConfig{Listen: strings.TrimPrefix(base, "http://")})
	if err := b.Start(ctx); err != nil {
		t.Fatalf("port not released: %v", err)
	}
	_ = b.Stop(ctx)
}
