package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestInjectExtract(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "parent")
	defer span.End()

	hdr := nats.Header{}
	telemetry.Inject(ctx, hdr)
	tp1 := hdr.Get("traceparent")
	if !strings.HasPrefix(tp1, "00-"+span.SpanContext().TraceID().String()+"-"+span.SpanContext().SpanID().String()) {
		t.Fatalf("traceparent = %q", tp1)
	}
	for name, h := range map[string]nats.Header{
		"as written": hdr,
		"upper case": {"TRACEPARENT": {tp1}},
	} {
		sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
		if !sc.IsRemote() || sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() {
			t.Errorf("%s: extracted %v", name, sc)
		}
	}
	// No or invalid context: ctx unchanged, no panic on nil headers.
	for _, h := range []nats.Header{nil, {}, {"traceparent": {"garbage"}}} {
		if sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h)); sc.IsValid() {
			t.Errorf("extracted %v from %v", sc, h)
		}
	}
	telemetry.Inject(context.Background(), nats.Header{}) // no span: nothing to write, no panic

	c := telemetry.HeaderCarrier(nats.Header{"a": {"1"}})
	c.Set("b", "2")
	if c.Get("B") != "2" || len(c.Keys()) != 2 {
		t.Fatalf("carrier %v", c)
	}
	telemetry.HeaderCarrier(nil).Set("x", "y")
}

func TestMessagingAttributes(t *testing.T) {
	got := map[attribute.Key]string{}
	for _, kv := range telemetry.MessagingAttributes(telemetry.OperationSend, "custos.v1.events.manual", "id-1", attribute.String("x", "y")) {
		got[kv.Key] = kv.Value.Emit()
	}
	want := map[attribute.Key]string{
		"messaging.system":           "nats",
		"messaging.operation.type":   "send",
		"messaging.operation.name":   "publish",
		"messaging.destination.name": "custos.v1.events.manual",
		"messaging.message.id":       "id-1",
		"x":                          "y",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if n := len(telemetry.MessagingAttributes(telemetry.OperationProcess, "d", "")); n != 4 {
		t.Errorf("%d attributes without a message id, want 4", n)
	}
	if s := telemetry.SpanName(telemetry.OperationSend, "custos.v1.events.manual"); s != "publish custos.v1.events.manual" {
		t.Errorf("SpanName = %q", s)
	}
	if s := telemetry.SpanName(telemetry.OperationProcess, "d"); s != "process d" {
		t.Errorf("SpanName = %q", s)
	}
}

// restoreGlobals puts the global TracerProvider and propagator back after a Setup test.
func restoreGlobals(t *testing.T) {
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(prop)
	})
}

func TestSetupExporters(t *testing.T) {
	restoreGlobals(t)
	ctx := context.Background()

	for _, name := range []string{"", "none"} {
		shutdown, err := telemetry.Setup(ctx, telemetry.Config{Exporter: name})
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if err := shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := telemetry.Setup(ctx, telemetry.Config{Exporter: "zipkin"}); !errors.Is(err, telemetry.ErrUnknownExporter) {
		t.Fatalf("unknown exporter: %v", err)
	}

	var buf bytes.Buffer
	shutdown, err := telemetry.Setup(ctx, telemetry.Config{Exporter: "stdout", ServiceName: "custos-test", Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(ctx, "stdout-span")
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "stdout-span") || !strings.Contains(buf.String(), "custos-test") {
		t.Fatalf("stdout exporter wrote %q", buf.String())
	}

	// gRPC exporter: constructing does not dial; shutdown without spans succeeds.
	shutdown, err = telemetry.Setup(ctx, telemetry.Config{Exporter: "otlp-grpc", Endpoint: "127.0.0.1:1", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSetupOTLPHTTP(t *testing.T) {
	restoreGlobals(t)
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" && r.Method == http.MethodPost && r.Header.Get("X-Api-Key") == "k" {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()

	ctx := context.Background()
	for _, endpoint := range []string{srv.URL, strings.TrimPrefix(srv.URL, "http://")} {
		shutdown, err := telemetry.Setup(ctx, telemetry.Config{
			Exporter: "otlp-http", Endpoint: endpoint, Insecure: true,
			ServiceName: "custos-test", Headers: map[string]string{"X-Api-Key": "k"},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, span := otel.Tracer("test").Start(ctx, "exported")
		span.End()
		if err := shutdown(ctx); err != nil {
			t.Fatalf("%s: shutdown: %v", endpoint, err)
		}
	}
	if n := posts.Load(); n != 2 {
		t.Fatalf("collector received %d exports, want 2", n)
	}
	// Setup installs the W3C propagator globally too.
	if f := otel.GetTextMapPropagator().Fields(); !strings.Contains(strings.Join(f, ","), "traceparent") {
		t.Fatalf("global propagator fields %v", f)
	}
}
