package producer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Batching defaults (WithBatching).
const (
	// DefaultBatchMaxEvents is the most events one batch message carries.
	DefaultBatchMaxEvents = 256
	// DefaultBatchLinger is how long a batch that is not full waits for more events.
	DefaultBatchLinger = 2 * time.Millisecond
	// DefaultBatchMaxBytes bounds a batch message's data: half of the default event size limit
	// (event.DefaultMaxEventBytes), so a batch always fits the broker's max_payload.
	DefaultBatchMaxBytes = event.DefaultMaxEventBytes / 2
)

// maxTraceContext bounds what an entry's trace context and field framing add to its event in a
// batch message: a 55-byte traceparent and a tracestate of at most event.MaxTraceContextLen.
const maxTraceContext = 64 + event.MaxTraceContextLen + 16

// openBatch is a batch being filled: events of one tenant and data class.
type openBatch struct {
	tenant, class string
	entries       []*custosv1.BatchedPostTransaction
	futures       []*Future
	spans         []trace.Span
	bytes         int
	timer         *time.Timer
}

// batcher gathers PublishAsync's post-transaction events into PostTransactionBatch messages.
type batcher struct {
	mu   sync.Mutex
	open map[[2]string]*openBatch
}

// batchable reports whether msg goes into a batch: a post-transaction event, with batching on,
// no per-call ce-subject (a batch has one ce-subject for many customers) and the producer's
// default encoding.
func (p *Producer) batchable(msg proto.Message, po publishOptions) (*custosv1.PostTransaction, bool) {
	pt, ok := msg.(*custosv1.PostTransaction)
	if !ok || p.o.batchMax <= 1 || po.subject != "" || po.contentType != p.o.contentType {
		return nil, false
	}
	return pt, pt.GetRecord().GetRef() == nil
}

// enqueue validates one post-transaction event and adds it to its tenant and class's open
// batch. The Future resolves when the batch message is acknowledged (or fails).
func (p *Producer) enqueue(ctx context.Context, pt *custosv1.PostTransaction) (*Future, error) {
	ev, err := event.New(pt, p.source)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	p.fill(ev.Meta)
	entry := pt
	if c := p.compressed(pt); c != nil {
		entry = c.(*custosv1.PostTransaction)
		ev.Msg, ev.Meta = entry, entry.GetMeta()
	}
	if err := p.o.limits.Validate(ev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	// The entry's own bytes decide whether it goes alone; its trace context, added below, is
	// bounded by maxTraceContext.
	if proto.Size(entry)+maxTraceContext > p.o.batchMaxBytes {
		return nil, errTooBigForBatch
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("producer: publish %s: %w", event.TypePostTransaction.Subject(), ctx.Err())
	}
	hdr := nats.Header{}
	_, span := p.startSpan(context.WithoutCancel(ctx), ev, event.TypePostTransaction.Subject(), proto.Size(entry), hdr,
		attribute.Bool("custos.batched", true))
	be := &custosv1.BatchedPostTransaction{Event: entry, Traceparent: hdr.Get(event.HeaderTraceParent)}
	if ts := hdr.Get(event.HeaderTraceState); len(ts) <= event.MaxTraceContextLen {
		be.Tracestate = ts // a longer one is dropped, as W3C allows, rather than the event refused
	}
	size := protowire.SizeTag(2) + protowire.SizeBytes(proto.Size(be)) // its bytes in the batch message
	f := &Future{id: ev.ID(), done: make(chan struct{})}
	p.mu.Lock()
	p.pending[f] = struct{}{}
	p.mu.Unlock()

	key := [2]string{ev.Meta.GetTenant(), ev.Meta.GetDataClass()}
	var full []*openBatch
	p.batches.mu.Lock()
	b := p.batches.open[key]
	if b != nil && b.bytes+size > p.o.batchMaxBytes {
		full = append(full, p.detach(key, b))
		b = nil
	}
	if b == nil {
		b = &openBatch{tenant: key[0], class: key[1]}
		p.batches.open[key] = b
		b.timer = time.AfterFunc(p.o.batchLinger, func() { p.flushBatch(key, b) })
	}
	b.entries = append(b.entries, be)
	b.futures = append(b.futures, f)
	b.spans = append(b.spans, span)
	b.bytes += size
	if len(b.entries) >= p.o.batchMax {
		full = append(full, p.detach(key, b))
	}
	p.batches.mu.Unlock()
	for _, b := range full {
		p.sendBatch(b)
	}
	return f, nil
}

// errTooBigForBatch: the event is published alone.
var errTooBigForBatch = fmt.Errorf("producer: event too big for a batch")

// detach removes b from the open batches; p.batches.mu must be held.
func (p *Producer) detach(key [2]string, b *openBatch) *openBatch {
	delete(p.batches.open, key)
	b.timer.Stop()
	return b
}

// flushBatch sends b if it is still open (its linger time is over).
func (p *Producer) flushBatch(key [2]string, b *openBatch) {
	p.batches.mu.Lock()
	if p.batches.open[key] != b {
		p.batches.mu.Unlock()
		return
	}
	p.detach(key, b)
	p.batches.mu.Unlock()
	p.sendBatch(b)
}

// flushBatches sends every open batch now.
func (p *Producer) flushBatches() {
	p.batches.mu.Lock()
	var all []*openBatch
	for key, b := range p.batches.open {
		all = append(all, p.detach(key, b))
	}
	p.batches.mu.Unlock()
	for _, b := range all {
		p.sendBatch(b)
	}
}

// sendBatch publishes b as one message and resolves its events' Futures with the outcome. The
// batch has its own id, so a retried batch is de-duplicated like a retried event.
func (p *Producer) sendBatch(b *openBatch) {
	msg := &custosv1.PostTransactionBatch{
		Meta: &custosv1.Meta{EventId: p.o.newID(), Time: timestamppb.New(p.o.now()),
			Tenant: b.tenant, DataClass: b.class},
		Events: b.entries,
	}
	ev := &event.Event{Type: event.TypePostTransactionBatch, Meta: msg.Meta, Msg: msg, Source: p.source,
		ContentType: p.o.contentType}
	resolveAll := func(span trace.Span, ack *jetstream.PubAck, err error) {
		for i, f := range b.futures {
			p.resolve(f, b.spans[i], ack, err)
		}
		if span != nil {
			endSpan(span, ack, err)
			span.End()
		}
	}
	subject, hdr, data, err := p.o.limits.Encode(ev, "")
	if err != nil {
		// Every entry was valid and the sizes were bounded: this is a bug, not bad input.
		resolveAll(nil, nil, fmt.Errorf("%w: batch of %d events: %w", ErrRejected, len(b.entries), err))
		return
	}
	links := make([]trace.Link, len(b.spans))
	for i, s := range b.spans {
		links[i] = trace.Link{SpanContext: s.SpanContext()}
	}
	ctx, span := p.tracer.Start(context.Background(), telemetry.SpanName(telemetry.OperationSend, subject),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...),
		trace.WithAttributes(telemetry.MessagingAttributes(telemetry.OperationSend, subject, ev.ID(),
			telemetry.MessageBodySize(len(data)), attribute.Int("messaging.batch.message_count", len(b.entries)))...))
	m := &nats.Msg{Subject: subject, Header: hdr, Data: data}
	telemetry.Inject(ctx, m.Header)
	jsf, err := p.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
	if err != nil && !transient(err) {
		resolveAll(span, nil, fmt.Errorf("%w: publish %s: %w", ErrRejected, subject, err))
		return
	}
	go func() {
		ack, err := p.await(ctx, span, m, jsf)
		resolveAll(span, ack, err)
	}()
}
