package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/audit"
)

// heldMsg is one event the worker holds: received, not yet acknowledged, naked or dead-lettered.
// Exactly one of ack, nak or term settles it; later calls do nothing.
type heldMsg struct {
	lease
	w         *Worker
	seq       uint64
	delivered uint64
	received  time.Time
	ctx       context.Context // carries the event's processing span
	span      trace.Span
	// audit is the entry to append once the event is settled; nil for events not audited.
	audit *audit.Entry
	// scope is the pseudonym of the customer the event concerns, once decoded; a dead letter
	// is sealed under its data key.
	scope string
	// snapshot is the id of the snapshot job the event planned, for its audit entry.
	snapshot string
	// batch: the message is a PostTransactionBatch, whose entries backed up (not dead-lettered)
	// number entries; Stats.Events counts those.
	batch   bool
	entries int
	// bytes is the message's data size, counted against MaxInFlightBytes until it is settled.
	bytes int64
	// entrySpans are the process spans of a batch's entries, each in its event's own trace,
	// ended when the message is settled (batch.go).
	entrySpans []trace.Span
	spansMu    sync.Mutex
}

func (w *Worker) hold(msg jetstream.Msg) *heldMsg {
	h := &heldMsg{lease: lease{msg: msg}, w: w, received: w.cfg.Clock()}
	if md, err := msg.Metadata(); err == nil {
		h.seq, h.delivered = md.Sequence.Stream, md.NumDelivered
	}
	w.mu.Lock()
	w.held[h] = struct{}{}
	w.mu.Unlock()
	return h
}

// settle runs f once and releases the event's in-flight slot.
func (h *heldMsg) settle(f func() error, outcome string, err error) {
	ran, ferr := h.lease.settle(f)
	if !ran {
		return
	}
	h.w.metrics.settled(h, outcome) // metrics.go
	if ferr != nil {
		h.w.log.Warn("settle event", "outcome", outcome, "seq", h.seq, "err", ferr)
	}
	w := h.w
	w.mu.Lock()
	delete(w.held, h)
	if h.bytes > 0 {
		w.heldBytes -= h.bytes
		w.bytesFree.Broadcast()
	}
	if outcome == "ack" {
		if h.batch {
			w.stats.Events += int64(h.entries)
		} else {
			w.stats.Events++
		}
		delete(w.lastErr, h.seq)
	}
	w.mu.Unlock()
	for i := range h.spans() {
		var serr error
		if outcome != "ack" {
			serr = err
			if serr == nil {
				serr = errors.New(outcome)
			}
		}
		h.endEntrySpan(i, serr)
	}
	if h.span != nil {
		if err != nil {
			h.span.RecordError(err)
			h.span.SetStatus(codes.Error, outcome)
		}
		h.span.End()
	}
	<-w.sem
	w.work.Done()
}

func (h *heldMsg) ack() {
	h.settle(func() error {
		_, span := h.w.tracer.Start(h.ctx, "ack", trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		return h.msg.Ack()
	}, "ack", nil)
}

func (h *heldMsg) nak(delay time.Duration) {
	h.settle(func() error {
		_, span := h.w.tracer.Start(h.ctx, "nak", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.Float64("custos.retry.delay_seconds", delay.Seconds()),
				attribute.Int64("messaging.nats.delivered", int64(h.delivered))))
		defer span.End()
		return h.msg.NakWithDelay(delay)
	}, "nak", nil)
}

func (h *heldMsg) term(reason error) {
	h.settle(func() error {
		_, span := h.w.tracer.Start(h.ctx, "term", trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		return h.msg.TermWithReason(reason.Error())
	}, "term", reason)
}

// retryLater naks with a backoff that grows with deliveries, or dead-letters the event once it
// has had MaxDeliver deliveries.
func (h *heldMsg) retryLater(err error) {
	w := h.w
	w.mu.Lock()
	w.lastErr[h.seq] = err.Error()
	w.mu.Unlock()
	if h.delivered >= uint64(w.cfg.MaxDeliver) {
		w.deadLetter(h, "gave up after "+itoa(h.delivered)+" deliveries: "+err.Error())
		return
	}
	delay := retryDelay(h.delivered)
	w.log.WarnContext(h.ctx, "event will be retried", "seq", h.seq, "delivery", h.delivered, "delay", delay, "err", err)
	if h.span != nil {
		h.span.RecordError(err)
	}
	h.nak(delay)
}
