package telemetry_test

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/telemetry"
)

// A producer injects its span context into the message headers; the worker extracts it and
// starts its spans as children, so both sides share one trace.
func ExampleExtract() {
	// What the producer's Inject wrote (a sampled span of trace 4bf9...).
	hdr := nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}

	ctx := telemetry.Extract(context.Background(), hdr)
	sc := trace.SpanContextFromContext(ctx)
	fmt.Println(sc.TraceID(), sc.SpanID(), sc.IsSampled(), sc.IsRemote())

	out := nats.Header{}
	telemetry.Inject(ctx, out)
	fmt.Println(out.Get("traceparent"))
	// Output:
	// 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 true true
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}

// Services call Setup once at start and shutdown before exit.
func ExampleSetup() {
	ctx := context.Background()
	shutdown, err := telemetry.Setup(ctx, telemetry.Config{
		ServiceName: "custos-worker",
		Exporter:    "none", // "otlp-grpc" / "otlp-http" with Endpoint, or "stdout"
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = shutdown(ctx) }()
	fmt.Println(telemetry.SpanName(telemetry.OperationProcess, "custos.v1.events.manual"))
	// Output: process custos.v1.events.manual
}
