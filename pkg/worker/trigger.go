package worker

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/source"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Manual and suspicious-activity triggers: both are written to the audit log once settled;
// suspicious activity also raises an alert and puts its records under legal hold.

// AlertsMetric counts alerts raised by the worker, with attributes kind and severity only (never
// a customer identifier).
const AlertsMetric = "custos.alerts"

// defaultSeverity is what an empty SuspiciousActivity.severity means (docs/events.md).
const defaultSeverity = event.SeverityHigh

// auditTimeout bounds one audit append.
const auditTimeout = 10 * time.Second

// packerKey names the packer of a class: held items (legal hold) have their own batches, so an
// ordinary pack never carries a hold and a held pack holds only suspicious-activity items.
// Class names cannot contain '!' (docs/events.md), so the keys never collide.
func packerKey(class string, hold bool) string {
	if hold {
		return class + "!hold"
	}
	return class
}

func (w *Worker) initAlerts() error {
	mp := w.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	var err error
	w.alerts, err = mp.Meter("github.com/custos-dev/custos/pkg/worker").Int64Counter(AlertsMetric,
		metric.WithDescription("Alerts raised by the worker (suspicious activity), by kind and severity"),
		metric.WithUnit("{alert}"))
	return err
}

// auditEntry starts the audit entry of a decoded event, or returns nil for events that are not
// audited. The customer appears only as its pseudonym.
func (w *Worker) auditEntry(ev *event.Event) *audit.Entry {
	meta := ev.Meta
	e := &audit.Entry{EventID: meta.GetEventId(), Class: meta.GetDataClass()}
	if meta.GetCustomerId() != "" {
		e.Customer = w.pseudonym(meta)
	}
	switch m := ev.Msg.(type) {
	case *custosv1.ManualRequest:
		e.Kind, e.Reason, e.RequestedBy = audit.KindManual, m.GetReason(), m.GetRequestedBy()
	case *custosv1.SuspiciousActivity:
		e.Kind, e.Reason, e.DetectedBy, e.Severity = audit.KindSuspicious, m.GetReason(), m.GetDetectedBy(), severity(m)
	default:
		return nil
	}
	return e
}

func severity(m *custosv1.SuspiciousActivity) string {
	if s := m.GetSeverity(); s != "" {
		return s
	}
	return defaultSeverity
}

// suspicious raises the alert, then backs the event's records up at once under legal hold.
func (w *Worker) suspicious(h *heldMsg, m *custosv1.SuspiciousActivity) {
	meta := m.GetMeta()
	sev := severity(m)
	w.log.Warn("ALERT: suspicious activity; backing up its records under legal hold",
		"customer", w.pseudonym(meta), "class", meta.GetDataClass(), "severity", sev, "records", len(m.GetRecords()))
	w.alerts.Add(h.ctx, 1, metric.WithAttributes(
		attribute.String("kind", audit.KindSuspicious), attribute.String("severity", sev)))
	if w.hasSource(meta.GetDataClass()) {
		// Snapshot the customer's data from the source too, under legal hold.
		if err := w.plan(h, meta, string(event.TypeSuspiciousActivity), source.Full, []string{meta.GetCustomerId()}, true); err != nil {
			w.planFailed(h, err)
			return
		}
	}
	w.backup(h, meta, m.GetRecords(), true)
}

// finish acknowledges an event whose records are durable in packs (none when it carried no
// records). An audited event is acknowledged only after its entry is in the audit log; if the
// entry cannot be written the event is retried, and its redelivery (found committed by its
// intent) appends the entry again. The audit stream de-duplicates by event id.
func (w *Worker) finish(h *heldMsg, packs ...string) {
	if h.audit != nil {
		e := *h.audit
		e.Time, e.Packs, e.Outcome, e.Snapshot = w.cfg.Clock(), packs, audit.OutcomeBackedUp, h.snapshot
		if len(packs) == 0 {
			e.Outcome = audit.OutcomeNoRecords
			if h.snapshot != "" {
				e.Outcome = audit.OutcomeSnapshotPlanned
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
		err := w.audit.Append(ctx, e)
		cancel()
		if err != nil {
			h.retryLater(err)
			return
		}
	}
	h.ack()
}

// auditDeadLettered records that an audited event was rejected after decoding. Best effort: the
// event itself is kept in the dead-letter stream.
func (w *Worker) auditDeadLettered(h *heldMsg) {
	if h.audit == nil || w.audit == nil {
		return
	}
	e := *h.audit
	e.Time, e.Outcome = w.cfg.Clock(), audit.OutcomeDeadLettered
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	if err := w.audit.Append(ctx, e); err != nil {
		w.log.Error("could not write the audit entry of a dead-lettered event", "seq", h.seq, "err", err)
	}
}
