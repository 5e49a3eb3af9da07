package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/custos-dev/custos/pkg/event"
)

// The worker's metrics (docs/metrics.md gives their Prometheus names). Labels are bounded:
// the event type (one of event.Types, else "unknown"), the data class (validated against the
// configuration before it is used) and the consumer name; never a customer or pseudonym.
const (
	MetricEventsAcked        = "custos.events.acked"
	MetricEventsRedelivered  = "custos.events.redelivered"
	MetricEventsDeadLettered = "custos.events.dead_lettered"
	MetricPublishToDurable   = "custos.publish_to_durable.duration"
	MetricPackCommit         = "custos.pack.commit.duration"
	MetricConsumerPending    = "custos.consumer.pending"
	MetricConsumerAckPending = "custos.consumer.ack_pending"
	MetricDeadLetters        = "custos.dead_letters"
)

// infoTimeout bounds the JetStream info requests a collection makes: a slow broker must not
// hang a scrape.
const infoTimeout = 2 * time.Second

// Buckets of the latency histograms, in seconds: from a pack written in a few milliseconds to
// one that waited minutes for a slow target.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// workerMetrics records what the worker does with events. Instruments that cannot be created
// are reported to otel.Handle and left as no-ops: metrics must never stop backups.
type workerMetrics struct {
	w                              *Worker
	acked, redelivered, deadLetter metric.Int64Counter
	publishToDurable, packCommit   metric.Float64Histogram
	// events holds what is known of each decoded event until it is settled.
	events sync.Map // *heldMsg -> *eventInfo
}

// eventInfo is what the metrics need of a held event.
type eventInfo struct {
	typ, class string
	durable    atomic.Bool // its records are in a pack the targets hold
}

func newWorkerMetrics(w *Worker) *workerMetrics {
	mp := w.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter("github.com/custos-dev/custos/pkg/worker")
	m := &workerMetrics{w: w}
	var errs [7]error
	m.acked, errs[0] = meter.Int64Counter(MetricEventsAcked, metric.WithUnit("{event}"),
		metric.WithDescription("Events acknowledged: their records durable (or nothing to store), by type and class."))
	m.redelivered, errs[1] = meter.Int64Counter(MetricEventsRedelivered, metric.WithUnit("{event}"),
		metric.WithDescription("Deliveries of events delivered before (a nak, a timeout, a worker that died), by type and class."))
	m.deadLetter, errs[2] = meter.Int64Counter(MetricEventsDeadLettered, metric.WithUnit("{event}"),
		metric.WithDescription("Events moved to the dead-letter stream, by type."))
	m.publishToDurable, errs[3] = meter.Float64Histogram(MetricPublishToDurable, metric.WithUnit("s"),
		metric.WithDescription("From an event's publication (its JetStream timestamp) to its acknowledgement after its pack is durable, by class."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	m.packCommit, errs[4] = meter.Float64Histogram(MetricPackCommit, metric.WithUnit("s"),
		metric.WithDescription("Writing one pack: intent, pack and manifest on the targets, index; by class."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	consumer := attribute.String("consumer", w.cfg.Consumer)
	var pending, ackPending, deadLetters metric.Int64ObservableGauge
	pending, errs[5] = meter.Int64ObservableGauge(MetricConsumerPending, metric.WithUnit("{event}"),
		metric.WithDescription("Events in the stream not yet delivered to the shared consumer: the backlog."))
	ackPending, _ = meter.Int64ObservableGauge(MetricConsumerAckPending, metric.WithUnit("{event}"),
		metric.WithDescription("Events delivered to the shared consumer and not yet acknowledged."))
	deadLetters, _ = meter.Int64ObservableGauge(MetricDeadLetters, metric.WithUnit("{message}"),
		metric.WithDescription("Messages in the dead-letter stream."))
	// Polled at collection (each scrape), from the broker: every worker reports the same shared
	// consumer, so the value is right whichever worker is scraped.
	_, errs[6] = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, infoTimeout)
		defer cancel()
		var errs []error
		if c, err := w.deps.JS.Consumer(ctx, event.StreamName, w.cfg.Consumer); err == nil {
			info := c.CachedInfo()
			o.ObserveInt64(pending, int64(info.NumPending), metric.WithAttributes(consumer))
			o.ObserveInt64(ackPending, int64(info.NumAckPending), metric.WithAttributes(consumer))
		} else {
			errs = append(errs, err)
		}
		if s, err := w.deps.JS.Stream(ctx, event.DLQStreamName); err == nil {
			o.ObserveInt64(deadLetters, int64(s.CachedInfo().State.Msgs))
		} else {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, pending, ackPending, deadLetters)
	if err := errors.Join(errs[:]...); err != nil {
		otel.Handle(err)
	}
	return m
}

// eventType is a bounded label value for the event's subject.
func eventType(subject string) string {
	if t, err := event.TypeFromSubject(subject); err == nil {
		return string(t)
	}
	return "unknown"
}

// decoded remembers a decoded event's type and class and counts a redelivery.
func (m *workerMetrics) decoded(h *heldMsg, ev *event.Event) {
	if m == nil {
		return
	}
	info := &eventInfo{typ: string(ev.Type), class: ev.Meta.GetDataClass()}
	n := int64(1)
	switch {
	case !ev.Type.Valid():
		info.typ = "unknown"
	case ev.Type == event.TypePostTransactionBatch:
		// A batch's entries are post-transaction events, and are counted as such.
		info.typ, n = string(event.TypePostTransaction), int64(len(ev.Batch().GetEvents()))
	}
	m.events.Store(h, info)
	if h.delivered > 1 {
		m.redelivered.Add(h.ctx, n, metric.WithAttributes(attribute.String("type", info.typ), attribute.String("class", info.class)))
	}
}

// packDurable records a pack's commit time (since began) and marks its events durable: their
// acknowledgement then records the publish-to-durable latency.
func (m *workerMetrics) packDurable(ctx context.Context, b *batch, began time.Time) {
	if m == nil {
		return
	}
	m.packCommit.Record(ctx, time.Since(began).Seconds(), metric.WithAttributes(attribute.String("class", b.class)))
	for _, h := range b.events {
		if v, ok := m.events.Load(h); ok {
			v.(*eventInfo).durable.Store(true)
		}
	}
}

// settled counts an acknowledgement; the held event is forgotten whatever the outcome.
func (m *workerMetrics) settled(h *heldMsg, outcome string) {
	if m == nil {
		return
	}
	v, ok := m.events.LoadAndDelete(h)
	if outcome != "ack" {
		return
	}
	info, _ := v.(*eventInfo)
	if !ok {
		info = &eventInfo{typ: eventType(h.msg.Subject()), class: "unknown"}
	}
	ctx := h.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	n := int64(1)
	if h.batch {
		n = int64(h.entries) // its entries backed up; the others were counted as dead-lettered
	}
	m.acked.Add(ctx, n, metric.WithAttributes(attribute.String("type", info.typ), attribute.String("class", info.class)))
	if !info.durable.Load() {
		return
	}
	if md, err := h.msg.Metadata(); err == nil && !md.Timestamp.IsZero() {
		// h.ctx carries the event's processing span: a sampled one becomes the exemplar.
		m.publishToDurable.Record(ctx, time.Since(md.Timestamp).Seconds(),
			metric.WithAttributes(attribute.String("class", info.class)))
	}
}

// deadLettered counts an event moved to the dead-letter stream.
func (m *workerMetrics) deadLettered(h *heldMsg) {
	if m == nil {
		return
	}
	ctx := h.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	m.deadLetteredAs(ctx, eventType(h.msg.Subject()))
}

// deadLetteredAs counts one event of type typ moved to the dead-letter stream (a batch entry is
// counted as the post-transaction event it is).
func (m *workerMetrics) deadLetteredAs(ctx context.Context, typ string) {
	if m == nil {
		return
	}
	m.deadLetter.Add(ctx, 1, metric.WithAttributes(attribute.String("type", typ)))
}
