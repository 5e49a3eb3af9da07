package producer_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// batches reads every message of CUSTOS_EVENTS and returns the batches among them, checked as
// a worker would check them.
func (b *testBundle) batches(t *testing.T) (batches []*custosv1.PostTransactionBatch, alone int) {
	t.Helper()
	n := b.count(t)
	for seq := uint64(1); seq <= n; seq++ {
		m := b.stored(t, seq)
		ev, err := event.Decode(m.Subject, m.Header, m.Data, event.Limits{})
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		bt := ev.Batch()
		if bt == nil {
			alone++
			continue
		}
		for i := range bt.GetEvents() {
			if err := (event.Limits{}).ValidateBatchEntry(bt, i); err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
		}
		batches = append(batches, bt)
	}
	return batches, alone
}

func TestPublishAsyncBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t)
	const n = 600
	futures := map[string]*producer.Future{}
	for i := range n {
		pt := postTransaction(fmt.Sprintf("c-%d", i))
		if i%3 == 0 {
			pt.Meta.DataClass = "important" // two classes: two batches open at once
		}
		f, err := p.PublishPostTransactionAsync(b.ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		if pt.GetMeta().GetEventId() != f.EventID() {
			t.Fatalf("the event id was not filled in the message")
		}
		futures[f.EventID()] = f
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatal(err)
	}
	for id, f := range futures {
		if ack, err := f.Result(); err != nil || ack.Duplicate {
			t.Fatalf("future %s: %+v %v", id, ack, err)
		}
	}
	batches, alone := b.batches(t)
	if alone != 0 || len(batches) < 3 || len(batches) > n/10 {
		t.Fatalf("%d batches and %d events alone for %d events", len(batches), alone, n)
	}
	// Every event is in exactly one batch, of its own class, with the trace context of its own
	// producer span.
	spanOf := map[string]string{}
	for _, s := range b.spans.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == attribute.Key("messaging.message.id") {
				spanOf[a.Value.AsString()] = s.SpanContext().TraceID().String()
			}
		}
	}
	seen := map[string]bool{}
	for _, bt := range batches {
		if len(bt.GetEvents()) > producer.DefaultBatchMaxEvents {
			t.Fatalf("batch of %d events", len(bt.GetEvents()))
		}
		for _, e := range bt.GetEvents() {
			id := e.GetEvent().GetMeta().GetEventId()
			if seen[id] || futures[id] == nil {
				t.Fatalf("event %s twice or unknown", id)
			}
			seen[id] = true
			if e.GetEvent().GetMeta().GetDataClass() != bt.GetMeta().GetDataClass() {
				t.Fatalf("event of class %s in a batch of %s", e.GetEvent().GetMeta().GetDataClass(), bt.GetMeta().GetDataClass())
			}
			if want := spanOf[id]; want == "" || len(e.GetTraceparent()) < 55 || e.GetTraceparent()[3:35] != want {
				t.Fatalf("event %s: traceparent %q, its producer span's trace %q", id, e.GetTraceparent(), want)
			}
		}
	}
	if len(seen) != n {
		t.Fatalf("%d events in batches, want %d", len(seen), n)
	}
}

// TestPublishAsyncBatchBounds: a batch stays under half the event size limit; an event too big
// for a batch, one with a ce-subject and an invalid one are not batched.
func TestPublishAsyncBatchBounds(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t, producer.WithLimits(event.Limits{MaxEventBytes: 400 << 10}))
	record := func(size int) *custosv1.PostTransaction {
		pt := postTransaction("c-big")
		data := make([]byte, size)
		_, _ = rand.Read(data) // incompressible: the batch holds the bytes as they are
		pt.Record.Source = &custosv1.Record_Inline{Inline: data}
		return pt
	}
	for range 10 {
		if _, err := p.PublishAsync(b.ctx, record(64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	big := record(250 << 10)
	if _, err := p.PublishAsync(b.ctx, big); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishAsync(b.ctx, postTransaction("c-1"), producer.WithSubject("pseudo-1")); err != nil {
		t.Fatal(err)
	}
	bad := postTransaction("c-2")
	bad.Record.Key = ""
	if _, err := p.PublishAsync(b.ctx, bad); !errors.Is(err, producer.ErrInvalidEvent) || !errors.Is(err, event.ErrMissingField) {
		t.Fatalf("invalid event: %v", err)
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatal(err)
	}
	batches, alone := b.batches(t)
	if alone != 2 {
		t.Fatalf("%d events alone, want 2 (the big one and the one with a ce-subject)", alone)
	}
	entries := 0
	for seq := uint64(1); seq <= b.count(t); seq++ {
		if m := b.stored(t, seq); len(m.Data) > 200<<10 && m.Subject == event.TypePostTransactionBatch.Subject() {
			t.Fatalf("batch message of %d bytes, limit %d", len(m.Data), 200<<10)
		}
	}
	for _, bt := range batches {
		entries += len(bt.GetEvents())
	}
	if entries != 10 || len(batches) < 3 {
		t.Fatalf("%d batches of %d entries, want 10 entries in at least 3 batches", len(batches), entries)
	}
}

// TestPublishAsyncBatchLinger: a batch that is not full leaves after its linger time, without
// Flush.
func TestPublishAsyncBatchLinger(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t, producer.WithBatching(100, 20*time.Millisecond))
	f, err := p.PublishAsync(b.ctx, postTransaction("c-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(b.ctx); err != nil {
		t.Fatal(err)
	}
	if batches, _ := b.batches(t); len(batches) != 1 || len(batches[0].GetEvents()) != 1 {
		t.Fatalf("want one batch of one event, got %d", len(batches))
	}
	if _, err := producer.New(b.srv.JS, source, producer.WithBatching(10, 0)); err == nil {
		t.Fatal("WithBatching without a linger time was accepted")
	}
}

// A producer that sends JSON sends its batches as JSON.
func TestPublishAsyncBatchJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t, producer.WithContentType(event.ContentTypeJSON))
	for i := range 3 {
		if _, err := p.PublishAsync(b.ctx, postTransaction(fmt.Sprintf("c-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatal(err)
	}
	m := b.stored(t, 1)
	if ct := m.Header.Get(event.HeaderContentType); ct != event.ContentTypeJSON || b.count(t) != 1 {
		t.Fatalf("%d messages, the first %s", b.count(t), ct)
	}
	if batches, _ := b.batches(t); len(batches) != 1 || len(batches[0].GetEvents()) != 3 {
		t.Fatalf("want one JSON batch of 3 events")
	}
}

// When every attempt to publish a batch fails, each of its events' Futures reports
// ErrUnavailable (retrying until the stream exists: TestPublishAsyncRetriesUntilStreamExists).
func TestPublishAsyncBatchUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	p := b.producer(t, producer.WithRetry(2, 10*time.Millisecond, 20*time.Millisecond), producer.WithAttemptTimeout(200*time.Millisecond))
	var futures []*producer.Future
	for i := range 5 {
		f, err := p.PublishAsync(b.ctx, postTransaction(fmt.Sprintf("c-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	if err := p.Flush(b.ctx); !errors.Is(err, producer.ErrUnavailable) {
		t.Fatalf("flush: %v, want ErrUnavailable", err)
	}
	for _, f := range futures {
		if _, err := f.Result(); !errors.Is(err, producer.ErrUnavailable) {
			t.Fatalf("event %s: %v, want ErrUnavailable", f.EventID(), err)
		}
	}
	if p.Pending() != 0 {
		t.Fatalf("%d pending", p.Pending())
	}
}

// A caller's tracestate longer than a batch entry may carry is dropped (W3C allows it), not
// allowed to make the worker refuse the event.
func TestPublishAsyncBatchDropsLongTracestate(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t)
	var members []string
	for _, k := range []string{"a", "b", "c"} {
		members = append(members, k+"="+strings.Repeat(k, 250))
	}
	ts, err := trace.ParseTraceState(strings.Join(members, ","))
	if err != nil {
		t.Fatal(err)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		TraceFlags: trace.FlagsSampled, TraceState: ts})
	if _, err := p.PublishAsync(trace.ContextWithRemoteSpanContext(b.ctx, parent), postTransaction("c-1")); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatal(err)
	}
	batches, _ := b.batches(t) // checks every entry as a worker would
	if len(batches) != 1 {
		t.Fatalf("%d batches", len(batches))
	}
	e := batches[0].GetEvents()[0]
	if e.GetTracestate() != "" || !strings.Contains(e.GetTraceparent(), trace.TraceID{1}.String()) {
		t.Fatalf("entry trace context %q / %q: want the caller's trace and no tracestate", e.GetTraceparent(), e.GetTracestate())
	}
}
