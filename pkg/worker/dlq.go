package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
)

// deadLetter records the event with the reason in the dead-letter stream, its body sealed under
// the data key of the customer it concerns (package deadletter), and terminates it: with
// work-queue retention that removes it from CUSTOS_EVENTS. If the record cannot be stored the
// event is naked instead: it is never dropped. An erased customer's event is recorded without
// its body.
func (w *Worker) deadLetter(h *heldMsg, reason string) {
	if w.deadLetterBatch(h, reason) { // batch.go: each entry under its own customer's key
		return
	}
	msg := h.msg
	hdr := w.dlqHeaders(h, msg.Subject(), reason)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The dead-letter span is a child of the event's span, so the trace of a rejected event
	// ends in it; its context is not cancelled with the event's.
	ctx, span := w.tracer.Start(trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(h.ctx)), "dead_letter",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attribute.Int64("messaging.nats.delivered", int64(h.delivered))))
	defer span.End()
	scope := h.scope
	if scope == "" {
		if tenant, customer, ok := event.Peek(msg.Subject(), msg.Data()); ok {
			scope = w.deps.Pseudonyms.Pseudonym(tenant, customer)
		} else {
			scope = deadletter.SystemScope
		}
	}
	typ := strings.TrimPrefix(msg.Subject(), event.SubjectPrefix)
	parts, err := w.storeDeadLetter(ctx, typ, scope, "dlq-"+itoa(h.seq), hdr, msg.Data())
	if err != nil {
		w.log.ErrorContext(h.ctx, "dead letter not stored; event handed back", "seq", h.seq, "err", err)
		h.nak(time.Second)
		return
	}
	w.log.WarnContext(h.ctx, "event dead-lettered", "seq", h.seq, "subject", msg.Subject(), "reason", reason, "parts", parts)
	w.auditDeadLettered(h)
	w.count(func(s *Stats) { s.DeadLettered++ })
	w.metrics.deadLettered(h) // metrics.go
	h.term(errors.New(reason))
}

// dlqHeaders are the headers of h's dead letter: the message's own, less the broker's and any
// earlier dead-letter headers, plus why, from where and when. subject is the event's subject.
func (w *Worker) dlqHeaders(h *heldMsg, subject, reason string) nats.Header {
	hdr := nats.Header{}
	for k, v := range h.msg.Headers() {
		if k == nats.MsgIdHdr || strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "Custos-Dlq-") {
			continue
		}
		hdr[k] = v
	}
	hdr.Set(HeaderDLQReason, reason)
	hdr.Set(HeaderDLQSubject, subject)
	hdr.Set(HeaderDLQSeq, itoa(h.seq))
	hdr.Set(HeaderDLQDeliveries, itoa(h.delivered))
	hdr.Set(HeaderDLQTime, w.cfg.Clock().UTC().Format(time.RFC3339Nano))
	return hdr
}

// storeDeadLetter seals body under scope's data key (or keeps no body when that customer was
// erased) and publishes it on the dead-letter subject of event type typ, in parts when it does
// not fit one message. It returns the number of parts.
func (w *Worker) storeDeadLetter(ctx context.Context, typ, scope, id string, hdr nats.Header, body []byte) (int, error) {
	dek, err := w.deps.Keys.DataKey(ctx, scope)
	why := ""
	switch {
	case errors.Is(err, keys.ErrDestroyed):
		dek, why = nil, "dropped: the customer was erased"
	case err != nil:
		return 0, fmt.Errorf("no data key to seal it: %w", err)
	}
	subj := deadletter.Subject(event.DLQSubjectPrefix, typ, scope)
	parts, err := deadletter.Messages(subj, hdr, id, scope, dek, body, why, int(w.deps.JS.Conn().MaxPayload()))
	for _, p := range parts {
		if err != nil {
			break
		}
		_, err = w.deps.JS.PublishMsg(ctx, p)
	}
	return len(parts), err
}

// purgeDeadLetters removes an erased customer's dead letters and reports whether it could.
// Their bodies are already unreadable (sealed under the destroyed key); this removes their
// headers too. Best effort: a worker credential without purge rights (natsauth) leaves them,
// sealed.
func (w *Worker) purgeDeadLetters(ctx context.Context, scope string) bool {
	err := broker.Do(ctx, w.deps.JS.Conn(), "$JS.API.STREAM.PURGE."+event.DLQStreamName, func(ctx context.Context) error {
		s, err := w.deps.JS.Stream(ctx, event.DLQStreamName)
		if err != nil {
			return err
		}
		return s.Purge(ctx, jetstream.WithPurgeSubject(event.DLQSubjectPrefix+"*."+scope))
	})
	if err != nil {
		w.log.Info("dead letters of an erased customer kept, sealed under the destroyed key", "customer", scope, "err", err)
		return false
	}
	return true
}
