// Package observe wraps a target.Target with OpenTelemetry tracing and metrics.
//
// Every operation gets one span ("target.put", "target.get", "target.get_range", "target.stat",
// "target.list", "target.delete") with the target's name and kind, the object name (names are
// pseudonymous by design, never customer data) and the bytes moved, and records its error.
// Spans of Get and GetRange end when the body is closed, so they cover the transfer; callers
// must close bodies.
//
// Metrics, labelled target (the target's name), kind and operation (never by object name:
// unbounded); the Prometheus names are in docs/metrics.md:
//
//	custos.target.operations          counter    operations finished (custos_target_operations_total)
//	custos.target.errors              counter    failed operations, with error.type
//	custos.target.bytes               counter    bytes written by put, read by get/get_range
//	custos.target.operation.duration  histogram  seconds, including body transfer for gets
package observe

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/target"
)

const scope = "github.com/custos-dev/custos/pkg/target/observe"

// Attribute keys of metrics: the plain keys every Custos metric uses.
const (
	MetricKeyTarget    = attribute.Key("target")
	MetricKeyKind      = attribute.Key("kind")
	MetricKeyOperation = attribute.Key("operation")
)

// Attribute keys on spans.
const (
	KeyTarget    = attribute.Key("custos.target.name")
	KeyKind      = attribute.Key("custos.target.kind")
	KeyOperation = attribute.Key("custos.target.operation")
	KeyObject    = attribute.Key("custos.object.name")
	KeyBytes     = attribute.Key("custos.object.bytes")
	KeyErrorType = attribute.Key("error.type")
)

var _ target.Target = (*Target)(nil)

// Target traces and measures the target it wraps.
type Target struct {
	target.Target
	tracer   trace.Tracer
	attrs    []attribute.KeyValue // target name and kind, for spans
	mattrs   []attribute.KeyValue // the same, for metrics
	ops      metric.Int64Counter
	errs     metric.Int64Counter
	bytes    metric.Int64Counter
	duration metric.Float64Histogram
}

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// Option configures a Target.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTracerProvider sets the tracer provider (default: the global one).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets the meter provider (default: the global one).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// New wraps t. Instruments that cannot be created are reported to otel.Handle and left as
// no-ops: observability must never stop backups.
func New(t target.Target, opts ...Option) *Target {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	m := c.mp.Meter(scope)
	o := &Target{
		Target: t,
		tracer: c.tp.Tracer(scope),
		attrs:  []attribute.KeyValue{KeyTarget.String(t.Name()), KeyKind.String(t.Kind())},
		mattrs: []attribute.KeyValue{MetricKeyTarget.String(t.Name()), MetricKeyKind.String(t.Kind())},
	}
	var errs [4]error
	o.ops, errs[0] = m.Int64Counter("custos.target.operations", metric.WithUnit("{operation}"),
		metric.WithDescription("Storage target operations."))
	o.errs, errs[1] = m.Int64Counter("custos.target.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Failed storage target operations."))
	o.bytes, errs[2] = m.Int64Counter("custos.target.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes written to (put) or read from (get) storage targets."))
	o.duration, errs[3] = m.Float64Histogram("custos.target.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of storage target operations."))
	if err := errors.Join(errs[:]...); err != nil {
		otel.Handle(err)
	}
	return o
}

// op is one operation in flight.
type op struct {
	t     *Target
	name  string
	span  trace.Span
	start time.Time
}

func (t *Target) start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, *op) {
	ctx, span := t.tracer.Start(ctx, "target."+name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(t.attrs...), trace.WithAttributes(attrs...))
	return ctx, &op{t: t, name: name, span: span, start: time.Now()}
}

// end records the outcome; n is the number of bytes moved (< 0: none).
func (o *op) end(ctx context.Context, n int64, err error) {
	attrs := metric.WithAttributes(slices.Concat(o.t.mattrs, []attribute.KeyValue{MetricKeyOperation.String(o.name)})...)
	o.t.ops.Add(ctx, 1, attrs)
	o.t.duration.Record(ctx, time.Since(o.start).Seconds(), attrs)
	if n >= 0 {
		o.span.SetAttributes(KeyBytes.Int64(n))
		o.t.bytes.Add(ctx, n, attrs)
	}
	if err != nil {
		typ := errorType(err)
		o.span.RecordError(err)
		o.span.SetStatus(codes.Error, err.Error())
		o.span.SetAttributes(KeyErrorType.String(typ))
		o.t.errs.Add(ctx, 1, attrs, metric.WithAttributes(KeyErrorType.String(typ)))
	}
	o.span.End()
}

// errorType is a bounded classification of err for the error.type attribute.
func errorType(err error) string {
	for _, c := range []struct {
		err error
		typ string
	}{
		{target.ErrNotFound, "not_found"}, {target.ErrExists, "exists"},
		{target.ErrChecksumMismatch, "checksum_mismatch"}, {target.ErrInvalidName, "invalid_name"},
		{target.ErrInvalidRange, "invalid_range"}, {target.ErrLocked, "locked"},
		{target.ErrPermanent, "permanent"}, {context.Canceled, "canceled"},
		{context.DeadlineExceeded, "timeout"},
	} {
		if errors.Is(err, c.err) {
			return c.typ
		}
	}
	return "transient"
}

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	ctx, o := t.start(ctx, "put", KeyObject.String(name))
	err := t.Target.Put(ctx, name, r, size, opts)
	n := size
	if err != nil {
		n = -1
	}
	o.end(ctx, n, err)
	return err
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	ctx, o := t.start(ctx, "get", KeyObject.String(name))
	return o.body(ctx, func(ctx context.Context) (io.ReadCloser, error) { return t.Target.Get(ctx, name) })
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	ctx, o := t.start(ctx, "get_range", KeyObject.String(name),
		attribute.Int64("custos.object.offset", offset), attribute.Int64("custos.object.length", length))
	return o.body(ctx, func(ctx context.Context) (io.ReadCloser, error) {
		return t.Target.GetRange(ctx, name, offset, length)
	})
}

func (o *op) body(ctx context.Context, get func(context.Context) (io.ReadCloser, error)) (io.ReadCloser, error) {
	rc, err := get(ctx)
	if err != nil {
		o.end(ctx, -1, err)
		return nil, err
	}
	return &body{ReadCloser: rc, ctx: ctx, op: o}, nil
}

// body counts the bytes read and ends the operation on the first Close. A read error other
// than EOF is recorded as the operation's error.
type body struct {
	io.ReadCloser
	ctx  context.Context
	op   *op
	n    int64
	err  error
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.op.end(b.ctx, b.n, errors.Join(b.err, err)) })
	return err
}

// Stat implements target.Reader.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	ctx, o := t.start(ctx, "stat", KeyObject.String(name))
	info, err := t.Target.Stat(ctx, name)
	o.end(ctx, -1, err)
	return info, err
}

// List implements target.Reader. The span holds the prefix and the number of objects.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	ctx, o := t.start(ctx, "list", attribute.String("custos.list.prefix", prefix))
	var n int64
	err := t.Target.List(ctx, prefix, func(i target.Info) error { n++; return fn(i) })
	o.span.SetAttributes(attribute.Int64("custos.list.objects", n))
	o.end(ctx, -1, err)
	return err
}

// Delete implements target.Writer.
func (t *Target) Delete(ctx context.Context, name string) error {
	ctx, o := t.start(ctx, "delete", KeyObject.String(name))
	err := t.Target.Delete(ctx, name)
	o.end(ctx, -1, err)
	return err
}
