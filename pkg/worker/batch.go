package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Headers of a dead-lettered batch entry, besides the usual dead-letter headers: the batch it
// came in and its place there.
const (
	HeaderDLQBatch      = "Custos-Dlq-Batch"
	HeaderDLQBatchIndex = "Custos-Dlq-Batch-Index"
)

// maxTraceParent bounds the traceparent copied into a dead letter's headers (a W3C traceparent
// is 55 characters; an invalid entry's may be anything).
const maxTraceParent = 512

// rejectedEntry is a batch entry that is dead-lettered instead of backed up.
type rejectedEntry struct {
	index  int
	reason string
}

// backupBatch backs up a PostTransactionBatch as if each entry had come alone: valid entries
// are sealed into the class's pack and the message is held until that pack is indexed; each
// invalid entry, or one of an erased customer, is dead-lettered by itself first. Nothing is
// acknowledged before its entries are either durable or in the dead-letter stream.
func (w *Worker) backupBatch(h *heldMsg, b *custosv1.PostTransactionBatch) {
	w.startEntrySpans(h, b)
	h.span.SetAttributes(attribute.Int("messaging.batch.message_count", len(b.GetEvents())))
	items, rejected, err := w.sealBatch(h.ctx, h.seq, b)
	if err != nil {
		h.retryLater(err)
		return
	}
	for _, r := range rejected {
		if err := w.deadLetterEntry(h, b, r.index, r.reason); err != nil {
			// The dead letters already stored are de-duplicated when the batch comes again.
			w.log.ErrorContext(h.ctx, "dead-lettering a batch entry failed; batch handed back", "seq", h.seq, "err", err)
			h.nak(time.Second)
			return
		}
	}
	h.entries = len(b.GetEvents()) - len(rejected)
	if len(items) == 0 {
		w.finish(h)
		return
	}
	w.packers[packerKey(b.GetMeta().GetDataClass(), false)].add(h, items)
}

// startEntrySpans starts a process span for each entry that carries its producer's trace
// context, as a child of that producer span: each event's own trace shows its processing, as
// if it had come alone. Each links to the batch's process span, and gets the link to its pack
// commit; it ends when the batch is settled, or when its entry is dead-lettered.
func (w *Worker) startEntrySpans(h *heldMsg, b *custosv1.PostTransactionBatch) {
	batch := trace.Link{SpanContext: h.span.SpanContext(),
		Attributes: []attribute.KeyValue{attribute.String("custos.link", "batch")}}
	spans := make([]trace.Span, len(b.GetEvents()))
	defer func() {
		h.spansMu.Lock()
		h.entrySpans = spans
		h.spansMu.Unlock()
	}()
	for i, e := range b.GetEvents() {
		sc := entrySpanContext(e)
		if !sc.IsValid() {
			continue
		}
		_, spans[i] = w.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), sc),
			"process "+event.TypePostTransaction.Subject(), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(batch),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.message.id", e.GetEvent().GetMeta().GetEventId()),
				attribute.Int64("messaging.nats.stream.sequence", int64(h.seq)),
				attribute.Int("custos.batch.index", i)))
	}
}

// endEntrySpan ends entry i's span, if it has one. Ending a span twice does nothing, so the
// settle that ends them all may follow a dead letter that ended one.
func (h *heldMsg) endEntrySpan(i int, err error) {
	spans := h.spans()
	if i >= len(spans) || spans[i] == nil {
		return
	}
	if err != nil {
		spans[i].RecordError(err)
		spans[i].SetStatus(codes.Error, err.Error())
	}
	spans[i].End()
}

// spans returns the entry spans (nil for a message that is not a batch).
func (h *heldMsg) spans() []trace.Span {
	h.spansMu.Lock()
	defer h.spansMu.Unlock()
	return h.entrySpans
}

// entrySpanContext is the producer span of a batch entry, from its trace context.
func entrySpanContext(e *custosv1.BatchedPostTransaction) trace.SpanContext {
	if e.GetTraceparent() == "" {
		return trace.SpanContext{}
	}
	hdr := nats.Header{event.HeaderTraceParent: {e.GetTraceparent()}}
	if e.GetTracestate() != "" {
		hdr[event.HeaderTraceState] = []string{e.GetTracestate()}
	}
	return trace.SpanContextFromContext(telemetry.Extract(context.Background(), hdr))
}

// sealBatch seals the valid entries of a batch, each under its own customer's data key, and
// lists the entries to dead-letter. Like sealInline it is deterministic, so a redelivered batch
// rebuilds the same pack; an entry's item is the one it would have had alone. An error (a key
// store that does not answer) means the whole batch is retried.
func (w *Worker) sealBatch(ctx context.Context, seq uint64, b *custosv1.PostTransactionBatch) ([]pack.Item, []rejectedEntry, error) {
	_, span := w.tracer.Start(ctx, "encrypt", trace.WithAttributes(attribute.Int("custos.items", len(b.GetEvents()))))
	defer span.End()
	items := make([]pack.Item, 0, len(b.GetEvents()))
	var rejected []rejectedEntry
	deks := map[string][]byte{} // entries of one customer share its key
	for i, e := range b.GetEvents() {
		if err := w.limits.ValidateBatchEntry(b, i); err != nil {
			rejected = append(rejected, rejectedEntry{i, err.Error()})
			continue
		}
		pt := e.GetEvent()
		meta, r := pt.GetMeta(), pt.GetRecord()
		pseudo := w.pseudonym(meta)
		dek, ok := deks[pseudo]
		if !ok {
			var err error
			dek, err = w.deps.Keys.DataKey(ctx, pseudo)
			if errors.Is(err, keys.ErrDestroyed) {
				dek = nil
			} else if err != nil {
				span.RecordError(err)
				return nil, nil, fmt.Errorf("data key: %w", err)
			}
			deks[pseudo] = dek
		}
		if dek == nil {
			rejected = append(rejected, rejectedEntry{i, "customer was erased; refusing to back up new data for it"})
			continue
		}
		it, err := w.sealRecord(dek, pseudo, seq, meta, 0, r) // the item it would have alone
		if errors.Is(err, pack.ErrBadCompressed) {
			rejected = append(rejected, rejectedEntry{i, fmt.Sprintf("events[%d]: record.inline_zstd: %v", i, errors.Unwrap(err))})
			continue
		}
		if err != nil {
			span.RecordError(err)
			return nil, nil, err
		}
		items = append(items, it)
	}
	w.count(func(s *Stats) { s.Items += int64(len(items)) })
	return items, rejected, nil
}

// deadLetterEntry records entry i of a batch in the dead-letter stream as the post-transaction
// event it is: its body sealed under its own customer's data key (so erasing that customer
// erases it), headers saying which batch it came in. The message id makes a repeat of the same
// entry (a redelivered batch) a duplicate.
func (w *Worker) deadLetterEntry(h *heldMsg, b *custosv1.PostTransactionBatch, i int, reason string) error {
	e := b.GetEvents()[i]
	pt := e.GetEvent()
	if pt == nil {
		pt = &custosv1.PostTransaction{}
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(pt)
	if err != nil {
		return err
	}
	// The entry's own CloudEvents attributes replace the batch's: the dead letter reads as the
	// post-transaction event it is.
	hdr := w.dlqHeaders(h, event.TypePostTransaction.Subject(), reason)
	for k := range hdr { // any spelling: NATS headers are case-sensitive
		for _, name := range []string{event.HeaderTraceParent, event.HeaderTraceState, event.HeaderID, event.HeaderTime, event.HeaderType, event.HeaderContentType} {
			if strings.EqualFold(k, name) {
				delete(hdr, k)
			}
		}
	}
	meta := pt.GetMeta()
	hdr.Set(event.HeaderType, event.TypePostTransaction.CEType())
	hdr.Set(event.HeaderContentType, event.ContentTypeProtobuf)
	if id := meta.GetEventId(); id != "" && len(id) <= event.MaxEventIDLen && !strings.ContainsAny(id, " \r\n") {
		hdr.Set(event.HeaderID, id)
	}
	if meta.GetTime() != nil && meta.GetTime().CheckValid() == nil {
		hdr.Set(event.HeaderTime, meta.GetTime().AsTime().UTC().Format(time.RFC3339Nano))
	}
	if tp := e.GetTraceparent(); tp != "" && len(tp) <= maxTraceParent {
		hdr.Set(event.HeaderTraceParent, tp)
	}
	hdr.Set(HeaderDLQBatch, b.GetMeta().GetEventId())
	hdr.Set(HeaderDLQBatchIndex, strconv.Itoa(i))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx, span := w.tracer.Start(trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(h.ctx)), "dead_letter",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attribute.Int("custos.batch.index", i)))
	defer span.End()
	scope := deadletter.SystemScope
	if c := meta.GetCustomerId(); c != "" && len(c) <= event.MaxCustomerIDLen && meta.GetTenant() != "" {
		scope = w.deps.Pseudonyms.Pseudonym(meta.GetTenant(), c)
	}
	id := "dlq-" + itoa(h.seq) + "-" + strconv.Itoa(i)
	if _, err := w.storeDeadLetter(ctx, string(event.TypePostTransaction), scope, id, hdr, body); err != nil {
		return err
	}
	h.endEntrySpan(i, errors.New("dead-lettered: "+reason))
	w.log.WarnContext(h.ctx, "batch entry dead-lettered", "seq", h.seq, "index", i, "reason", reason)
	w.count(func(s *Stats) { s.DeadLettered++ })
	w.metrics.deadLetteredAs(ctx, string(event.TypePostTransaction))
	return nil
}

// deadLetterBatch dead-letters every entry of a batch message that is rejected as a whole
// (delivered too often, or given up after retries), each under its own customer's key, then
// terminates the message. It reports false when the body is not a batch; the caller then
// dead-letters the message as it is.
func (w *Worker) deadLetterBatch(h *heldMsg, reason string) bool {
	if h.msg.Subject() != event.TypePostTransactionBatch.Subject() {
		return false
	}
	b := &custosv1.PostTransactionBatch{}
	if proto.Unmarshal(h.msg.Data(), b) != nil || len(b.GetEvents()) == 0 {
		return false
	}
	for i := range b.GetEvents() {
		if err := w.deadLetterEntry(h, b, i, reason); err != nil {
			w.log.ErrorContext(h.ctx, "dead-letter publish failed; batch handed back", "seq", h.seq, "err", err)
			h.nak(time.Second)
			return true
		}
	}
	w.log.WarnContext(h.ctx, "batch dead-lettered", "seq", h.seq, "entries", len(b.GetEvents()), "reason", reason)
	h.term(errors.New(reason))
	return true
}
