package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Dead-letter headers added to the original event's headers.
const (
	HeaderDLQReason     = "Custos-Dlq-Reason"
	HeaderDLQSubject    = "Custos-Dlq-Subject"
	HeaderDLQSeq        = "Custos-Dlq-Stream-Seq"
	HeaderDLQDeliveries = "Custos-Dlq-Deliveries"
	HeaderDLQTime       = "Custos-Dlq-Time"
	// HeaderDLQBody is set when the dead letter holds no body, and says why (the customer
	// was erased). Bodies are sealed under the customer's data key (package deadletter).
	HeaderDLQBody = deadletter.HeaderBody
)

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// receive decodes one event and routes it. A panic while handling it is turned into a retry, so
// one poison event cannot stop the worker.
func (w *Worker) receive(h *heldMsg) {
	msg := h.msg
	parent := telemetry.Extract(context.Background(), msg.Headers())
	h.ctx, h.span = w.tracer.Start(parent, "process "+msg.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", w.cfg.Consumer),
			attribute.Int64("messaging.nats.stream.sequence", int64(h.seq)),
			attribute.Int64("messaging.nats.delivered", int64(h.delivered)),
		))
	defer func() {
		if r := recover(); r != nil {
			w.log.ErrorContext(h.ctx, "handler panicked", "seq", h.seq, "panic", fmt.Sprint(r))
			h.retryLater(fmt.Errorf("handler panicked: %v", r))
		}
	}()
	if h.delivered > uint64(w.cfg.MaxDeliver) {
		// A worker died during the last allowed delivery; do not try again.
		w.mu.Lock()
		last := w.lastErr[h.seq]
		w.mu.Unlock()
		if last == "" {
			last = "no error recorded (worker may have crashed)"
		}
		w.deadLetter(h, fmt.Sprintf("delivered %d times, limit %d: %s", h.delivered, w.cfg.MaxDeliver, last))
		return
	}
	_, dspan := w.tracer.Start(h.ctx, "decode")
	ev, err := event.Decode(msg.Subject(), msg.Headers(), msg.Data(), w.limits)
	if err != nil {
		dspan.RecordError(err)
		dspan.End()
		w.deadLetter(h, err.Error())
		return
	}
	dspan.End()
	w.metrics.decoded(h, ev) // metrics.go
	if id := ev.Meta.GetEventId(); id != "" {
		h.span.SetAttributes(attribute.String("messaging.message.id", id))
		// Every line logged about the event from here on names it (telemetry.WithLogAttrs).
		h.ctx = telemetry.WithLogAttrs(h.ctx, slog.String("event_id", id))
	}
	if bt := ev.Batch(); bt != nil {
		// Until backupBatch (or a rebuilt pack) says how many entries were backed up.
		h.batch, h.entries = true, len(bt.GetEvents())
	}
	h.audit = w.auditEntry(ev)
	if ev.Meta.GetCustomerId() != "" {
		h.scope = w.pseudonym(ev.Meta)
	}
	if h.delivered > 1 {
		w.count(func(s *Stats) { s.Redelivered++ })
		if w.resumeIntent(h) {
			return
		}
	}
	w.dispatch(h, ev)
}

func (w *Worker) dispatch(h *heldMsg, ev *event.Event) {
	if w.drillTrigger(h, ev) { // a ScheduleTick with method "drill" (drill.go)
		return
	}
	switch m := ev.Msg.(type) {
	case *custosv1.PostTransaction:
		w.backup(h, m.GetMeta(), []*custosv1.Record{m.GetRecord()}, false)
	case *custosv1.ManualRequest:
		if len(m.GetRecords()) == 0 && w.hasSource(m.GetMeta().GetDataClass()) {
			// No records given: back the class (or the customer) up from its source.
			w.planFor(h, ev)
			return
		}
		w.backup(h, m.GetMeta(), m.GetRecords(), false)
	case *custosv1.PostTransactionBatch:
		w.backupBatch(h, m) // batch.go
	case *custosv1.SuspiciousActivity:
		w.suspicious(h, m)
	case *custosv1.DeletionRequest:
		w.erase(h, m)
	case *custosv1.ScheduleTick, *custosv1.ComplianceDeadline:
		w.planFor(h, ev)
	default:
		w.deadLetter(h, fmt.Sprintf("unsupported event type %T", ev.Msg))
	}
}

func (w *Worker) pseudonym(m *custosv1.Meta) string {
	return w.deps.Pseudonyms.Pseudonym(m.GetTenant(), m.GetCustomerId())
}

func (w *Worker) itemID(m *custosv1.Meta, idx int) string {
	return w.deps.Pseudonyms.Pseudonym("item:"+m.GetTenant(), m.GetEventId()+"#"+strconv.Itoa(idx))
}

// backup seals the event's records and hands them to the class's packer. The event is held
// until the pack holding them is indexed. With hold, the records go to the class's held packer
// (legal hold) and are written at once.
func (w *Worker) backup(h *heldMsg, meta *custosv1.Meta, records []*custosv1.Record, hold bool) {
	if len(records) == 0 {
		w.log.Info("trigger without records; nothing to back up here", "class", meta.GetDataClass())
		w.finish(h)
		return
	}
	for i, r := range records {
		if r.GetRef() != nil {
			if len(records) != 1 {
				w.deadLetter(h, "an event may carry one record by reference, alone")
				return
			}
			w.work.Add(1)
			go func() {
				defer w.work.Done()
				w.backupRef(h, meta, i, r, hold)
			}()
			return
		}
	}
	items, err := w.sealInline(h.ctx, h.seq, meta, records)
	if err != nil {
		if errors.Is(err, keys.ErrDestroyed) {
			// Recorded without its body: nothing of an erased customer is kept.
			w.deadLetter(h, "customer was erased; refusing to back up new data for it")
			return
		}
		if errors.Is(err, pack.ErrBadCompressed) {
			// The same bytes fail the same way on every delivery: no retry.
			w.deadLetter(h, "record.inline_zstd: "+err.Error())
			return
		}
		h.retryLater(err)
		return
	}
	p := w.packers[packerKey(meta.GetDataClass(), hold)]
	p.add(h, items)
	if hold {
		p.flush() // do not wait for the pack's age limit
	}
}

// sealInline builds the items of one event. It is deterministic (design.md 4.4), which is what
// lets a redelivered event rebuild the same pack.
func (w *Worker) sealInline(ctx context.Context, seq uint64, meta *custosv1.Meta, records []*custosv1.Record) ([]pack.Item, error) {
	_, span := w.tracer.Start(ctx, "encrypt", trace.WithAttributes(attribute.Int("custos.items", len(records))))
	defer span.End()
	pseudo := w.pseudonym(meta)
	dek, err := w.deps.Keys.DataKey(ctx, pseudo)
	if err != nil {
		span.RecordError(err)
		return nil, fmt.Errorf("data key: %w", err)
	}
	items := make([]pack.Item, 0, len(records))
	for i, r := range records {
		it, err := w.sealRecord(dek, pseudo, seq, meta, i, r)
		if err != nil {
			span.RecordError(err)
			return nil, err
		}
		items = append(items, it)
	}
	w.count(func(s *Stats) { s.Items += int64(len(items)) })
	return items, nil
}

// sealRecord seals record idx of an event into its item: the producer's compressed bytes as
// they came (pack.SealCompressed), or the record compressed here. Every inline record, alone or
// in a batch, is sealed here, so an event's item is the same whichever way it travelled.
func (w *Worker) sealRecord(dek []byte, pseudo string, seq uint64, meta *custosv1.Meta, idx int, r *custosv1.Record) (pack.Item, error) {
	id := w.itemID(meta, idx)
	im := pack.ItemMeta{Tenant: meta.GetTenant(), CustomerID: meta.GetCustomerId(), RecordKey: r.GetKey(),
		EventID: meta.GetEventId(), EventTime: meta.GetTime().AsTime().UTC(), ContentType: r.GetContentType()}
	var sealed []byte
	var err error
	if z := r.GetInlineZstd(); z != nil {
		sealed, err = w.codec.SealCompressed(dek, pseudo, meta.GetDataClass(), id, im, z, int64(w.cfg.MaxInlineBytes))
	} else {
		sealed, err = w.codec.SealItem(dek, pseudo, meta.GetDataClass(), id, im, r.GetInline())
	}
	if err != nil {
		return pack.Item{}, fmt.Errorf("seal item: %w", err)
	}
	return pack.Item{ID: id, Customer: pseudo, Seq: seq, EventTime: im.EventTime, Sealed: sealed}, nil
}
