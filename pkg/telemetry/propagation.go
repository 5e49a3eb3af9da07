package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// Propagator is the W3C Trace Context propagator (traceparent, tracestate) used on every NATS
// message. It is fixed rather than taken from the global propagator so a producer and a worker
// always agree on the header format, whatever else a service registers globally.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier. Keys are used as given
// (lowercase "traceparent" and "tracestate"); Get falls back to a case-insensitive match so
// headers written by other clients in another case are still found.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key, or "".
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && equalFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces the values of key with value. Setting on a nil carrier does nothing.
func (c HeaderCarrier) Set(key, value string) {
	if c == nil {
		return
	}
	c[key] = []string{value}
}

// Keys lists the header keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx (if any) into hdr as traceparent/tracestate.
// hdr must be non-nil.
func Inject(ctx context.Context, hdr nats.Header) {
	Propagator.Inject(ctx, HeaderCarrier(hdr))
}

// Extract returns ctx carrying the remote span context found in hdr, or ctx unchanged when hdr
// holds no valid traceparent.
func Extract(ctx context.Context, hdr nats.Header) context.Context {
	return Propagator.Extract(ctx, HeaderCarrier(hdr))
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
