// Package stack composes the target wrappers in the one order every service uses,
// observe(limit(retry(provider))), for these reasons:
//
//   - observe is outermost so that a span, an operation count and a latency sample describe
//     one logical operation as the caller saw it, including queueing and retries; each retry
//     appears as a "target.retry" event on that span rather than as extra operations.
//   - limit sits outside retry so that a slot is held through backoff: a struggling target
//     gets no more concurrent work than a healthy one, and waiting callers queue (backpressure).
//   - retry is innermost, next to the provider, so that it sees the provider's classified
//     errors and rewinds the reader right before each attempt.
//
// A provider that could not be built at open because its storage was unreachable is a
// pkg/target/lazy target, which Build wraps like any provider (pkg/config composes both).
package stack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/limit"
	"github.com/custos-dev/custos/pkg/target/observe"
	"github.com/custos-dev/custos/pkg/target/retry"
)

// Config holds the settings of every wrapper; the zero value gives the retry package's
// defaults, no concurrency limit and the global OpenTelemetry providers.
type Config struct {
	// MaxAttempts per operation, the first included; 0 means the retry default (5).
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the jittered wait between attempts; 0 means the
	// retry defaults (100ms, 10s).
	InitialBackoff, MaxBackoff time.Duration
	// MaxElapsed bounds the time spent retrying one operation; 0 means the default (2m).
	MaxElapsed time.Duration
	// AttemptTimeout bounds each attempt; 0 means none.
	AttemptTimeout time.Duration
	// MaxPuts and MaxGets bound concurrent Puts and Gets (bodies open); 0 means no limit.
	MaxPuts, MaxGets int
	// TracerProvider and MeterProvider default to the global ones.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// RetryOptions are applied after the fields above (e.g. retry.WithClock in tests).
	RetryOptions []retry.Option
}

var _ target.Target = (*Target)(nil)

// Target is a composed stack. It reaches the target it was built on for what only a provider
// offers: Unwrap returns it, CleanTemp forwards to it.
type Target struct {
	target.Target // observe(limit(retry(inner)))
	inner         target.Target
}

// Unwrap returns the target Build wrapped.
func (t *Target) Unwrap() target.Target { return t.inner }

// CleanTemp forwards to the wrapped target's CleanTemp (the fs provider's staging cleanup, or
// a lazy target's forward of it); it fails with errors.ErrUnsupported when there is none. It
// bypasses retry, limits and metrics: it is maintenance, not an operation on objects.
func (t *Target) CleanTemp(olderThan time.Duration) (int, error) {
	c, ok := t.inner.(interface {
		CleanTemp(time.Duration) (int, error)
	})
	if !ok {
		return 0, fmt.Errorf("clean temp on %s: %w", t.Name(), errors.ErrUnsupported)
	}
	return c.CleanTemp(olderThan)
}

// Build wraps t as observe(limit(retry(t))).
func Build(t target.Target, cfg Config) *Target {
	opts := []retry.Option{retry.OnRetry(spanEvent)}
	if cfg.MaxAttempts > 0 {
		opts = append(opts, retry.MaxAttempts(cfg.MaxAttempts))
	}
	if cfg.InitialBackoff > 0 || cfg.MaxBackoff > 0 {
		initial, maxDelay := cfg.InitialBackoff, cfg.MaxBackoff
		if initial <= 0 {
			initial = 100 * time.Millisecond
		}
		if maxDelay <= 0 {
			maxDelay = max(initial, 10*time.Second)
		}
		opts = append(opts, retry.Backoff(initial, maxDelay))
	}
	if cfg.MaxElapsed > 0 {
		opts = append(opts, retry.MaxElapsed(cfg.MaxElapsed))
	}
	if cfg.AttemptTimeout > 0 {
		opts = append(opts, retry.AttemptTimeout(cfg.AttemptTimeout))
	}
	opts = append(opts, cfg.RetryOptions...)

	var obs []observe.Option
	if cfg.TracerProvider != nil {
		obs = append(obs, observe.WithTracerProvider(cfg.TracerProvider))
	}
	if cfg.MeterProvider != nil {
		obs = append(obs, observe.WithMeterProvider(cfg.MeterProvider))
	}
	return &Target{Target: observe.New(limit.New(retry.New(t, opts...), cfg.MaxPuts, cfg.MaxGets), obs...), inner: t}
}

// spanEvent marks a retry on the operation's span, which observe started in ctx.
func spanEvent(ctx context.Context, op string, attempt int, err error, wait time.Duration) {
	trace.SpanFromContext(ctx).AddEvent("target.retry", trace.WithAttributes(
		attribute.Int("custos.retry.attempt", attempt),
		attribute.String("custos.retry.error", err.Error()),
		attribute.Float64("custos.retry.wait_seconds", wait.Seconds()),
	))
}
