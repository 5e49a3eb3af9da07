package worker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/fs"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The zstd codec keeps idle decoder goroutines until GC; the NATS client's flusher exits
		// asynchronously after Close.
		goleak.IgnoreTopFunction("github.com/klauspost/compress/zstd.(*blockDec).startDecoder"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

// bundle is everything one test needs, built by setup.
type bundle struct {
	t        *testing.T
	ns       *natstest.Server
	kms      *keys.LocalKMS
	keys     *keys.KVStore
	index    *catalog.Index
	repairs  *repair.Queue
	faults   []*faulty.Target
	targets  []target.Target
	spans    *tracetest.SpanRecorder
	tp       *trace.TracerProvider
	producer *producer.Producer
	cfg      Config
}

func setup(t *testing.T, tweak ...func(*Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	b := &bundle{t: t, ns: natstest.Start(t)}
	var err error
	b.kms, err = keys.LoadOrCreateKeyFile(filepath.Join(t.TempDir(), "custos.key"))
	if err != nil {
		t.Fatal(err)
	}
	b.keys, err = keys.NewKVStore(ctx, b.ns.JS, b.kms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.keys.Close() })
	b.index, err = catalog.Open(ctx, b.ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.repairs, err = repair.OpenQueue(ctx, b.ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range []string{"a", "b", "c"} {
		ft, err := fs.New(filepath.Join(t.TempDir(), n), fs.WithLabel(n))
		if err != nil {
			t.Fatal(err)
		}
		f := faulty.New(ft)
		b.faults = append(b.faults, f)
		b.targets = append(b.targets, f)
		names = append(names, f.Name())
	}
	b.spans = tracetest.NewSpanRecorder()
	b.tp = trace.NewTracerProvider(trace.WithSpanProcessor(b.spans))
	t.Cleanup(func() { b.tp.Shutdown(context.Background()) })
	// One message per event: several tests follow events by stream sequence. batch_test.go
	// publishes batches.
	b.producer, err = producer.New(b.ns.JS, "urn:test", producer.WithTracerProvider(b.tp), producer.WithBatching(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	b.cfg = Config{
		Classes: map[string]Class{"critical": {Targets: names}, "important": {Targets: names}},
		Targets: b.targets, AckWait: 2 * time.Second, MaxDeliver: 3, PackMaxDelay: 20 * time.Millisecond,
		SpoolDir: t.TempDir(), DrainTimeout: 10 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		TracerProvider: b.tp,
	}
	for _, f := range tweak {
		f(&b.cfg)
	}
	if err := EnsureStreams(ctx, b.ns.JS); err != nil {
		t.Fatal(err)
	}
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (b *bundle) startWorker() *Worker {
	b.t.Helper()
	w, err := New(Deps{JS: b.ns.JS, Keys: b.keys, Pseudonyms: b.kms, Index: b.index, Repairs: b.repairs}, b.cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { w.Stop(context.Background()) })
	return w
}

func postTx(id, customer, class, key string, data []byte) *custosv1.PostTransaction {
	return &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", CustomerId: customer, DataClass: class},
		Record: &custosv1.Record{Key: key, ContentType: "application/json",
			Source: &custosv1.Record_Inline{Inline: data}},
	}
}

// publish sends post-transaction events and returns what each customer's records must hold.
func (b *bundle) publish(n, customers int) map[string][]byte {
	b.t.Helper()
	want := map[string][]byte{}
	for i := range n {
		c := fmt.Sprintf("cust-%d", i%customers)
		key := fmt.Sprintf("rec-%d", i%7)
		data := []byte(fmt.Sprintf(`{"i":%d,"c":%q,"pad":%q}`, i, c, bytes.Repeat([]byte{'z'}, i%300)))
		if _, err := b.producer.PublishPostTransactionAsync(context.Background(), postTx(fmt.Sprintf("ev-%d", i), c, "critical", key, data)); err != nil {
			b.t.Fatal(err)
		}
		want[c+"/"+key] = data
	}
	if err := b.producer.Flush(context.Background()); err != nil {
		b.t.Fatal(err)
	}
	return want
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) consumerInfo() *jetstream.ConsumerInfo {
	c, err := b.ns.JS.Consumer(context.Background(), event.StreamName, "custos-workers")
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	return info
}

// waitSettled waits until every published event has been acknowledged or terminated.
func (b *bundle) waitSettled() {
	b.t.Helper()
	s, err := b.ns.JS.Stream(context.Background(), event.StreamName)
	if err != nil {
		b.t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	waitFor(b.t, 30*time.Second, "events settled", func() bool {
		info := b.consumerInfo()
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= last
	})
}

func (b *bundle) restoreAll() (restore.Report, string) {
	b.t.Helper()
	out := b.t.TempDir()
	readers := target.Readers(b.targets)
	r := &restore.Restorer{Index: b.index, Targets: readers, Keys: b.keys, Pseudonyms: b.kms}
	rep, err := r.All(context.Background(), restore.Options{Out: out})
	if err != nil {
		b.t.Fatal(err)
	}
	return rep, out
}

func (b *bundle) checkRestored(out string, want map[string][]byte) {
	b.t.Helper()
	for k, data := range want {
		c, key := filepath.Split(k)
		got, err := os.ReadFile(restore.Path(out, "t1", filepath.Clean(c), key))
		if err != nil {
			b.t.Fatalf("record %s not restored: %v", k, err)
		}
		if !bytes.Equal(got, data) {
			b.t.Fatalf("record %s restored as %q, want %q", k, got, data)
		}
	}
}

// objects lists every object under prefix in a target.
func objects(t *testing.T, tg target.Target, prefix string) []string {
	t.Helper()
	var names []string
	if err := tg.List(context.Background(), prefix, func(i target.Info) error {
		names = append(names, i.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// dlq returns the dead-lettered messages.
func (b *bundle) dlq() []*jetstream.RawStreamMsg {
	b.t.Helper()
	ctx := context.Background()
	s, err := b.ns.JS.Stream(ctx, event.DLQStreamName)
	if err != nil {
		b.t.Fatal(err)
	}
	info := s.CachedInfo()
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	b := setup(t)
	w := b.startWorker()
	want := b.publish(500, 40)
	b.waitSettled()
	st := w.Stats()
	if st.Events != 500 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v, want 500 events and no dead letters", st)
	}
	// Packing: 500 events became far fewer objects.
	packs := objects(t, b.targets[0], "packs/")
	if len(packs) == 0 || len(packs) > 100 {
		t.Fatalf("%d pack objects for 500 events", len(packs))
	}
	for _, tg := range b.targets[1:] {
		if got := objects(t, tg, "packs/"); len(got) != len(packs) {
			t.Fatalf("target %s holds %d packs, %s holds %d", tg.Name(), len(got), b.targets[0].Name(), len(packs))
		}
	}
	rep, out := b.restoreAll()
	if !rep.OK() || rep.Items != 500 || rep.Customers != 40 {
		t.Fatalf("restore report %+v", rep)
	}
	b.checkRestored(out, want)
}

func TestRestoreOneCustomerAsOf(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).UTC()
	for i, v := range []string{"v1", "v2", "v3"} {
		ev := postTx(fmt.Sprintf("asof-%d", i), "alice", "critical", "profile", []byte(v))
		ev.Meta.Time = timestamppb.New(t0.Add(time.Duration(i) * 10 * time.Minute))
		if _, err := b.producer.PublishPostTransaction(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("bob-1", "bob", "critical", "profile", []byte("bob"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	readers := []target.Reader{b.targets[2], b.targets[0]}
	r := &restore.Restorer{Index: b.index, Targets: readers, Keys: b.keys, Pseudonyms: b.kms}
	for _, tc := range []struct {
		asOf time.Time
		want string
	}{{time.Time{}, "v3"}, {t0.Add(15 * time.Minute), "v2"}, {t0.Add(time.Minute), "v1"}} {
		out := t.TempDir()
		rep, err := r.Customer(ctx, "t1", "alice", restore.Options{Out: out, AsOf: tc.asOf})
		if err != nil || !rep.OK() {
			t.Fatalf("restore: %v %+v", err, rep)
		}
		got, err := os.ReadFile(restore.Path(out, "t1", "alice", "profile"))
		if err != nil || string(got) != tc.want {
			t.Fatalf("as of %v: got %q (%v), want %q", tc.asOf, got, err, tc.want)
		}
		if _, err := os.Stat(restore.Path(out, "t1", "bob", "profile")); err == nil {
			t.Fatal("restoring alice also restored bob")
		}
	}
}

func TestBadInputIsDeadLettered(t *testing.T) {
	b := setup(t)
	w := b.startWorker()
	ctx := context.Background()
	good, err := event.New(postTx("good-1", "c1", "critical", "k", []byte("ok")), "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	subj, hdr, data, err := event.Encode(good, event.ContentTypeJSON)
	if err != nil {
		t.Fatal(err)
	}
	clone := func(h nats.Header, id string, kv ...string) nats.Header {
		out := nats.Header{}
		for k, v := range h {
			out[k] = append([]string(nil), v...)
		}
		out.Set(event.HeaderID, id)
		out.Set(event.HeaderMsgID, id)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				out.Del(kv[i])
			} else {
				out.Set(kv[i], kv[i+1])
			}
		}
		return out
	}
	// Bad events are encoded by hand: the SDK refuses to publish them.
	jsonFor := func(ev *custosv1.PostTransaction) []byte {
		d, err := protojson.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	unknownClass := postTx("bad-class", "c1", "platinum", "k", []byte("x"))
	noCustomer := postTx("bad-nocust", "", "critical", "k", []byte("x"))
	oversized := postTx("bad-big", "c1", "critical", "k", bytes.Repeat([]byte("a"), 300<<10))
	cases := []struct {
		name   string
		id     string
		data   []byte
		hdr    []string
		reason string
	}{
		{"invalid JSON", "bad-json", []byte(`{"meta": {`), nil, "malformed"},
		{"malformed protobuf", "bad-proto", []byte{0xff, 0xff, 0xff}, []string{event.HeaderContentType, event.ContentTypeProtobuf}, "malformed"},
		{"unknown data class", "bad-class", jsonFor(unknownClass), nil, "class"},
		{"missing customer id", "bad-nocust", jsonFor(noCustomer), nil, "customer_id"},
		{"oversized record", "bad-big", jsonFor(oversized), nil, "large"},
		{"unsupported content type", "bad-ct", data, []string{event.HeaderContentType, "text/plain"}, "content type"},
	}
	for _, tc := range cases {
		msg := &nats.Msg{Subject: subj, Header: clone(hdr, tc.id, tc.hdr...), Data: tc.data}
		if _, err := b.ns.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	// The worker keeps going: a good event after the bad ones is backed up.
	if _, err := b.ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr, Data: data}); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(cases))
	}
	byID := map[string]*jetstream.RawStreamMsg{}
	for _, m := range dl {
		byID[m.Header.Get(event.HeaderID)] = m
	}
	for _, tc := range cases {
		m := byID[tc.id]
		if m == nil {
			t.Fatalf("%s: not dead-lettered", tc.name)
		}
		reason := m.Header.Get(HeaderDLQReason)
		if !bytes.Contains(bytes.ToLower([]byte(reason)), []byte(tc.reason)) {
			t.Errorf("%s: reason %q does not mention %q", tc.name, reason, tc.reason)
		}
		if bytes.Contains([]byte(reason), []byte("c1")) {
			t.Errorf("%s: reason %q leaks the customer id", tc.name, reason)
		}
		got, err := deadletter.Open(ctx, b.keys, []deadletter.Part{{Header: m.Header, Data: m.Data}})
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("%s: dead letter does not keep the original bytes: %v", tc.name, err)
		}
		if len(tc.data) > 16 && bytes.Contains(m.Data, tc.data[:16]) {
			t.Errorf("%s: dead letter holds the body in plaintext", tc.name)
		}
		// A body that names its customer is sealed under that customer's key, even when the
		// event was invalid, so that erasing the customer erases it too.
		want := deadletter.SystemScope
		if tc.id == "bad-class" || tc.id == "bad-big" || tc.id == "bad-ct" {
			want = b.kms.Pseudonym("t1", "c1")
		}
		if sc := m.Header.Get(deadletter.HeaderScope); sc != want {
			t.Errorf("%s: sealed under scope %q, want %q", tc.name, sc, want)
		}
	}
	if st := w.Stats(); st.Events != 1 || st.DeadLettered != int64(len(cases)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestPoisonEventDeadLetteredAfterMaxDeliver(t *testing.T) {
	b := setup(t, func(c *Config) { c.MaxDeliver = 3 })
	for _, f := range b.faults {
		f.Down()
	}
	w := b.startWorker()
	if _, err := b.producer.PublishPostTransaction(context.Background(), postTx("poison-1", "c1", "critical", "k", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	reason := dl[0].Header.Get(HeaderDLQReason)
	if !bytes.Contains([]byte(reason), []byte("gave up after 3 deliveries")) {
		t.Fatalf("reason %q", reason)
	}
	if got := dl[0].Header.Get(HeaderDLQDeliveries); got != "3" {
		t.Fatalf("deliveries header %q", got)
	}
	if st := w.Stats(); st.Events != 0 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDuplicateDeliveryStoresOneCopy(t *testing.T) {
	b := setup(t)
	var fail atomic.Bool
	fail.Store(true)
	b.cfg.testAfterIndex = func(string) error {
		if fail.CompareAndSwap(true, false) {
			return fmt.Errorf("simulated crash after index, before ack")
		}
		return nil
	}
	w := b.startWorker()
	ctx := context.Background()
	ev := postTx("dup-1", "c1", "critical", "k", []byte("once"))
	for range 2 { // the producer retrying: JetStream de-duplicates by ce-id
		if _, err := b.producer.PublishPostTransaction(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	// The first attempt committed the pack before the simulated crash; the redelivery finds it
	// committed and only acknowledges, so this worker counts no pack written to completion.
	if st := w.Stats(); st.Redelivered != 1 || st.Packs != 0 || st.Events != 1 {
		t.Fatalf("stats %+v, want one redelivery, no pack rewritten, one event", st)
	}
	for _, tg := range b.targets {
		if got := objects(t, tg, "packs/"); len(got) != 1 {
			t.Fatalf("%s holds %d packs, want 1", tg.Name(), len(got))
		}
		if got := objects(t, tg, "manifests/"); len(got) != 1 {
			t.Fatalf("%s holds %d manifests, want 1", tg.Name(), len(got))
		}
	}
	packs, err := b.index.Packs(ctx)
	if err != nil || len(packs) != 1 {
		t.Fatalf("index holds %d packs (%v)", len(packs), err)
	}
}

func TestRedeliveryRebuildsTheSamePack(t *testing.T) {
	b := setup(t, func(c *Config) { c.PackMaxDelay = 200 * time.Millisecond })
	var fail atomic.Bool
	fail.Store(true)
	var firstPack atomic.Value
	b.cfg.testAfterIntent = func(id string) error {
		if fail.CompareAndSwap(true, false) {
			firstPack.Store(id)
			return fmt.Errorf("simulated crash after the intent, before any write")
		}
		return nil
	}
	w := b.startWorker()
	want := b.publish(50, 5)
	b.waitSettled()
	id, _ := firstPack.Load().(string)
	if id == "" {
		t.Fatal("no intent was interrupted")
	}
	if st := w.Stats(); st.Redelivered == 0 {
		t.Fatalf("stats %+v: nothing was redelivered", st)
	}
	for _, tg := range b.targets {
		if _, err := tg.Stat(context.Background(), pack.ObjectName(id)); err != nil {
			t.Fatalf("%s: the interrupted pack %s was not completed under its own name: %v", tg.Name(), id, err)
		}
	}
	rep, out := b.restoreAll()
	if !rep.OK() || rep.Items != 50 {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, want)
}

func TestSlowWriteIsNotRedelivered(t *testing.T) {
	b := setup(t, func(c *Config) { c.AckWait = time.Second })
	for _, f := range b.faults {
		f.Delay(3 * time.Second) // three times AckWait
	}
	w := b.startWorker()
	if _, err := b.producer.PublishPostTransaction(context.Background(), postTx("slow-1", "c1", "critical", "k", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	info := b.consumerInfo()
	if info.NumRedelivered != 0 {
		t.Fatalf("%d redeliveries while the worker was alive", info.NumRedelivered)
	}
	if st := w.Stats(); st.Redelivered != 0 || st.Events != 1 || st.Packs != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestEraseCustomer(t *testing.T) {
	b := setup(t)
	w := b.startWorker()
	ctx := context.Background()
	for i, c := range []string{"keep", "gone"} {
		if _, err := b.producer.PublishPostTransaction(ctx, postTx(fmt.Sprintf("e-%d", i), c, "critical", "k", []byte(c))); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	del := &custosv1.DeletionRequest{Meta: &custosv1.Meta{EventId: "del-1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "gone"},
		RequestedBy: "dpo", LegalBasis: "GDPR Art. 17"}
	if _, err := b.producer.PublishDeletionRequest(ctx, del); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	// New data for an erased customer is refused, not stored.
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("e-late", "gone", "critical", "k", []byte("late"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	if st := w.Stats(); st.Erased != 1 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v", st)
	}
	rep, out := b.restoreAll()
	if !rep.OK() || rep.Customers != 1 || len(rep.Erased) != 1 {
		t.Fatalf("restore %+v", rep)
	}
	if _, err := os.Stat(restore.Path(out, "t1", "gone", "k")); err == nil {
		t.Fatal("erased customer restored")
	}
	b.checkRestored(out, map[string][]byte{"keep/k": []byte("keep")})
}

func TestLargeItemByReference(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	obs, err := b.ns.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads"})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("large record line\n"), 200_000) // 3.6 MB
	if _, err := obs.PutBytes(ctx, "big", data); err != nil {
		t.Fatal(err)
	}
	ev := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: "large-1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c1", DataClass: "important"},
		Record: &custosv1.Record{Key: "export", Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{
			Uri: "nats-object://uploads/big", Size: int64(len(data))}}},
	}
	if _, err := b.producer.PublishPostTransaction(ctx, ev); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	rep, out := b.restoreAll()
	if !rep.OK() || rep.Items != 1 {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, map[string][]byte{"c1/export": data})
}

func TestCorruptReplicaIsSkippedOnRestore(t *testing.T) {
	b := setup(t)
	b.startWorker()
	want := b.publish(20, 3)
	b.waitSettled()
	for _, name := range objects(t, b.targets[0], "packs/") {
		b.faults[0].Corrupt(name)
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore with one corrupt replica: %+v", rep)
	}
	b.checkRestored(out, want)
	// With every replica corrupt, restore fails loudly.
	for _, f := range b.faults {
		for _, name := range objects(t, f, "packs/") {
			f.Corrupt(name)
		}
	}
	rep, _ = b.restoreAll()
	// A restore reads each pack once: a read's flipped first byte fails the first item of each
	// pack, on every target.
	if packs := len(objects(t, b.targets[0], "packs/")); rep.OK() || len(rep.Failures) != packs {
		t.Fatalf("restore over corrupt replicas: %d failures, want %d", len(rep.Failures), packs)
	}
}

func TestStopDrainsHeldEvents(t *testing.T) {
	b := setup(t, func(c *Config) { c.PackMaxDelay = 10 * time.Second })
	w := b.startWorker()
	want := b.publish(30, 3)
	waitFor(t, 10*time.Second, "events held", func() bool { return b.consumerInfo().NumAckPending == 30 })
	// Stop must not wait for the pack's 10 s age limit: it flushes and acknowledges.
	start := time.Now()
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("drain took %v", time.Since(start))
	}
	b.waitSettled()
	if st := w.Stats(); st.Events != 30 {
		t.Fatalf("stats %+v", st)
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, want)
}
