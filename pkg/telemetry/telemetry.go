// Package telemetry sets up OpenTelemetry tracing for Custos services and carries trace context
// across NATS messages.
//
// A producer injects its span context into the message headers (Inject); a worker extracts it
// (Extract) so its spans join the trigger's trace. Setup configures the global TracerProvider
// once per process; MessagingAttributes and SpanName give spans the messaging semantic
// conventions so trace viewers group them as NATS sends and receives.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Exporter names accepted in Config.Exporter.
const (
	ExporterNone     = "none"
	ExporterOTLPGRPC = "otlp-grpc"
	ExporterOTLPHTTP = "otlp-http"
	ExporterStdout   = "stdout"
)

// InstrumentationName is the tracer name Custos packages use.
const InstrumentationName = "github.com/custos-dev/custos"

// ErrUnknownExporter is returned by Setup for an unsupported Config.Exporter.
var ErrUnknownExporter = errors.New("telemetry: unknown exporter")

// Config selects how traces leave the process.
type Config struct {
	// ServiceName is the service.name resource attribute (e.g. "custos-worker"). OTEL_SERVICE_NAME
	// and OTEL_RESOURCE_ATTRIBUTES, when set, take precedence.
	ServiceName string
	// ServiceVersion is service.version; optional.
	ServiceVersion string
	// InstanceID is service.instance.id, which tells replicas of one service apart in traces
	// and metrics (the worker's --name). Empty means "<hostname>-<pid>".
	InstanceID string
	// Exporter is "otlp-grpc", "otlp-http", "stdout", or "none"/"" (tracing off: the global
	// TracerProvider stays a no-op, but the propagator is still installed).
	Exporter string
	// Endpoint of the OTLP collector: "host:port" or a URL ("http://collector:4318"; for
	// otlp-http a URL without a path gets /v1/traces, one with a path is used as is). Empty means
	// the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT (and the
	// other OTEL_EXPORTER_OTLP_* variables), defaulting to localhost.
	Endpoint string
	// Insecure disables TLS for a "host:port" Endpoint. A URL endpoint's scheme decides instead.
	Insecure bool
	// Headers are sent with every OTLP export (e.g. an API key); optional.
	Headers map[string]string
	// SampleRatio is the fraction of new traces sampled, in (0, 1]; 0 means 1 (sample all).
	// Child spans follow their parent's decision.
	SampleRatio float64
	// Writer receives the "stdout" exporter's output; nil means os.Stdout.
	Writer io.Writer
}

// Setup installs the global TracerProvider and the W3C Trace Context propagator according to
// cfg. The returned shutdown flushes pending spans and stops the exporter; call it before the
// process exits. Shutdown is safe to call more than once.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if exp == nil {
		return func(context.Context) error { return nil }, nil
	}

	res, err := newResource(ctx, cfg)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}

	ratio := cfg.SampleRatio
	if ratio <= 0 || ratio > 1 {
		ratio = 1
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

func serviceAttrs(cfg Config) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if cfg.ServiceName != "" {
		attrs = append(attrs, semconv.ServiceName(cfg.ServiceName))
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	return append(attrs, semconv.ServiceInstanceID(InstanceID(cfg.InstanceID)))
}

// InstanceID returns name, or "<hostname>-<pid>" when name is empty: unique per process on a
// host, stable for its life.
func InstanceID(name string) string {
	if name != "" {
		return name
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// newResource describes the process for traces and metrics alike, so both carry the same
// service.name and service.instance.id. OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(serviceAttrs(cfg)...),
		resource.WithFromEnv(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// newExporter returns the exporter for cfg, or nil when tracing is off.
func newExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	isURL := strings.Contains(cfg.Endpoint, "://")
	switch strings.ToLower(strings.TrimSpace(cfg.Exporter)) {
	case "", ExporterNone:
		return nil, nil
	case ExporterStdout:
		w := cfg.Writer
		if w == nil {
			w = os.Stdout
		}
		return stdouttrace.New(stdouttrace.WithWriter(w))
	case ExporterOTLPGRPC:
		var opts []otlptracegrpc.Option
		switch {
		case isURL:
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		case cfg.Endpoint != "":
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
			if cfg.Insecure {
				opts = append(opts, otlptracegrpc.WithInsecure())
			}
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(cfg.Headers))
		}
		// New does not dial eagerly: an absent collector costs dropped spans, not a failed start.
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp-grpc exporter: %w", err)
		}
		return exp, nil
	case ExporterOTLPHTTP:
		var opts []otlptracehttp.Option
		switch {
		case isURL:
			opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
			if u, err := url.Parse(cfg.Endpoint); err == nil && strings.Trim(u.Path, "/") == "" {
				// A base URL, like OTEL_EXPORTER_OTLP_ENDPOINT: traces go to /v1/traces.
				opts = append(opts, otlptracehttp.WithURLPath("/v1/traces"))
			}
		case cfg.Endpoint != "":
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
			if cfg.Insecure {
				opts = append(opts, otlptracehttp.WithInsecure())
			}
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp-http exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("%w %q (want otlp-grpc, otlp-http, stdout or none)", ErrUnknownExporter, cfg.Exporter)
	}
}
