package natsauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/natsauth"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

// classes the producers in these tests may name.
var classes = []string{"critical", "important"}

// testBundle is one test's nats-server, run with the users of a generated set and provisioned
// by the admin as the embedded stack does it.
type testBundle struct {
	url   string
	set   *natsauth.Set
	admin *client
	kms   *keys.LocalKMS
	// scopes hold a data key each, created by the admin before the test.
	scopes []string
}

// client is one role's connection. It records every permissions violation the server reports.
type client struct {
	role natsauth.Role
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

// ctx bounds one step well past what a denial needs: a step that timed out instead of being
// denied fails on the error's kind, not on its timing.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func setup(t *testing.T, opts natsauth.Options) *testBundle {
	t.Helper()
	set, err := natsauth.Generate(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Nkeys: set.ServerUsers(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	b := &testBundle{url: srv.ClientURL(), set: set}
	b.admin = b.connect(t, natsauth.Admin)
	b.provision(t)
	return b
}

func (b *testBundle) connect(t *testing.T, role natsauth.Role) *client {
	t.Helper()
	u, ok := b.set.User(role)
	if !ok {
		t.Fatalf("no user for %s", role)
	}
	auth, err := natsauth.ConnectOption(u.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{role: role}
	c.nc, err = nats.Connect(b.url, auth, nats.Name("test "+string(role)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// clean fails the test if the server refused anything c did so far.
func (c *client) clean(t *testing.T) {
	t.Helper()
	c.nc.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) > 0 {
		t.Fatalf("%s was refused: %s", c.role, strings.Join(c.violations, "; "))
	}
}

// forget drops the violations recorded so far (after a step expected to be refused).
func (c *client) forget() {
	c.mu.Lock()
	c.violations = nil
	c.mu.Unlock()
}

// denied asserts that call, which publishes to subject (see broker.Do), is refused as a
// permissions violation.
func (c *client) denied(t *testing.T, what, subject string, call func(context.Context) error) {
	t.Helper()
	err := broker.Do(ctx(t), c.nc, subject, call)
	if !errors.Is(err, broker.ErrDenied) || !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("%s may %s: got %v, want a permissions violation", c.role, what, err)
	}
	c.forget()
}

// request sends a raw request to subject, as a client would that bypasses the Custos code.
func (c *client) request(subject string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.nc.RequestWithContext(ctx, subject, []byte("{}"))
		return err
	}
}

// provision creates every stream and bucket as the admin, with the product's own code, and
// stores a data key for a few customers.
func (b *testBundle) provision(t *testing.T) {
	t.Helper()
	js := b.admin.js
	if err := worker.EnsureStreams(ctx(t), js); err != nil { // events, dead letters, audit, intents
		t.Fatal(err)
	}
	if _, err := snapshot.Open(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.OpenRecords(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Open(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := repair.OpenQueue(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureKV(ctx(t), js, jetstream.KeyValueConfig{Bucket: schedule.DefaultBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureObjectStore(ctx(t), js, jetstream.ObjectStoreConfig{Bucket: natsauth.DefaultUploadBucket}); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.kms, err = keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)); err != nil {
		t.Fatal(err)
	}
	store, err := keys.NewKVStore(ctx(t), js, b.kms)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := range 3 {
		scope := b.kms.Pseudonym("acme", fmt.Sprintf("c-%d", i))
		if _, err := store.DataKey(ctx(t), scope); err != nil {
			t.Fatal(err)
		}
		b.scopes = append(b.scopes, scope)
	}
	b.admin.clean(t)
}

// keysIntact asserts, as the admin, that every data key created by provision is still there.
func (b *testBundle) keysIntact(t *testing.T) {
	t.Helper()
	store, err := keys.NewKVStore(ctx(t), b.admin.js, b.kms)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, scope := range b.scopes {
		if _, err := store.Lookup(ctx(t), scope); err != nil {
			t.Fatalf("data key of %s: %v", scope, err)
		}
	}
}

// events returns, as the admin, the subjects of every event in CUSTOS_EVENTS, in order.
func (b *testBundle) events(t *testing.T) []string {
	t.Helper()
	s, err := b.admin.js.Stream(ctx(t), event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	st := s.CachedInfo().State
	var out []string
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx(t), seq)
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		out = append(out, m.Subject)
	}
	return out
}

func newProducer(t *testing.T, c *client) *producer.Producer {
	t.Helper()
	p, err := producer.New(c.js, "//test/"+string(c.role), producer.WithLimits(event.Limits{Classes: classes}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func postTransaction(customer string) *custosv1.PostTransaction {
	return &custosv1.PostTransaction{
		Meta:   &custosv1.Meta{Tenant: "acme", CustomerId: customer, DataClass: "critical"},
		Record: &custosv1.Record{Key: "orders/42", Source: &custosv1.Record_Inline{Inline: []byte(`{"total":42}`)}},
	}
}

func deletionRequest(customer string) *custosv1.DeletionRequest {
	return &custosv1.DeletionRequest{Meta: &custosv1.Meta{Tenant: "acme", CustomerId: customer}, RequestedBy: "dpo"}
}

// destructive are the requests no role but the admin may make: they would lose backups or keys.
var destructive = []struct{ what, subject string }{
	{"purge the key store", "$JS.API.STREAM.PURGE.KV_" + keys.DefaultBucket},
	{"delete the key store", "$JS.API.STREAM.DELETE.KV_" + keys.DefaultBucket},
	{"delete CUSTOS_EVENTS", "$JS.API.STREAM.DELETE." + event.StreamName},
	{"purge CUSTOS_EVENTS", "$JS.API.STREAM.PURGE." + event.StreamName},
	{"delete an event", "$JS.API.STREAM.MSG.DELETE." + event.StreamName},
	{"change CUSTOS_EVENTS", "$JS.API.STREAM.UPDATE." + event.StreamName},
	{"create a stream", "$JS.API.STREAM.CREATE.ROGUE"},
	{"purge the index", "$JS.API.STREAM.PURGE.KV_" + catalog.DefaultBucket},
	{"delete the audit log", "$JS.API.STREAM.DELETE." + audit.StreamName},
	{"delete the workers' consumer", "$JS.API.CONSUMER.DELETE." + event.StreamName + "." + natsauth.DefaultWorkerConsumer},
}

// Every role but the admin is refused every destructive request, and nothing is lost.
func TestNoRoleButAdminDestroys(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{ReserveDeletion: true})
	p := newProducer(t, b.admin)
	if _, err := p.PublishPostTransaction(ctx(t), postTransaction("c-1")); err != nil {
		t.Fatal(err)
	}
	before := b.events(t)
	for _, role := range natsauth.Roles {
		if role == natsauth.Admin {
			continue
		}
		c := b.connect(t, role)
		for _, d := range destructive {
			c.denied(t, d.what, d.subject, c.request(d.subject))
		}
	}
	b.keysIntact(t)
	if after := b.events(t); !slices.Equal(after, before) {
		t.Fatalf("events changed: %v, were %v", after, before)
	}
}

func TestProducer(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{ReserveDeletion: true})
	c := b.connect(t, natsauth.Producer)
	p := newProducer(t, c)
	for i := range 3 {
		if _, err := p.PublishPostTransaction(ctx(t), postTransaction(fmt.Sprintf("c-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.PublishSuspiciousActivity(ctx(t), &custosv1.SuspiciousActivity{
		Meta: &custosv1.Meta{Tenant: "acme", CustomerId: "c-1", DataClass: "critical"}, Reason: "mass delete", DetectedBy: "guard"}); err != nil {
		t.Fatal(err)
	}
	// A record too large to send inline goes through the upload bucket, under a new name.
	obs, err := broker.EnsureObjectStore(ctx(t), c.js, jetstream.ObjectStoreConfig{Bucket: natsauth.DefaultUploadBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx(t), "manual/ev-1/0", bytes.Repeat([]byte("x"), 300<<10)); err != nil {
		t.Fatal(err)
	}
	c.clean(t)
	before := b.events(t)

	c.denied(t, "publish a deletion request", event.TypeDeletionRequest.Subject(), func(ctx context.Context) error {
		_, err := p.PublishDeletionRequest(ctx, deletionRequest("c-1"))
		return err
	})
	c.denied(t, "publish a schedule tick", event.TypeScheduleTick.Subject(), func(ctx context.Context) error {
		_, err := p.PublishScheduleTick(ctx, &custosv1.ScheduleTick{Meta: &custosv1.Meta{Tenant: "acme", DataClass: "critical"},
			Schedule: "critical-daily", Method: "full"})
		return err
	})
	c.denied(t, "publish a dead letter", event.DLQSubjectPrefix+"post_transaction", func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, event.DLQSubjectPrefix+"post_transaction", []byte("{}"))
		return err
	})
	c.denied(t, "write the key store", "$KV."+keys.DefaultBucket+"."+b.scopes[0], func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, "$KV."+keys.DefaultBucket+"."+b.scopes[0], []byte(`{"v":1,"destroyed":"2026-01-01T00:00:00Z"}`))
		return err
	})
	c.denied(t, "look the key store up", "", func(ctx context.Context) error {
		_, err := c.js.KeyValue(ctx, keys.DefaultBucket)
		return err
	})
	// Nothing was lost and nothing was added: every earlier event is still there, and no
	// deletion request or tick is.
	after := b.events(t)
	if !slices.Equal(after, before) || len(after) != 4 {
		t.Fatalf("events %v, want %v", after, before)
	}
	b.keysIntact(t)
}

// Without ReserveDeletion a producer may ask for an erasure.
func TestProducerDeletionAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{})
	c := b.connect(t, natsauth.Producer)
	if _, err := newProducer(t, c).PublishDeletionRequest(ctx(t), deletionRequest("c-1")); err != nil {
		t.Fatal(err)
	}
	c.clean(t)
	if got := b.events(t); !slices.Equal(got, []string{event.TypeDeletionRequest.Subject()}) {
		t.Fatalf("events %v", got)
	}
}

func TestWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{ReserveDeletion: true})
	prod := b.connect(t, natsauth.Producer)
	p := newProducer(t, prod)
	for i := range 5 {
		if _, err := p.PublishPostTransaction(ctx(t), postTransaction(fmt.Sprintf("c-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	obs, err := broker.EnsureObjectStore(ctx(t), prod.js, jetstream.ObjectStoreConfig{Bucket: natsauth.DefaultUploadBucket})
	if err != nil {
		t.Fatal(err)
	}
	upload := bytes.Repeat([]byte("record "), 50<<10)
	if _, err := obs.PutBytes(ctx(t), "manual/ev-2/0", upload); err != nil {
		t.Fatal(err)
	}

	c := b.connect(t, natsauth.Worker)
	js := c.js
	// Binding to what the admin provisioned works, with the product's own code.
	for _, name := range []string{event.StreamName, event.DLQStreamName, audit.StreamName, worker.IntentStream, snapshot.TaskStream} {
		if _, err := broker.Ensure(ctx(t), js, jetstream.StreamConfig{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	index, err := catalog.Open(ctx(t), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repair.OpenQueue(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(ctx(t), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.OpenRecords(ctx(t), js, 1); err != nil {
		t.Fatal(err)
	}

	// The shared consumer: create it, join it, consume, heartbeat and acknowledge.
	want := jetstream.ConsumerConfig{Durable: natsauth.DefaultWorkerConsumer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, FilterSubject: event.SubjectPrefix + ">"}
	if _, err := js.CreateConsumer(ctx(t), event.StreamName, want); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx(t), event.StreamName, natsauth.DefaultWorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateConsumer(ctx(t), event.StreamName, want); err != nil { // update_consumer: true
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	events, err := js.Stream(ctx(t), event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		// Rebuilding a pack reads a held event back from the stream.
		if _, err := events.GetMsg(ctx(t), md.Sequence.Stream); err != nil {
			t.Fatal(err)
		}
		if err := m.InProgress(); err != nil {
			t.Fatal(err)
		}
		if err := m.DoubleAck(ctx(t)); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 5 {
		t.Fatalf("consumed %d events, want 5", got)
	}

	// Writes: intents, dead letters, audit entries, snapshot tasks, the index, key-value.
	for _, subj := range []string{worker.IntentSubjectPrefix + "0123", event.DLQSubjectPrefix + "post_transaction.p0",
		audit.SubjectPrefix + audit.KindManual} {
		if _, err := js.Publish(ctx(t), subj, []byte(`{}`)); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
	job := snapshot.Job{ID: snapshot.JobID("ev-1"), Class: "critical", Method: source.Full, Trigger: "manual",
		Time: time.Now(), Tasks: []source.CustomerRange{{}}, Created: time.Now()}
	if _, _, err := snaps.Plan(ctx(t), job); err != nil {
		t.Fatal(err)
	}
	if err := snaps.Publish(ctx(t), job); err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.Jobs(ctx(t)); err != nil {
		t.Fatal(err)
	}
	tasks, err := js.CreateOrUpdateConsumer(ctx(t), snapshot.TaskStream, jetstream.ConsumerConfig{
		Durable: worker.TaskConsumer, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := tasks.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range tb.Messages() {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	in := []pack.Item{{ID: "item-1", Customer: b.scopes[0], Seq: 1, EventTime: time.Now(), Sealed: []byte("sealed")}}
	m := pack.Build("critical", in).Manifest
	if err := index.Commit(ctx(t), m, []string{"fs:a"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if recs, err := index.Customer(ctx(t), b.scopes[0]); err != nil || len(recs) != 1 {
		t.Fatalf("index lookup: %v, %v", recs, err)
	}
	// The key store: read, create, list and watch; and read an upload.
	kv, err := broker.EnsureKV(ctx(t), js, jetstream.KeyValueConfig{Bucket: keys.DefaultBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx(t), b.scopes[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx(t), "p-new-scope", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx(t), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range lister.Keys() {
		n++
	}
	if n < len(b.scopes)+1 {
		t.Fatalf("listed %d keys", n)
	}
	uploads, err := broker.EnsureObjectStore(ctx(t), js, jetstream.ObjectStoreConfig{Bucket: natsauth.DefaultUploadBucket})
	if err != nil {
		t.Fatal(err)
	}
	if data, err := uploads.GetBytes(ctx(t), "manual/ev-2/0"); err != nil || !bytes.Equal(data, upload) {
		t.Fatalf("read upload: %d bytes, %v", len(data), err)
	}
	oc, err := js.OrderedConsumer(ctx(t), broker.ObjectStream(natsauth.DefaultUploadBucket), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c.clean(t)

	// Refused, through the real client API: workers bind, they never manage. The events
	// published now wait for a worker: none may be lost.
	for i := range 2 {
		if _, err := p.PublishPostTransaction(ctx(t), postTransaction(fmt.Sprintf("c-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waiting := b.events(t)
	keysStream, err := js.Stream(ctx(t), broker.KVStream(keys.DefaultBucket))
	if err != nil {
		t.Fatal(err)
	}
	c.denied(t, "purge the key store", "STREAM.PURGE.KV_"+keys.DefaultBucket, func(ctx context.Context) error {
		return keysStream.Purge(ctx)
	})
	c.denied(t, "delete the key store", "", func(ctx context.Context) error { return js.DeleteKeyValue(ctx, keys.DefaultBucket) })
	c.denied(t, "delete CUSTOS_EVENTS", "", func(ctx context.Context) error { return js.DeleteStream(ctx, event.StreamName) })
	c.denied(t, "delete an event", "", func(ctx context.Context) error {
		return events.DeleteMsg(ctx, events.CachedInfo().State.LastSeq)
	})
	c.denied(t, "change CUSTOS_EVENTS", "", func(ctx context.Context) error {
		_, err := broker.Apply(ctx, js, event.StreamsConfig{MaxAge: time.Minute}.EventsStreamConfig())
		return err
	})
	c.denied(t, "create a stream", "", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
		return err
	})
	c.denied(t, "delete the shared consumer", "", func(ctx context.Context) error {
		return js.DeleteConsumer(ctx, event.StreamName, natsauth.DefaultWorkerConsumer)
	})
	c.denied(t, "publish an event", "", func(ctx context.Context) error {
		_, err := js.Publish(ctx, event.TypeDeletionRequest.Subject(), []byte("{}"))
		return err
	})
	c.denied(t, "purge dead letters", "", func(ctx context.Context) error {
		s, err := js.Stream(ctx, event.DLQStreamName)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	})
	b.keysIntact(t)
	if _, err := b.admin.js.Consumer(ctx(t), event.StreamName, natsauth.DefaultWorkerConsumer); err != nil {
		t.Fatalf("the shared consumer: %v", err)
	}
	if got := b.events(t); len(got) != 2 || !slices.Equal(got, waiting) {
		t.Fatalf("events %v, want %v", got, waiting)
	}
}

// No role but the workers may join, consume or acknowledge the workers' consumers, or create
// a consumer on their streams: a foreign client cannot take their events or tasks.
func TestForeignWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{})
	w := b.connect(t, natsauth.Worker)
	for _, d := range []struct{ stream, name string }{
		{event.StreamName, natsauth.DefaultWorkerConsumer}, {snapshot.TaskStream, worker.TaskConsumer}} {
		if _, err := w.js.CreateOrUpdateConsumer(ctx(t), d.stream, jetstream.ConsumerConfig{
			Durable: d.name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	w.clean(t)
	for _, role := range []natsauth.Role{natsauth.Producer, natsauth.Scheduler, natsauth.Operator, natsauth.Restorer, natsauth.Auditor} {
		c := b.connect(t, role)
		for _, d := range []struct{ stream, name string }{
			{event.StreamName, natsauth.DefaultWorkerConsumer}, {snapshot.TaskStream, worker.TaskConsumer}} {
			c.denied(t, "join "+d.name, "", func(ctx context.Context) error {
				_, err := c.js.CreateOrUpdateConsumer(ctx, d.stream, jetstream.ConsumerConfig{
					Durable: d.name, AckPolicy: jetstream.AckExplicitPolicy})
				return err
			})
			c.denied(t, "pull from "+d.name, "", c.request("$JS.API.CONSUMER.MSG.NEXT."+d.stream+"."+d.name))
			c.denied(t, "make an ephemeral consumer on "+d.stream, "", func(ctx context.Context) error {
				_, err := c.js.OrderedConsumer(ctx, d.stream, jetstream.OrderedConsumerConfig{})
				return err
			})
		}
	}
}

func TestScheduler(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{})
	c := b.connect(t, natsauth.Scheduler)
	for _, name := range []string{event.StreamName, event.DLQStreamName} {
		if _, err := broker.Ensure(ctx(t), c.js, jetstream.StreamConfig{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := broker.EnsureKV(ctx(t), c.js, jetstream.KeyValueConfig{Bucket: schedule.DefaultBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx(t), "tick-1", []byte("claimed")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx(t), "tick-1"); err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, c)
	if _, err := p.PublishScheduleTick(ctx(t), &custosv1.ScheduleTick{Meta: &custosv1.Meta{Tenant: "acme", DataClass: "critical"},
		Schedule: "critical-daily", Method: "full"}); err != nil {
		t.Fatal(err)
	}
	// The RPO monitor beside it reads the index and the snapshot list.
	index, err := catalog.Open(ctx(t), c.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := index.Packs(ctx(t)); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(ctx(t), c.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.List(ctx(t), ""); err != nil {
		t.Fatal(err)
	}
	c.clean(t)
	c.denied(t, "publish a post-transaction event", event.TypePostTransaction.Subject(), func(ctx context.Context) error {
		_, err := p.PublishPostTransaction(ctx, postTransaction("c-1"))
		return err
	})
	c.denied(t, "write the index", "", func(ctx context.Context) error {
		return index.Commit(ctx, pack.Build("critical", []pack.Item{{ID: "i", Customer: b.scopes[0], Seq: 1, Sealed: []byte("s")}}).Manifest,
			[]string{"fs:a"}, time.Now())
	})
}

func TestOperator(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{ReserveDeletion: true})
	w := b.connect(t, natsauth.Worker)
	if _, err := w.js.Publish(ctx(t), event.DLQSubjectPrefix+"post_transaction.p0", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c := b.connect(t, natsauth.Operator)
	p := newProducer(t, c)
	// Erasure requests are the operator's when reserved; backup triggers too.
	if _, err := p.PublishDeletionRequest(ctx(t), deletionRequest("c-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishManualRequest(ctx(t), &custosv1.ManualRequest{Meta: &custosv1.Meta{Tenant: "acme", DataClass: "important"},
		Reason: "drill", RequestedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	// custos dlq: follow the dead letters.
	dlq, err := c.js.Stream(ctx(t), event.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := dlq.OrderedConsumer(ctx(t), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// catalog rebuild and verify with repair write the index and the key store.
	index, err := catalog.Open(ctx(t), c.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.Commit(ctx(t), pack.Build("critical", []pack.Item{{ID: "i", Customer: b.scopes[0], Seq: 1, Sealed: []byte("s")}}).Manifest,
		[]string{"fs:a"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(ctx(t), c.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.Jobs(ctx(t)); err != nil {
		t.Fatal(err)
	}
	c.clean(t)
	c.denied(t, "purge dead letters", "STREAM.PURGE."+event.DLQStreamName, func(ctx context.Context) error { return dlq.Purge(ctx) })
	c.denied(t, "write an audit entry", "", func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, audit.SubjectPrefix+audit.KindManual, []byte("{}"))
		return err
	})
}

func TestAuditorAndRestorer(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{})
	w := b.connect(t, natsauth.Worker)
	entry := audit.Entry{Time: time.Now(), Kind: audit.KindManual, EventID: "ev-1", Class: "critical",
		Reason: "drill", RequestedBy: "ops", Outcome: audit.OutcomeNoRecords}
	raw, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.js.Publish(ctx(t), audit.SubjectPrefix+audit.KindManual, raw); err != nil {
		t.Fatal(err)
	}

	auditor := b.connect(t, natsauth.Auditor)
	entries, err := audit.List(ctx(t), auditor.js, 0)
	if err != nil || len(entries) != 1 || entries[0].EventID != "ev-1" {
		t.Fatalf("audit log: %v, %v", entries, err)
	}
	if _, err := audit.ReadEntries(ctx(t), auditor.js); err != nil {
		t.Fatal(err)
	}
	auditor.clean(t)
	auditor.denied(t, "publish an event", event.TypePostTransaction.Subject(), func(ctx context.Context) error {
		_, err := newProducer(t, auditor).PublishPostTransaction(ctx, postTransaction("c-1"))
		return err
	})
	auditor.denied(t, "write the audit log", "", func(ctx context.Context) error {
		_, err := auditor.js.Publish(ctx, audit.SubjectPrefix+audit.KindManual, raw)
		return err
	})

	for _, role := range []natsauth.Role{natsauth.Restorer, natsauth.Auditor} {
		c := b.connect(t, role)
		// What config.Open binds to, and the reads a restore and a verify make.
		index, err := catalog.Open(ctx(t), c.js, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := index.Packs(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := repair.OpenQueue(ctx(t), c.js, 1); err != nil {
			t.Fatal(err)
		}
		snaps, err := snapshot.Open(ctx(t), c.js, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := snaps.List(ctx(t), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := snapshot.OpenRecords(ctx(t), c.js, 1); err != nil {
			t.Fatal(err)
		}
		kv, err := broker.EnsureKV(ctx(t), c.js, jetstream.KeyValueConfig{Bucket: keys.DefaultBucket})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx(t), b.scopes[0]); err != nil {
			t.Fatal(err)
		}
		watch, err := kv.WatchAll(ctx(t), jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		if err := watch.Stop(); err != nil {
			t.Fatal(err)
		}
		c.clean(t)
		c.denied(t, "destroy a data key", "", func(ctx context.Context) error {
			_, err := kv.Put(ctx, b.scopes[0], []byte(`{"v":1,"destroyed":"2026-01-01T00:00:00Z"}`))
			return err
		})
		c.denied(t, "write the index", "", func(ctx context.Context) error {
			return index.Commit(ctx, pack.Build("critical", []pack.Item{{ID: "i", Customer: b.scopes[0], Seq: 1, Sealed: []byte("s")}}).Manifest,
				[]string{"fs:a"}, time.Now())
		})
		// Nor may it read the replies other roles receive.
		c.denied(t, "read other roles' replies", "", func(ctx context.Context) error {
			sub, err := c.nc.SubscribeSync("_INBOX.>")
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
		c.denied(t, "read events as they are published", "", func(ctx context.Context) error {
			sub, err := c.nc.SubscribeSync(event.SubjectPrefix + ">")
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	}
	b.keysIntact(t)
}

func TestNoCredential(t *testing.T) {
	t.Parallel()
	b := setup(t, natsauth.Options{})
	if nc, err := nats.Connect(b.url); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect without a credential: %v, want an authorization error", err)
	}
	// A user key the server does not know fares no better.
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.url, nats.Nkey(pub, kp.Sign))
	if !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect with an unknown key: %v, want an authorization error", err)
	}
}
