package worker

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// A record reference that cannot be read is retried and then dead-lettered, and neither the
// dead-letter reason, nor the worker's log, nor any span names the URI, the bucket or the object
// (docs/events.md section 7): a URI may carry a signed token, and names may name customers.
func TestReferenceErrorsNameNoURI(t *testing.T) {
	logs := &logtest.Buffer{}
	b := setup(t, func(c *Config) {
		c.MaxDeliver = 2 // one retry (logged, recorded on the span), then the dead letter
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	// A bucket that exists, without the object the event names.
	if _, err := b.ns.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "leakbucketexistsQ7"}); err != nil {
		t.Fatal(err)
	}
	// An HTTPS server whose certificate the worker does not trust: the HTTP client's error
	// quotes the whole URL.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("x")) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	secrets := []string{"leakbucketexistsQ7", "leakbucketmissingQ7", "leak.bucket.badQ7", "leakobjectQ7", "leakpathQ7", "leaksigQ7", "leakuppercaseQ7"}
	cases := []struct {
		id, uri, reason string
	}{
		{"ref-nobucket", "nats-object://leakbucketmissingQ7/customers/leakobjectQ7-1", "record reference: bucket not found"},
		{"ref-noobject", "nats-object://leakbucketexistsQ7/customers/leakobjectQ7-2", "record reference: object not found"},
		{"ref-badbucket", "nats-object://leak.bucket.badQ7/leakobjectQ7-3", "record reference: invalid bucket or object name"},
		{"ref-upper", "NATS-OBJECT://leakuppercaseQ7/leakobjectQ7-4", "record reference: bucket not found"},
		{"ref-https", srv.URL + "/customers/leakpathQ7?sig=leaksigQ7", "record reference: fetch failed"},
	}
	w := b.startWorker()
	for _, tc := range cases {
		ev := &custosv1.PostTransaction{
			Meta: &custosv1.Meta{EventId: tc.id, Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c1", DataClass: "critical"},
			Record: &custosv1.Record{Key: "export", Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{
				Uri: tc.uri, Size: 1}}},
		}
		if _, err := b.producer.PublishPostTransaction(ctx, ev); err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(cases))
	}
	reasons := map[string]string{}
	for _, m := range dl {
		reasons[m.Header.Get(event.HeaderID)] = m.Header.Get(HeaderDLQReason)
	}
	leaks := func(what, text string) {
		t.Helper()
		for _, s := range append(secrets, srv.URL) {
			if strings.Contains(strings.ToLower(text), strings.ToLower(s)) {
				t.Errorf("%s names %q: %s", what, s, text)
			}
		}
	}
	for _, tc := range cases {
		reason, ok := reasons[tc.id]
		if !ok {
			t.Fatalf("%s: not dead-lettered", tc.id)
		}
		if !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: reason %q does not say %q", tc.id, reason, tc.reason)
		}
		leaks(tc.id+": dead-letter reason", reason)
	}
	if st := w.Stats(); st.DeadLettered != int64(len(cases)) || st.Events != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The transient failures were retried once, and the retry logged.
	if !strings.Contains(logs.String(), "event will be retried") {
		t.Errorf("no retry logged:\n%s", logs.String())
	}
	leaks("log", logs.String())

	waitFor(t, 5*time.Second, "process spans", func() bool {
		return len(named(b.spans.Ended(), "process custos.v1.events.post_transaction")) >= len(cases)
	})
	recorded := 0
	for _, s := range b.spans.Ended() {
		leaks("span name", s.Name())
		leaks("span status", s.Status().Description)
		for _, a := range s.Attributes() {
			leaks("span "+s.Name()+" attribute "+string(a.Key), a.Value.Emit())
		}
		for _, e := range s.Events() {
			recorded++
			leaks("span "+s.Name()+" event "+e.Name, e.Name)
			for _, a := range e.Attributes {
				leaks("span "+s.Name()+" event "+e.Name+" "+string(a.Key), a.Value.Emit())
			}
		}
	}
	if recorded == 0 {
		t.Error("no span recorded an error")
	}
}

// sizedManual returns a manual request with inline records (each within the inline limit) whose
// message counts exactly size bytes.
func sizedManual(t *testing.T, id string, size int) (string, nats.Header, []byte) {
	t.Helper()
	big := []byte(strings.Repeat("r", 200<<10))
	n := 1000
	// One time for every attempt: ce-time's text length varies with the clock's nanoseconds, and
	// the size must converge.
	at := timestamppb.Now()
	for range 20 {
		msg := &custosv1.ManualRequest{
			Meta:   &custosv1.Meta{EventId: id, Time: at, Tenant: "t1", CustomerId: "c1", DataClass: "critical"},
			Reason: "size limit test", RequestedBy: "ops",
			Records: []*custosv1.Record{inline("a", string(big)), inline("b", string(big)), inline("c", string(big)),
				inline("d", string(big)), inline("e", strings.Repeat("r", n))},
		}
		ev, err := event.New(msg, "urn:test")
		if err != nil {
			t.Fatal(err)
		}
		subject, hdr, data, err := event.Limits{MaxEventBytes: 2 * size}.Encode(ev, event.ContentTypeProtobuf)
		if err != nil {
			t.Fatal(err)
		}
		got := event.MessageSize(hdr, data)
		if got == size {
			return subject, hdr, data
		}
		n += size - got
	}
	t.Fatalf("no manual request of %d bytes", size)
	return "", nil, nil
}

// The worker's default whole-message limit is the documented one, event.DefaultMaxEventBytes
// (1 MiB): an event of exactly that size is backed up, one byte larger is dead-lettered as
// oversized.
func TestEventSizeLimitIsTheDocumentedOne(t *testing.T) {
	b := setup(t, func(c *Config) { c.MaxEventBytes, c.MaxInlineBytes = 0, 0 })
	// NATS' default max_payload is also 1 MiB and counts a few more header bytes than the event
	// limit, so neither message could be published to a default server. Raise it, then connect
	// anew: a client learns the limit when it connects.
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.ns.Dir, NoLog: true, NoSigs: true,
		MaxPayload: 4 << 20}
	if err := b.ns.Server.ReloadOptions(opts); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if nc.MaxPayload() != 4<<20 {
		t.Fatalf("max payload %d after reload", nc.MaxPayload())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Deps{JS: js, Keys: b.keys, Pseudonyms: b.kms, Index: b.index, Repairs: b.repairs}, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.MaxEventBytes != event.DefaultMaxEventBytes || w.limits.MaxEventBytes != event.DefaultMaxEventBytes ||
		w.cfg.MaxInlineBytes != event.DefaultMaxInlineBytes || event.DefaultMaxEventBytes != 1<<20 {
		t.Fatalf("worker limits %d / %d, inline %d; want the documented %d and %d", w.cfg.MaxEventBytes,
			w.limits.MaxEventBytes, w.cfg.MaxInlineBytes, event.DefaultMaxEventBytes, event.DefaultMaxInlineBytes)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })

	ctx := context.Background()
	for _, tc := range []struct {
		id   string
		size int
	}{{"size-at-limit", event.DefaultMaxEventBytes}, {"size-over-limit", event.DefaultMaxEventBytes + 1}} {
		subject, hdr, data := sizedManual(t, tc.id, tc.size)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: data}); err != nil {
			t.Fatalf("%s: publish: %v", tc.id, err)
		}
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if id := dl[0].Header.Get(event.HeaderID); id != "size-over-limit" {
		t.Fatalf("dead-lettered %q, want size-over-limit", id)
	}
	if reason := dl[0].Header.Get(HeaderDLQReason); !strings.HasPrefix(reason, "event too large") {
		t.Fatalf("reason %q, want event too large", reason)
	}
	if st := w.Stats(); st.Events != 1 || st.DeadLettered != 1 || st.Items != 5 {
		t.Fatalf("stats %+v, want the event at the limit backed up (5 items) and the other dead-lettered", st)
	}
}
