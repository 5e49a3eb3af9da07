// Package producer is the Go SDK application services use to publish Custos trigger events to
// NATS JetStream.
//
// Every publish validates the event (nothing is published on invalid input), fills an empty
// meta.event_id and meta.time, sets the CloudEvents headers and Nats-Msg-Id (= event id, so
// JetStream de-duplicates retries within its 2-minute window), injects the caller's trace
// context, records a producer span, and retries transient broker errors with backoff and jitter.
// PublishAsync and Flush serve high-rate producers.
package producer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Named errors. Each failed publish wraps exactly one of them, plus the cause.
var (
	// ErrInvalidEvent: the event failed validation and was not published. The error also wraps
	// the event package's error (event.ErrMissingField, event.ErrUnknownClass, ...).
	ErrInvalidEvent = errors.New("producer: invalid event")
	// ErrUnavailable: the broker did not accept the event after every attempt (no stream
	// responded, timeouts, disconnection). Publishing the same message again is safe: it keeps
	// its event id and is de-duplicated.
	ErrUnavailable = errors.New("producer: broker unavailable")
	// ErrRejected: the broker refused the event with a permanent error (e.g. a stream limit);
	// retrying will not help.
	ErrRejected = errors.New("producer: rejected by broker")
)

// Producer publishes Custos events. It is safe for concurrent use.
type Producer struct {
	js     jetstream.JetStream
	source string
	o      options
	tracer trace.Tracer
	sem    chan struct{} // async publishes in flight
	// batches holds PublishAsync's post-transaction events until they leave as one message.
	batches batcher

	mu       sync.Mutex
	pending  map[*Future]struct{}
	failed   int   // async failures since the last Flush
	firstErr error // the first of them
}

// New returns a Producer publishing through js as source, the ce-source of its events: a
// URI-reference naming the producing service, e.g. "//billing.example.com/orders-api".
func New(js jetstream.JetStream, source string, opts ...Option) (*Producer, error) {
	if js == nil {
		return nil, errors.New("producer: nil JetStream")
	}
	o := options{
		contentType:    event.ContentTypeProtobuf,
		now:            time.Now,
		newID:          uuid.NewString,
		attempts:       DefaultAttempts,
		backoffBase:    DefaultBackoffBase,
		backoffMax:     DefaultBackoffMax,
		attemptTimeout: DefaultAttemptTimeout,
		maxPending:     DefaultMaxPending,
		compressFrom:   DefaultCompressFrom,
		batchMax:       DefaultBatchMaxEvents,
		batchLinger:    DefaultBatchLinger,
		batchMaxBytes:  DefaultBatchMaxBytes,
	}
	for _, opt := range opts {
		opt.applyOption(&o)
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	if o.limits.Now == nil {
		o.limits.Now = o.now
	}
	switch {
	case source == "":
		return nil, fmt.Errorf("%w: empty source (ce-source)", ErrInvalidEvent)
	case o.contentType != event.ContentTypeProtobuf && o.contentType != event.ContentTypeJSON:
		return nil, fmt.Errorf("%w: %w: %q", ErrInvalidEvent, event.ErrUnsupportedContentType, o.contentType)
	case o.attempts < 1 || o.backoffBase <= 0 || o.backoffMax < o.backoffBase:
		return nil, errors.New("producer: WithRetry needs attempts >= 1 and 0 < base <= max")
	case o.attemptTimeout <= 0 || o.maxPending < 1:
		return nil, errors.New("producer: attempt timeout and max pending must be positive")
	case o.batchMax > event.MaxBatchEvents || (o.batchMax > 1 && o.batchLinger <= 0):
		return nil, fmt.Errorf("producer: WithBatching needs at most %d events and a positive linger", event.MaxBatchEvents)
	}
	if limit := o.limits.MaxEventBytes; limit > 0 && o.batchMaxBytes > limit/2 {
		o.batchMaxBytes = limit / 2
	}
	return &Producer{
		js:      js,
		source:  source,
		o:       o,
		tracer:  o.tp.Tracer(telemetry.InstrumentationName + "/pkg/producer"),
		sem:     make(chan struct{}, o.maxPending),
		pending: map[*Future]struct{}{},
		batches: batcher{open: map[[2]string]*openBatch{}},
	}, nil
}

// PublishPostTransaction publishes a post-transaction event and waits for the stream's ack.
// Like every Publish method it fills an empty meta.event_id and meta.time in msg itself, so
// publishing the same msg again after an error reuses the event id and is de-duplicated.
func (p *Producer) PublishPostTransaction(ctx context.Context, msg *custosv1.PostTransaction, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// PublishDeletionRequest publishes a deletion request and waits for the stream's ack.
func (p *Producer) PublishDeletionRequest(ctx context.Context, msg *custosv1.DeletionRequest, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// PublishScheduleTick publishes a schedule tick and waits for the stream's ack.
func (p *Producer) PublishScheduleTick(ctx context.Context, msg *custosv1.ScheduleTick, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// PublishComplianceDeadline publishes a compliance deadline and waits for the stream's ack.
func (p *Producer) PublishComplianceDeadline(ctx context.Context, msg *custosv1.ComplianceDeadline, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// PublishManualRequest publishes a manual backup request and waits for the stream's ack.
func (p *Producer) PublishManualRequest(ctx context.Context, msg *custosv1.ManualRequest, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// PublishSuspiciousActivity publishes a suspicious-activity event and waits for the stream's ack.
func (p *Producer) PublishSuspiciousActivity(ctx context.Context, msg *custosv1.SuspiciousActivity, opts ...PublishOption) (*jetstream.PubAck, error) {
	return p.Publish(ctx, msg, opts...)
}

// Publish publishes any Custos event message (*custosv1.PostTransaction, ...) and waits for the
// stream's ack. A duplicate (same event id within the duplicate window) is not an error: the ack
// has Duplicate set. Errors wrap ErrInvalidEvent, ErrUnavailable, ErrRejected, or ctx's error.
func (p *Producer) Publish(ctx context.Context, msg proto.Message, opts ...PublishOption) (*jetstream.PubAck, error) {
	ev, m, err := p.prepare(msg, opts)
	if err != nil {
		return nil, err
	}
	ctx, span := p.startSpan(ctx, ev, m.Subject, len(m.Data), m.Header)
	defer span.End()
	ack, err := p.publishWithRetry(ctx, span, m, 1)
	endSpan(span, ack, err)
	return ack, err
}

// prepare fills, validates and encodes msg.
func (p *Producer) prepare(msg proto.Message, opts []PublishOption) (*event.Event, *nats.Msg, error) {
	po := publishOpts(p, opts)
	if msg == nil {
		return nil, nil, fmt.Errorf("%w: %w: nil message", ErrInvalidEvent, event.ErrMissingField)
	}
	ev, err := event.New(msg, p.source)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	p.fill(ev.Meta)
	if c := p.compressed(msg); c != nil { // after the ids are filled in msg: a retry reuses them
		if ev, err = event.New(c, p.source); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		}
	}
	ev.ContentType = po.contentType
	ev.Subject = po.subject
	subject, hdr, data, err := p.o.limits.Encode(ev, "")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalidEvent, ev.Type, err)
	}
	if dr := ev.DeletionRequest(); dr != nil && po.signKey != nil {
		if dr.GetRequestedBy() != po.signer {
			return nil, nil, fmt.Errorf("%w: requested_by must be the signer %q", ErrInvalidEvent, po.signer)
		}
		m := dr.GetMeta()
		erasure.SignRequest(hdr, erasure.RequestFields{EventID: m.GetEventId(), Tenant: m.GetTenant(),
			CustomerID: m.GetCustomerId(), Class: m.GetDataClass(), RequestedBy: dr.GetRequestedBy(),
			Time: m.GetTime().AsTime()}, po.signer, po.signKey)
	}
	return ev, &nats.Msg{Subject: subject, Header: hdr, Data: data}, nil
}

// fill sets an empty event id and time in meta (nil is left alone).
func (p *Producer) fill(meta *custosv1.Meta) {
	if meta == nil {
		return
	}
	if meta.EventId == "" {
		meta.EventId = p.o.newID()
	}
	if meta.Time == nil {
		meta.Time = timestamppb.New(p.o.now())
	}
}

// startSpan starts the producer span of ev, sent on subject with size bytes of data, and puts
// its trace context in hdr.
func (p *Producer) startSpan(ctx context.Context, ev *event.Event, subject string, size int, hdr nats.Header, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs := append([]attribute.KeyValue{telemetry.MessageBodySize(size),
		attribute.String("cloudevents.event_type", ev.Type.CEType()),
		attribute.String("cloudevents.event_source", ev.Source),
		attribute.String("custos.data_class", ev.Meta.GetDataClass()),
	}, extra...)
	ctx, span := p.tracer.Start(ctx, telemetry.SpanName(telemetry.OperationSend, subject),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.MessagingAttributes(telemetry.OperationSend, subject, ev.ID(), attrs...)...))
	telemetry.Inject(ctx, hdr)
	return ctx, span
}

func endSpan(span trace.Span, ack *jetstream.PubAck, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.SetAttributes(
		attribute.String("custos.jetstream.stream", ack.Stream),
		attribute.Int64("custos.jetstream.sequence", int64(ack.Sequence)),
		attribute.Bool("custos.jetstream.duplicate", ack.Duplicate),
	)
}

// publishWithRetry publishes m synchronously, starting at attempt number first, retrying
// transient errors. Retrying is safe: m carries Nats-Msg-Id, so a publish whose ack was lost is
// acknowledged as a duplicate.
func (p *Producer) publishWithRetry(ctx context.Context, span trace.Span, m *nats.Msg, first int) (*jetstream.PubAck, error) {
	for attempt := first; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.o.attemptTimeout)
		ack, err := p.js.PublishMsg(actx, m, jetstream.WithRetryAttempts(0))
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("producer: publish %s: %w", m.Subject, ctx.Err())
		}
		if !transient(err) {
			return nil, fmt.Errorf("%w: publish %s: %w", ErrRejected, m.Subject, err)
		}
		if attempt >= p.o.attempts {
			return nil, fmt.Errorf("%w: publish %s: %d attempts: %w", ErrUnavailable, m.Subject, attempt, err)
		}
		span.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", attempt), attribute.String("error", err.Error())))
		t := time.NewTimer(p.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("producer: publish %s: %w", m.Subject, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff is the sleep after the given failed attempt: exponential from base, capped at max,
// with jitter over its upper half so retrying producers spread out.
func (p *Producer) backoff(attempt int) time.Duration {
	d := p.o.backoffBase << min(attempt-1, 30)
	if d > p.o.backoffMax || d <= 0 {
		d = p.o.backoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// transient reports whether err may go away by itself: the broker unavailable (no stream
// answered, a leader election, a timeout, a disconnection, 503: broker.Unavailable), or the
// client's own publish window timing out or stalling.
func transient(err error) bool {
	return broker.Unavailable(err) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs)
}
