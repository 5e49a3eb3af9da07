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
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

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
	// HeaderDLQBody is set when the body could not be copied: the copy with the dead-letter
	// headers would exceed the broker's max_payload. The event stays in CUSTOS_EVENTS at
	// Custos-Dlq-Stream-Seq until that stream's age limit.
	HeaderDLQBody = "Custos-Dlq-Body"
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
			w.log.Error("handler panicked", "seq", h.seq, "panic", fmt.Sprint(r))
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
	if id := ev.Meta.GetEventId(); id != "" {
		h.span.SetAttributes(attribute.String("messaging.message.id", id))
	}
	h.audit = w.auditEntry(ev)
	if h.delivered > 1 {
		w.count(func(s *Stats) { s.Redelivered++ })
		if w.resumeIntent(h) {
			return
		}
	}
	w.dispatch(h, ev)
}

func (w *Worker) dispatch(h *heldMsg, ev *event.Event) {
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
			w.deadLetter(h, "customer was erased; refusing to back up new data for it")
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
		id := w.itemID(meta, i)
		im := pack.ItemMeta{Tenant: meta.GetTenant(), CustomerID: meta.GetCustomerId(), RecordKey: r.GetKey(),
			EventID: meta.GetEventId(), EventTime: meta.GetTime().AsTime().UTC(), ContentType: r.GetContentType()}
		sealed, err := w.codec.SealItem(dek, pseudo, meta.GetDataClass(), id, im, r.GetInline())
		if err != nil {
			span.RecordError(err)
			return nil, fmt.Errorf("seal item: %w", err)
		}
		items = append(items, pack.Item{ID: id, Customer: pseudo, Seq: seq, EventTime: im.EventTime, Sealed: sealed})
	}
	w.count(func(s *Stats) { s.Items += int64(len(items)) })
	return items, nil
}

// erase destroys a customer's data key: every stored copy becomes unreadable at once.
func (w *Worker) erase(h *heldMsg, m *custosv1.DeletionRequest) {
	pseudo := w.pseudonym(m.GetMeta())
	ctx, span := w.tracer.Start(h.ctx, "erase", trace.WithAttributes(attribute.String("custos.customer", pseudo)))
	defer span.End()
	// The targets record the erasure before the key store does: a destroyed key with no erasure
	// record is read as tampering, never as an erasure (docs/design.md section 11).
	// The request's own time, so a redelivered request writes the same record bytes.
	if err := w.writeErasure(ctx, pseudo, m.GetMeta().GetTime().AsTime()); err != nil {
		h.retryLater(fmt.Errorf("write erasure record: %w", err))
		return
	}
	if err := w.deps.Keys.Destroy(ctx, pseudo); err != nil {
		h.retryLater(fmt.Errorf("destroy data key: %w", err))
		return
	}
	if w.deps.Records != nil {
		// The dedup cache only points at items that are now unreadable; drop it (best effort).
		if err := w.deps.Records.Forget(ctx, pseudo); err != nil {
			w.log.Warn("dedup cache of an erased customer not dropped", "customer", pseudo, "err", err)
		}
	}
	w.log.Info("customer erased (data key destroyed)", "customer", pseudo)
	w.count(func(s *Stats) { s.Erased++ })
	h.ack()
}

// deadLetter copies the event with the reason to the dead-letter stream and terminates it. If
// the copy cannot be stored, the event is naked instead: it is never dropped.
func (w *Worker) deadLetter(h *heldMsg, reason string) {
	msg := h.msg
	hdr := nats.Header{}
	for k, v := range msg.Headers() {
		if k == nats.MsgIdHdr || strings.HasPrefix(k, "Nats-") {
			continue
		}
		hdr[k] = v
	}
	hdr.Set(HeaderDLQReason, reason)
	hdr.Set(HeaderDLQSubject, msg.Subject())
	hdr.Set(HeaderDLQSeq, itoa(h.seq))
	hdr.Set(HeaderDLQDeliveries, itoa(h.delivered))
	hdr.Set(HeaderDLQTime, w.cfg.Clock().UTC().Format(time.RFC3339Nano))
	hdr.Set(nats.MsgIdHdr, "dlq-"+itoa(h.seq))
	subj := event.DLQSubjectPrefix + strings.TrimPrefix(msg.Subject(), event.SubjectPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := w.deps.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr, Data: msg.Data()})
	if errors.Is(err, nats.ErrMaxPayload) {
		// An event close to max_payload cannot be copied with the headers added. Handing it
		// back would redeliver it forever: record it without its body instead, naming where
		// the body still is.
		hdr.Set(HeaderDLQBody, fmt.Sprintf("omitted: %d bytes, over the broker's max_payload with these headers; the event stays in %s at sequence %d until its age limit",
			len(msg.Data()), event.StreamName, h.seq))
		_, err = w.deps.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr})
	}
	if err != nil {
		w.log.Error("dead-letter publish failed; event handed back", "seq", h.seq, "err", err)
		h.nak(time.Second)
		return
	}
	w.log.Warn("event dead-lettered", "seq", h.seq, "subject", msg.Subject(), "reason", reason)
	w.auditDeadLettered(h)
	w.count(func(s *Stats) { s.DeadLettered++ })
	h.term(errors.New(reason))
}

var _ = proto.Clone
