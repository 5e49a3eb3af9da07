package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// publishBatch publishes entries as one PostTransactionBatch of tenant t1, class critical,
// the way a producer other than the Go SDK might (entries are not checked here).
func (b *bundle) publishBatch(id string, meta func(*custosv1.Meta), entries ...*custosv1.PostTransaction) {
	b.t.Helper()
	m := &custosv1.PostTransactionBatch{Meta: &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", DataClass: "critical"}}
	if meta != nil {
		meta(m.Meta)
	}
	for _, e := range entries {
		m.Events = append(m.Events, &custosv1.BatchedPostTransaction{Event: e})
	}
	data, err := proto.Marshal(m)
	if err != nil {
		b.t.Fatal(err)
	}
	hdr := nats.Header{event.HeaderSpecVersion: {event.SpecVersion}, event.HeaderID: {id}, event.HeaderSource: {"urn:test"},
		event.HeaderType: {event.TypePostTransactionBatch.CEType()}, event.HeaderContentType: {event.ContentTypeProtobuf},
		event.HeaderTime: {m.Meta.GetTime().AsTime().Format(time.RFC3339Nano)}, event.HeaderMsgID: {id}}
	if _, err := b.ns.JS.PublishMsg(context.Background(), &nats.Msg{Subject: event.TypePostTransactionBatch.Subject(), Header: hdr, Data: data}); err != nil {
		b.t.Fatal(err)
	}
}

// Events published by a batching producer are backed up like events sent alone, in fewer
// broker messages; each event's trace holds a process span of its own, child of its producer
// span and linked to the commit of the pack that holds its record. With a byte budget smaller
// than a batch, the worker holds one batch at a time and still gets through.
func TestBatchesBackedUp(t *testing.T) {
	for _, budget := range []int64{0, 1} {
		t.Run(fmt.Sprintf("max_in_flight_bytes=%d", budget), func(t *testing.T) {
			b := setup(t, func(c *Config) { c.MaxInFlightBytes = budget })
			p, err := producer.New(b.ns.JS, "urn:test", producer.WithTracerProvider(b.tp), producer.WithBatching(50, time.Second)) // batches end at 50 events or Flush, not at a timer a loaded machine may beat
			if err != nil {
				t.Fatal(err)
			}
			var largest atomic.Int64 // the largest batch message's data
			sub, err := b.ns.Conn.Subscribe(event.TypePostTransactionBatch.Subject(), func(m *nats.Msg) {
				if n := int64(len(m.Data)); n > largest.Load() {
					largest.Store(n)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			want := map[string][]byte{}
			const n = 300
			for i := range n {
				c, key := fmt.Sprintf("cust-%d", i%30), fmt.Sprintf("rec-%d", i%7)
				data := []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("z", i*7))) // from 1 KiB: compressed
				if _, err := p.PublishPostTransactionAsync(context.Background(), postTx(fmt.Sprintf("b-%d", i), c, "critical", key, data)); err != nil {
					t.Fatal(err)
				}
				want[c+"/"+key] = data
			}
			if err := p.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := b.ns.Conn.Flush(); err != nil {
				t.Fatal(err)
			}
			w := b.startWorker() // a backlog of batches waits for it
			b.waitSettled()
			st := w.Stats()
			if st.Events != n || st.DeadLettered != 0 || st.Items != n {
				t.Fatalf("stats %+v, want %d events and items, no dead letters", st, n)
			}
			s, err := b.ns.JS.Stream(context.Background(), event.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			msgs := s.CachedInfo().State.LastSeq
			if msgs == 0 || msgs > n/10 {
				t.Fatalf("%d broker messages for %d events", msgs, n)
			}
			if budget == 1 && (st.PeakHeldBytes == 0 || st.PeakHeldBytes > largest.Load()) {
				t.Fatalf("held up to %d bytes at once with a budget of one byte, the largest batch is %d: more than one batch", st.PeakHeldBytes, largest.Load())
			}
			t.Logf("%d batches, the largest %d bytes; held at most %d bytes at once", msgs, largest.Load(), st.PeakHeldBytes)
			if left := b.eventsLeft(); left != 0 {
				t.Fatalf("%d messages left in the events stream", left)
			}
			rep, out := b.restoreAll()
			if !rep.OK() {
				t.Fatalf("restore %+v", rep)
			}
			b.checkRestored(out, want)

			waitFor(t, 5*time.Second, "entry spans", func() bool {
				return len(named(b.spans.Ended(), "process "+event.TypePostTransaction.Subject())) >= n
			})
			spans := b.spans.Ended()
			commits := map[[8]byte]bool{}
			for _, c := range named(spans, "pack.commit") {
				commits[c.SpanContext().SpanID()] = true
			}
			processed := map[[8]byte]bool{} // producer span id -> has a process span linked to a commit
			for _, s := range named(spans, "process "+event.TypePostTransaction.Subject()) {
				for _, l := range s.Links() {
					if commits[l.SpanContext.SpanID()] {
						processed[s.Parent().SpanID()] = true
					}
				}
			}
			sends := named(spans, "publish "+event.TypePostTransaction.Subject())
			if len(sends) != n {
				t.Fatalf("%d producer spans, want %d", len(sends), n)
			}
			for _, s := range sends {
				if !processed[s.SpanContext().SpanID()] {
					t.Fatalf("producer span %s has no process span child linked to its pack commit", s.SpanContext().SpanID())
				}
			}
		})
	}
}

// One bad entry does not take its batch with it: each invalid entry, and the entry of an erased
// customer, is dead-lettered alone (sealed under its own customer's key, or without its body
// for the erased one); the others are backed up and the batch leaves the stream.
func TestBatchEntriesDeadLetteredAlone(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	gone := b.kms.Pseudonym("t1", "c-gone")
	if _, err := b.keys.DataKey(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := b.keys.Destroy(ctx, gone); err != nil {
		t.Fatal(err)
	}
	w := b.startWorker()
	noKey := postTx("e-1", "c-bad", "critical", "k", []byte("x"))
	noKey.Record.Key = ""
	otherClass := postTx("e-2", "c-other", "important", "k", []byte("x"))
	badZstd := postTx("e-3", "c-zstd", "critical", "k", nil)
	badZstd.Record.Source = &custosv1.Record_InlineZstd{InlineZstd: []byte("not zstd at all")}
	b.publishBatch("batch-1", nil,
		postTx("e-0", "c-ok-1", "critical", "k", []byte("one")),
		noKey, otherClass, badZstd,
		postTx("e-4", "c-gone", "critical", "k", []byte("erased")),
		postTx("e-5", "c-ok-2", "critical", "k", []byte("two")))
	b.waitSettled()
	if st := w.Stats(); st.Events != 2 || st.DeadLettered != 4 {
		t.Fatalf("stats %+v, want 2 events backed up and 4 dead-lettered", st)
	}
	dl := b.dlq()
	if len(dl) != 4 {
		t.Fatalf("%d dead letters, want 4", len(dl))
	}
	wantScope := map[string]string{"1": b.kms.Pseudonym("t1", "c-bad"), "2": b.kms.Pseudonym("t1", "c-other"),
		"3": b.kms.Pseudonym("t1", "c-zstd"), "4": gone}
	wantReason := map[string]string{"1": "key", "2": "data class", "3": "inline_zstd", "4": "erased"}
	for _, m := range dl {
		i := m.Header.Get(HeaderDLQBatchIndex)
		if m.Header.Get(HeaderDLQBatch) != "batch-1" || wantScope[i] == "" {
			t.Fatalf("dead letter of batch %q entry %q", m.Header.Get(HeaderDLQBatch), i)
		}
		if want := event.DLQSubjectPrefix + "post_transaction." + wantScope[i]; m.Subject != want {
			t.Errorf("entry %s dead-lettered on %s, want %s", i, m.Subject, want)
		}
		if r := m.Header.Get(HeaderDLQReason); !strings.Contains(r, wantReason[i]) {
			t.Errorf("entry %s: reason %q does not mention %q", i, r, wantReason[i])
		}
		if got := m.Header.Get(HeaderDLQSubject); got != event.TypePostTransaction.Subject() {
			t.Errorf("entry %s: original subject %q", i, got)
		}
		body, err := deadletter.Open(ctx, b.keys, []deadletter.Part{{Header: m.Header, Data: m.Data}})
		if i == "4" {
			if m.Header.Get(HeaderDLQBody) == "" || err == nil {
				t.Errorf("the erased customer's entry kept its body (err %v)", err)
			}
			continue
		}
		var pt custosv1.PostTransaction
		if err != nil || proto.Unmarshal(body, &pt) != nil || pt.GetMeta().GetEventId() != "e-"+i {
			t.Errorf("entry %s: dead letter does not open to its event: %v", i, err)
		}
		if strings.Contains(string(m.Data), "c-") {
			t.Errorf("entry %s: a raw customer id in the dead letter's data", i)
		}
	}
	if left := b.eventsLeft(); left != 0 {
		t.Fatalf("%d messages left in the events stream", left)
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, map[string][]byte{"c-ok-1/k": []byte("one"), "c-ok-2/k": []byte("two")})
}

// A batch rejected as a whole (its envelope is invalid) is dead-lettered entry by entry, each
// under its own customer's key, so that erasing one customer erases its entry.
func TestInvalidBatchDeadLetteredByEntry(t *testing.T) {
	b := setup(t)
	b.startWorker()
	b.publishBatch("batch-bad", func(m *custosv1.Meta) { m.CustomerId = "c-1" },
		postTx("x-0", "c-1", "critical", "k", []byte("a")), postTx("x-1", "c-2", "critical", "k", []byte("b")))
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want one per entry", len(dl))
	}
	scopes := map[string]bool{}
	for _, m := range dl {
		scopes[m.Header.Get(deadletter.HeaderScope)] = true
		if !strings.Contains(m.Header.Get(HeaderDLQReason), "meta.customer_id") {
			t.Errorf("reason %q", m.Header.Get(HeaderDLQReason))
		}
	}
	if !scopes[b.kms.Pseudonym("t1", "c-1")] || !scopes[b.kms.Pseudonym("t1", "c-2")] {
		t.Fatalf("dead letters sealed under %v, want each entry's customer", scopes)
	}
	if left := b.eventsLeft(); left != 0 {
		t.Fatalf("%d messages left in the events stream", left)
	}
}

// A worker killed after a batch's pack intent rebuilds the same pack on redelivery; when a
// customer of the batch was erased in between, the intent is abandoned and the batch backed up
// again as new: the erased customer's entry is dead-lettered without its body, the rest durable.
func TestBatchRedeliveredAfterCrash(t *testing.T) {
	for _, erase := range []bool{false, true} {
		t.Run(fmt.Sprintf("erased=%v", erase), func(t *testing.T) {
			b := setup(t, func(c *Config) { c.PackMaxDelay = 100 * time.Millisecond; c.AckWait = time.Second })
			ctx := context.Background()
			var crashed atomic.Bool
			b.cfg.testAfterIntent = func(string) error {
				if !crashed.CompareAndSwap(false, true) {
					return nil
				}
				if erase {
					if err := b.keys.Destroy(ctx, b.kms.Pseudonym("t1", "c-2")); err != nil {
						return err
					}
				}
				return errors.New("simulated crash after the intent")
			}
			w := b.startWorker()
			var entries []*custosv1.PostTransaction
			want := map[string][]byte{}
			for i := range 5 {
				c := fmt.Sprintf("c-%d", i)
				entries = append(entries, postTx("r-"+c, c, "critical", "k", []byte("data of "+c)))
				want[c+"/k"] = []byte("data of " + c)
			}
			b.publishBatch("batch-r", nil, entries...)
			b.waitSettled()
			st := w.Stats()
			if !crashed.Load() || st.Redelivered == 0 {
				t.Fatalf("stats %+v: the crash did not happen or nothing was redelivered", st)
			}
			wantDead := 0
			if erase {
				wantDead = 1
				delete(want, "c-2/k")
			}
			if dl := b.dlq(); len(dl) != wantDead {
				t.Fatalf("%d dead letters, want %d", len(dl), wantDead)
			}
			if st.Events != int64(len(want)) {
				t.Fatalf("stats %+v, want %d events", st, len(want))
			}
			rep, out := b.restoreAll()
			if !rep.OK() {
				t.Fatalf("restore %+v", rep)
			}
			b.checkRestored(out, want)
			if rep.Records != len(want) {
				t.Fatalf("restored %d records, want %d (one copy each)", rep.Records, len(want))
			}
		})
	}
}

// The event counters count a batch's entries as post-transaction events: the ones backed up as
// acknowledged, the rejected one as dead-lettered; the batch itself is not an event type.
func TestBatchMetricsCountEntries(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	b := setup(t, func(c *Config) { c.MeterProvider = mp })
	b.startWorker()
	bad := postTx("m-3", "c-3", "critical", "", []byte("x")) // no record key
	b.publishBatch("batch-m", nil, postTx("m-0", "c-0", "critical", "k", []byte("a")),
		postTx("m-1", "c-1", "critical", "k", []byte("b")), postTx("m-2", "c-2", "critical", "k", []byte("c")), bad)
	b.waitSettled()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != MetricEventsAcked && m.Name != MetricEventsDeadLettered {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				typ, _ := dp.Attributes.Value("type")
				got[m.Name+" "+typ.AsString()] += dp.Value
			}
		}
	}
	want := map[string]int64{MetricEventsAcked + " post_transaction": 3, MetricEventsDeadLettered + " post_transaction": 1}
	if len(got) != len(want) || got[MetricEventsAcked+" post_transaction"] != 3 || got[MetricEventsDeadLettered+" post_transaction"] != 1 {
		t.Fatalf("event counters %v, want %v", got, want)
	}
}

// While the dead-letter stream cannot take a rejected entry, the batch is handed back whole: its
// good entry is not acknowledged without its rejected neighbour recorded. Once the stream is
// back, the entry is dead-lettered and the rest backed up.
func TestBatchHandedBackWhileDeadLettersFail(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	w := b.startWorker()
	if err := b.ns.JS.DeleteStream(ctx, event.DLQStreamName); err != nil {
		t.Fatal(err)
	}
	bad := postTx("h-1", "c-bad", "critical", "", []byte("x")) // no record key
	b.publishBatch("batch-h", nil, postTx("h-0", "c-ok", "critical", "k", []byte("kept")), bad)
	waitFor(t, 10*time.Second, "the batch handed back", func() bool { return w.Stats().Redelivered > 0 })
	if st := w.Stats(); st.Events != 0 || st.DeadLettered != 0 || b.eventsLeft() != 1 {
		t.Fatalf("stats %+v, %d messages left: the batch was settled without its dead letter", st, b.eventsLeft())
	}
	if err := EnsureStreams(ctx, b.ns.JS); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	if st := w.Stats(); st.Events != 1 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v, want 1 event backed up and 1 dead-lettered", st)
	}
	if dl := b.dlq(); len(dl) != 1 || dl[0].Header.Get(HeaderDLQBatchIndex) != "1" {
		t.Fatalf("%d dead letters, want entry 1 alone", len(dl))
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, map[string][]byte{"c-ok/k": []byte("kept")})
}
