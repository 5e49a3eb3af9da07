package producer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const source = "//test.example.com/orders"

type testBundle struct {
	srv   *natstest.Server
	spans *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider
	ctx   context.Context
}

// setup starts an embedded JetStream server; the streams exist unless noStreams.
func setup(t *testing.T, noStreams bool) *testBundle {
	t.Helper()
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if !noStreams {
		if err := event.EnsureStreams(ctx, srv.JS, event.StreamsConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &testBundle{srv: srv, spans: spans, tp: tp, ctx: ctx}
}

func (b *testBundle) producer(t *testing.T, opts ...producer.Option) *producer.Producer {
	t.Helper()
	p, err := producer.New(b.srv.JS, source, append([]producer.Option{producer.WithTracerProvider(b.tp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stored returns the message at seq of CUSTOS_EVENTS.
func (b *testBundle) stored(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := b.srv.JS.Stream(b.ctx, event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(b.ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (b *testBundle) count(t *testing.T) uint64 {
	t.Helper()
	s, err := b.srv.JS.Stream(b.ctx, event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func postTransaction(customer string) *custosv1.PostTransaction {
	return &custosv1.PostTransaction{
		Meta: &custosv1.Meta{Tenant: "acme", CustomerId: customer, DataClass: "critical"},
		Record: &custosv1.Record{
			Key:    "orders/42",
			Source: &custosv1.Record_Inline{Inline: []byte(`{"total":42}`)},
		},
		TransactionId: "tx-42",
	}
}

func TestPublishRoundTrip(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{event.ContentTypeProtobuf, event.ContentTypeJSON} {
		t.Run(ct, func(t *testing.T) {
			t.Parallel()
			b := setup(t, false)
			now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
			p := b.producer(t, producer.WithContentType(ct), producer.WithClock(func() time.Time { return now }),
				producer.WithLimits(event.Limits{Now: time.Now}))
			msg := postTransaction("c-1")
			ack, err := p.PublishPostTransaction(b.ctx, msg, producer.WithSubject("pseudo-7f3a"))
			if err != nil {
				t.Fatal(err)
			}
			if ack.Stream != event.StreamName || ack.Duplicate {
				t.Fatalf("ack = %+v", ack)
			}
			if msg.Meta.EventId == "" || !msg.Meta.Time.AsTime().Equal(now) {
				t.Fatalf("meta not filled: %v", msg.Meta)
			}

			raw := b.stored(t, ack.Sequence)
			ev, err := event.Decode(raw.Subject, raw.Header, raw.Data, event.Limits{})
			if err != nil {
				t.Fatalf("decode stored event: %v", err)
			}
			if !proto.Equal(ev.Msg, msg) || ev.ContentType != ct || ev.Source != source || ev.Subject != "pseudo-7f3a" {
				t.Fatalf("stored event differs: %v", ev)
			}
			if raw.Header.Get(event.HeaderMsgID) != msg.Meta.EventId || raw.Header.Get(event.HeaderTime) != "2026-03-14T15:09:26Z" {
				t.Fatalf("headers: %v", raw.Header)
			}

			spans := b.spans.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			s := spans[0]
			if s.Name() != "publish custos.v1.events.post_transaction" || s.SpanKind() != trace.SpanKindProducer {
				t.Fatalf("span %q kind %v", s.Name(), s.SpanKind())
			}
			attrs := map[attribute.Key]attribute.Value{}
			for _, kv := range s.Attributes() {
				attrs[kv.Key] = kv.Value
			}
			for k, want := range map[attribute.Key]string{
				"messaging.system":           "nats",
				"messaging.operation.type":   "send",
				"messaging.destination.name": "custos.v1.events.post_transaction",
				"messaging.message.id":       msg.Meta.EventId,
				"custos.jetstream.stream":    event.StreamName,
			} {
				if got := attrs[k].Emit(); got != want {
					t.Errorf("span attribute %s = %q, want %q", k, got, want)
				}
			}
			for _, kv := range s.Attributes() {
				if kv.Value.Emit() == "c-1" {
					t.Errorf("span attribute %s carries the customer id", kv.Key)
				}
			}
			// The stored trace context is the producer span's.
			sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), raw.Header))
			if !sc.IsValid() || sc.TraceID() != s.SpanContext().TraceID() || sc.SpanID() != s.SpanContext().SpanID() {
				t.Fatalf("traceparent %q does not name the producer span", raw.Header.Get("traceparent"))
			}
		})
	}
}

func TestPublishEveryType(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t)
	meta := func(customer, class string) *custosv1.Meta {
		return &custosv1.Meta{Tenant: "acme", CustomerId: customer, DataClass: class}
	}
	now := time.Now()
	calls := map[event.Type]func() (*jetstream.PubAck, error){
		event.TypePostTransaction: func() (*jetstream.PubAck, error) {
			return p.PublishPostTransaction(b.ctx, postTransaction("c-1"))
		},
		event.TypeDeletionRequest: func() (*jetstream.PubAck, error) {
			return p.PublishDeletionRequest(b.ctx, &custosv1.DeletionRequest{Meta: meta("c-1", ""), RequestedBy: "dpo"})
		},
		event.TypeScheduleTick: func() (*jetstream.PubAck, error) {
			return p.PublishScheduleTick(b.ctx, &custosv1.ScheduleTick{Meta: meta("", "critical"), Schedule: "critical-daily", Method: "full"})
		},
		event.TypeComplianceDeadline: func() (*jetstream.PubAck, error) {
			return p.PublishComplianceDeadline(b.ctx, &custosv1.ComplianceDeadline{Meta: meta("", "critical"), Deadline: "end_of_month", Due: timestamp(now)})
		},
		event.TypeManual: func() (*jetstream.PubAck, error) {
			return p.PublishManualRequest(b.ctx, &custosv1.ManualRequest{Meta: meta("", "important"), Reason: "test", RequestedBy: "admin"})
		},
		event.TypeSuspiciousActivity: func() (*jetstream.PubAck, error) {
			return p.PublishSuspiciousActivity(b.ctx, &custosv1.SuspiciousActivity{Meta: meta("c-1", "critical"), Reason: "mass delete", DetectedBy: "guard"})
		},
	}
	for typ, call := range calls {
		ack, err := call()
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		raw := b.stored(t, ack.Sequence)
		if raw.Subject != typ.Subject() {
			t.Errorf("%s stored on %s", typ, raw.Subject)
		}
		if ev, err := event.Decode(raw.Subject, raw.Header, raw.Data, event.Limits{}); err != nil || ev.Type != typ {
			t.Errorf("%s: decode: %v", typ, err)
		}
	}
}

func TestDeduplication(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t)
	msg := postTransaction("c-1")
	first, err := p.PublishPostTransaction(b.ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	// The same message again (a producer retry): same event id, so JetStream drops it.
	second, err := p.PublishPostTransaction(b.ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	// A different message with the same explicit id, also dropped.
	other := postTransaction("c-2")
	other.Meta.EventId = msg.Meta.EventId
	third, err := p.PublishPostTransaction(b.ctx, other)
	if err != nil || !third.Duplicate {
		t.Fatalf("third %+v, %v", third, err)
	}
	if n := b.count(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

func TestInvalidEventNotPublished(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t, producer.WithLimits(event.Limits{Classes: []string{"critical", "important"}}))
	noKey := postTransaction("c-1")
	noKey.Record.Key = ""
	noCustomer := postTransaction("")
	badClass := postTransaction("c-1")
	badClass.Meta.DataClass = "gold"
	tooBig := postTransaction("c-1")
	tooBig.Record.Source = &custosv1.Record_Inline{Inline: make([]byte, event.DefaultMaxInlineBytes+1)}
	for name, tc := range map[string]struct {
		msg  proto.Message
		opts []producer.PublishOption
		want error
	}{
		"no record key":          {noKey, nil, event.ErrMissingField},
		"no customer":            {noCustomer, nil, event.ErrMissingField},
		"unknown class":          {badClass, nil, event.ErrUnknownClass},
		"oversized inline":       {tooBig, nil, event.ErrOversized},
		"no meta":                {&custosv1.ManualRequest{Reason: "x", RequestedBy: "y"}, nil, event.ErrMissingField},
		"not an event":           {&custosv1.Meta{}, nil, event.ErrUnknownType},
		"nil":                    {nil, nil, event.ErrMissingField},
		"subject is customer id": {postTransaction("c-1"), []producer.PublishOption{producer.WithSubject("c-1")}, event.ErrInvalidField},
		"bad content type":       {postTransaction("c-1"), []producer.PublishOption{producer.WithContentType("text/xml")}, event.ErrUnsupportedContentType},
	} {
		_, err := p.Publish(b.ctx, tc.msg, tc.opts...)
		if !errors.Is(err, producer.ErrInvalidEvent) || !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent and %v", name, err, tc.want)
		}
		if _, err := p.PublishAsync(b.ctx, tc.msg, tc.opts...); !errors.Is(err, producer.ErrInvalidEvent) {
			t.Errorf("%s async: err = %v", name, err)
		}
	}
	if n := b.count(t); n != 0 {
		t.Fatalf("stream holds %d messages, want 0", n)
	}
	if len(b.spans.Ended()) != 0 {
		t.Errorf("spans recorded for refused events")
	}
}

func TestTraceContextPropagates(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.producer(t)
	ctx, parent := b.tp.Tracer("test").Start(b.ctx, "handle order")
	ack, err := p.PublishPostTransaction(ctx, postTransaction("c-1"))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	raw := b.stored(t, ack.Sequence)
	if raw.Header.Get("traceparent") == "" {
		t.Fatal("no traceparent header")
	}
	remote := trace.SpanContextFromContext(telemetry.Extract(context.Background(), raw.Header))
	if remote.TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("trace id %s, want the caller's %s", remote.TraceID(), parent.SpanContext().TraceID())
	}
	var publish sdktrace.ReadOnlySpan
	for _, s := range b.spans.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			publish = s
		}
	}
	if publish == nil || publish.Parent().SpanID() != parent.SpanContext().SpanID() || remote.SpanID() != publish.SpanContext().SpanID() {
		t.Fatalf("producer span is not the caller's child or not the propagated span")
	}
}

func TestRetryUntilStreamExists(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	p := b.producer(t, producer.WithRetry(30, 20*time.Millisecond, 100*time.Millisecond))
	created := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		created <- event.EnsureStreams(b.ctx, b.srv.JS, event.StreamsConfig{})
	}()
	ack, err := p.PublishPostTransaction(b.ctx, postTransaction("c-1"))
	if cerr := <-created; cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Stream != event.StreamName {
		t.Fatalf("ack %+v", ack)
	}
	var retries int
	for _, e := range b.spans.Ended()[0].Events() {
		if e.Name == "retry" {
			retries++
		}
	}
	if retries == 0 {
		t.Fatal("published without retrying: the stream existed too early")
	}
}

func TestUnavailableAfterRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	p := b.producer(t, producer.WithRetry(3, 5*time.Millisecond, 10*time.Millisecond))
	_, err := p.PublishPostTransaction(b.ctx, postTransaction("c-1"))
	if !errors.Is(err, producer.ErrUnavailable) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	f, err := p.PublishPostTransactionAsync(b.ctx, postTransaction("c-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(b.ctx); !errors.Is(err, producer.ErrUnavailable) {
		t.Fatalf("async err = %v, want ErrUnavailable", err)
	}
	if err := p.Flush(b.ctx); !errors.Is(err, producer.ErrUnavailable) {
		t.Fatalf("flush err = %v, want ErrUnavailable", err)
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatalf("second flush reports old failures: %v", err)
	}
}

func TestRejectedByBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	// A stream that refuses messages over 64 bytes: a permanent error, not retried.
	cfg := event.StreamsConfig{}.EventsStreamConfig()
	cfg.MaxMsgSize = 64
	if _, err := b.srv.JS.CreateStream(b.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p := b.producer(t, producer.WithRetry(5, time.Second, time.Second))
	start := time.Now()
	_, err := p.PublishPostTransaction(b.ctx, postTransaction("c-1"))
	if !errors.Is(err, producer.ErrRejected) {
		t.Fatalf("err = %v, want ErrRejected", err)
	}
	if time.Since(start) > 900*time.Millisecond {
		t.Fatal("a permanent error was retried")
	}
}

func TestContextCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	p := b.producer(t, producer.WithRetry(100, 50*time.Millisecond, 50*time.Millisecond))
	ctx, cancel := context.WithTimeout(b.ctx, 150*time.Millisecond)
	defer cancel()
	_, err := p.PublishPostTransaction(ctx, postTransaction("c-1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestPublishAsyncFlush(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	// One message per event (batching is tested in batch_test.go).
	p := b.producer(t, producer.WithMaxPending(256), producer.WithBatching(1, 0))
	const n = 2000
	futures := make([]*producer.Future, 0, n)
	for i := range n {
		f, err := p.PublishPostTransactionAsync(b.ctx, postTransaction(fmt.Sprintf("c-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	// The first event again: de-duplicated.
	dup := postTransaction("c-0")
	dup.Meta.EventId = futures[0].EventID()
	df, err := p.PublishAsync(b.ctx, dup)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(b.ctx); err != nil {
		t.Fatal(err)
	}
	if p.Pending() != 0 {
		t.Fatalf("%d pending after Flush", p.Pending())
	}
	seqs := map[uint64]bool{}
	for _, f := range futures {
		ack, err := f.Result()
		if err != nil || ack.Duplicate {
			t.Fatalf("future %s: %+v %v", f.EventID(), ack, err)
		}
		seqs[ack.Sequence] = true
	}
	if len(seqs) != n {
		t.Fatalf("%d distinct sequences, want %d", len(seqs), n)
	}
	if ack, err := df.Wait(b.ctx); err != nil || !ack.Duplicate {
		t.Fatalf("duplicate: %+v %v", ack, err)
	}
	if c := b.count(t); c != n {
		t.Fatalf("stream holds %d, want %d", c, n)
	}
	if got := len(b.spans.Ended()); got != n+1 {
		t.Fatalf("%d spans, want %d", got, n+1)
	}
}

// Publishes sent before the stream exists are retried until it does, each stored once: ten
// messages one by one, or one batch of ten (retried whole, under its own id).
func TestPublishAsyncRetriesUntilStreamExists(t *testing.T) {
	t.Parallel()
	for _, batching := range []int{1, producer.DefaultBatchMaxEvents} {
		t.Run(fmt.Sprintf("batch=%d", batching), func(t *testing.T) {
			t.Parallel()
			b := setup(t, true)
			p := b.producer(t, producer.WithRetry(30, 20*time.Millisecond, 100*time.Millisecond),
				producer.WithBatching(batching, producer.DefaultBatchLinger))
			for i := range 10 {
				if _, err := p.PublishAsync(b.ctx, postTransaction(fmt.Sprintf("c-%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(200 * time.Millisecond)
			if err := event.EnsureStreams(b.ctx, b.srv.JS, event.StreamsConfig{}); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(b.ctx); err != nil {
				t.Fatal(err)
			}
			batches, alone := b.batches(t)
			entries := 0
			for _, bt := range batches {
				entries += len(bt.GetEvents())
			}
			if batching == 1 && (alone != 10 || len(batches) != 0) || batching > 1 && (alone != 0 || len(batches) != 1 || entries != 10) {
				t.Fatalf("%d events alone and %d batches of %d events in all", alone, len(batches), entries)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	for name, tc := range map[string]struct {
		js     jetstream.JetStream
		source string
		opts   []producer.Option
	}{
		"nil js":       {nil, source, nil},
		"no source":    {b.srv.JS, "", nil},
		"content type": {b.srv.JS, source, []producer.Option{producer.WithContentType("text/plain")}},
		"retry":        {b.srv.JS, source, []producer.Option{producer.WithRetry(0, time.Second, time.Second)}},
		"max pending":  {b.srv.JS, source, []producer.Option{producer.WithMaxPending(0)}},
	} {
		if _, err := producer.New(tc.js, tc.source, tc.opts...); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
}
