package broker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/broker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"))
}

// testBundle is one test's server with two users: "admin", who may do everything, and
// "reader", who may only look up the stream EXISTING and the bucket KV_EXISTING and receive
// replies.
type testBundle struct {
	url    string
	admin  jetstream.JetStream
	reader jetstream.JetStream
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	reader := &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.STREAM.INFO.EXISTING", "$JS.API.STREAM.INFO.KV_EXISTING", "$JS.API.STREAM.INFO.OBJ_EXISTING",
			"granted.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "admin-pw"},
			{Username: "reader", Password: "reader-pw", Permissions: reader},
			{Username: "deaf", Password: "deaf-pw", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Deny: []string{">"}}}},
		},
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
	b := &testBundle{url: srv.ClientURL()}
	b.admin = connect(t, b.url, "admin", "admin-pw")
	b.reader = connect(t, b.url, "reader", "reader-pw")
	return b
}

func connect(t *testing.T, url, user, pw string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, pw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// ctx bounds a call well past what a denial needs, so a test that got a timeout instead of
// ErrDenied fails on the error's kind.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func streamConfig(name string, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, MaxAge: maxAge}
}

func TestEnsureCreatesThenBindsWithoutUpdating(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := broker.Ensure(ctx(t), b.admin, streamConfig("EXISTING", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Fatalf("created with max age %v, want 1h", got)
	}
	// Another configuration binds to the stream as it is.
	s, err = broker.Ensure(ctx(t), b.admin, streamConfig("EXISTING", 2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != time.Hour {
		t.Fatalf("Ensure changed max age to %v", info.Config.MaxAge)
	}
	// Apply changes it.
	if s, err = broker.Apply(ctx(t), b.admin, streamConfig("EXISTING", 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 2*time.Hour {
		t.Fatalf("Apply left max age %v, want 2h", got)
	}
}

func TestEnsureKVAndObjectStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	kv, err := broker.EnsureKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "EXISTING", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx(t), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv, err = broker.EnsureKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "EXISTING", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.Values() != 1 {
		t.Fatalf("EnsureKV changed the bucket: history %d, values %d", st.History(), st.Values())
	}
	if kv, err = broker.ApplyKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "EXISTING", History: 5}); err != nil {
		t.Fatal(err)
	}
	if st, err = kv.Status(ctx(t)); err != nil || st.History() != 5 {
		t.Fatalf("ApplyKV: history %v, %v", st, err)
	}

	if _, err := broker.EnsureObjectStore(ctx(t), b.admin, jetstream.ObjectStoreConfig{Bucket: "EXISTING"}); err != nil {
		t.Fatal(err)
	}
	obs, err := broker.EnsureObjectStore(ctx(t), b.reader, jetstream.ObjectStoreConfig{Bucket: "EXISTING", Description: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broker.ApplyObjectStore(ctx(t), b.admin, jetstream.ObjectStoreConfig{Bucket: "EXISTING", Description: "changed"}); err != nil {
		t.Fatal(err)
	}
	st2, err := obs.Status(ctx(t))
	if err != nil || st2.Bucket() != "EXISTING" || st2.Description() == "other" {
		t.Fatalf("EnsureObjectStore as reader: %v, %v", st2, err)
	}
}

// Many processes starting at once all get the stream one of them created.
func TestEnsureConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Go(func() {
			_, err := broker.Ensure(ctx(t), b.admin, streamConfig("RACED", time.Hour))
			errs <- err
			_, err = broker.EnsureKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "RACED"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDenied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := broker.Ensure(ctx(t), b.admin, streamConfig("EXISTING", time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "EXISTING"}); err != nil {
		t.Fatal(err)
	}
	// A credential that may look streams up binds to existing ones.
	if _, err := broker.Ensure(ctx(t), b.reader, streamConfig("EXISTING", 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureKV(ctx(t), b.reader, jetstream.KeyValueConfig{Bucket: "EXISTING"}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, what string
		call       func(context.Context) error
	}{
		{"create a missing stream", "stream MISSING", func(c context.Context) error {
			_, err := broker.Ensure(c, b.reader, streamConfig("MISSING", time.Hour))
			return err
		}},
		{"create a missing bucket", "bucket MISSING", func(c context.Context) error {
			_, err := broker.EnsureKV(c, b.reader, jetstream.KeyValueConfig{Bucket: "MISSING"})
			return err
		}},
		{"create a missing object store", "object store MISSING", func(c context.Context) error {
			_, err := broker.EnsureObjectStore(c, b.reader, jetstream.ObjectStoreConfig{Bucket: "MISSING"})
			return err
		}},
		{"update a stream", "stream EXISTING", func(c context.Context) error {
			_, err := broker.Apply(c, b.reader, streamConfig("EXISTING", 2*time.Hour))
			return err
		}},
		{"update a bucket", "bucket EXISTING", func(c context.Context) error {
			_, err := broker.ApplyKV(c, b.reader, jetstream.KeyValueConfig{Bucket: "EXISTING", History: 3})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(ctx(t))
			if !errors.Is(err, broker.ErrDenied) || !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("got %v, want a permissions violation", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.what) || !strings.Contains(msg, "run custos setup with an admin credential") {
				t.Fatalf("error does not say what and how: %v", err)
			}
		})
	}
	// Nothing was created or changed.
	if _, err := b.admin.Stream(ctx(t), "MISSING"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("MISSING: %v", err)
	}
	s, err := b.admin.Stream(ctx(t), "EXISTING")
	if err != nil || s.CachedInfo().Config.MaxAge != time.Hour {
		t.Fatalf("EXISTING changed: %v", err)
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	nc := b.reader.Conn()
	publish := func(subject string) func(context.Context) error {
		return func(c context.Context) error {
			_, err := nc.RequestWithContext(c, subject, nil)
			return err
		}
	}
	// A denied request comes back as ErrDenied, under its full subject or its API part.
	for _, match := range []string{"$JS.API.STREAM.PURGE.EXISTING", "STREAM.PURGE.EXISTING", ""} {
		err := broker.Do(ctx(t), nc, match, publish("$JS.API.STREAM.PURGE.EXISTING"))
		if !errors.Is(err, broker.ErrDenied) || !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("match %q: got %v", match, err)
		}
		if !strings.Contains(err.Error(), `"$JS.API.STREAM.PURGE.EXISTING"`) {
			t.Fatalf("the error does not name the subject: %v", err)
		}
	}
	// A violation on another subject is not this call's: the call's own error comes back.
	short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := broker.Do(short, nc, "other.subject", publish("$JS.API.STREAM.DELETE.EXISTING"))
	if errors.Is(err, broker.ErrDenied) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the call's timeout", err)
	}
	// An allowed publish passes.
	if err := broker.Do(ctx(t), nc, "", func(context.Context) error { return nc.Publish("granted.x", nil) }); err != nil {
		t.Fatal(err)
	}
}

// A client that may not subscribe to its reply inbox never gets an answer; the call says why.
func TestDeniedInbox(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deaf := connect(t, b.url, "deaf", "deaf-pw")
	_, err := broker.Ensure(ctx(t), deaf, streamConfig("EXISTING", time.Hour))
	if !errors.Is(err, broker.ErrDenied) || !strings.Contains(err.Error(), "inbox") {
		t.Fatalf("got %v", err)
	}
	// The inbox subscription is denied once per connection: later calls say so too.
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = broker.EnsureKV(short, deaf, jetstream.KeyValueConfig{Bucket: "EXISTING"})
	if !errors.Is(err, broker.ErrDenied) || !strings.Contains(err.Error(), "inbox") {
		t.Fatalf("second call: %v", err)
	}
}

// streams creates a stream for each name, on subjects "<lowercase name>.>".
func (b *testBundle) streams(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := broker.Ensure(ctx(t), b.admin, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// SetReplicas touches only Custos streams; on a single server it leaves R1 as it is and refuses
// more copies than there are servers, naming the stream; 0 replicas is refused outright. (The
// three-node case runs in tests/cluster.)
func TestSetReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.streams(t, "CUSTOS_X", "OTHER")
	if _, err := broker.EnsureKV(ctx(t), b.admin, jetstream.KeyValueConfig{Bucket: "CUSTOS_KV"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"CUSTOS_X": true, "KV_CUSTOS_KV": true, "OBJ_CUSTOS_U": true, "OTHER": false, "KV_OTHER": false} {
		if broker.Owned(name) != want {
			t.Errorf("Owned(%s) = %v", name, !want)
		}
	}
	if changed, err := broker.SetReplicas(ctx(t), b.admin, 1); err != nil || len(changed) != 0 {
		t.Errorf("SetReplicas(1) on R1 streams = %v, %v; want nothing changed", changed, err)
	}
	changed, err := broker.SetReplicas(ctx(t), b.admin, 3)
	if err == nil || len(changed) != 0 || !strings.Contains(err.Error(), "CUSTOS_") {
		t.Errorf("SetReplicas(3) on one server = %v, %v; want an error naming a Custos stream", changed, err)
	}
	if _, err := broker.SetReplicas(ctx(t), b.admin, 0); err == nil {
		t.Error("SetReplicas(0) accepted")
	}
	s, err := b.admin.Stream(ctx(t), "OTHER")
	if err != nil || s.CachedInfo().Config.Replicas > 1 {
		t.Errorf("a stream that is not Custos's was changed: %v", err)
	}
}

// On one server every Custos stream is one current copy: waiting for one returns at once;
// waiting for three ends with the caller's deadline, naming the Custos streams short of them
// (and no other), after reporting them as progress.
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.streams(t, "CUSTOS_X", "OTHER")
	if err := broker.WaitReplicas(ctx(t), b.admin, 1, nil); err != nil {
		t.Fatalf("WaitReplicas(1) on one server: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx(t), 600*time.Millisecond)
	defer cancel()
	var reported [][]string
	err := broker.WaitReplicas(wctx, b.admin, 3, func(short []string) { reported = append(reported, short) })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "CUSTOS_X") || strings.Contains(err.Error(), "OTHER") {
		t.Fatalf("WaitReplicas(3) on one server = %v; want the deadline, naming CUSTOS_X only", err)
	}
	if len(reported) < 2 || !slices.Equal(reported[0], []string{"CUSTOS_X"}) {
		t.Fatalf("progress reported %v; want CUSTOS_X at every check, at least twice", reported)
	}

	// A credential that may not list streams never passes for done: the wait ends with the
	// deadline and the listing's error, and reports no progress it cannot know.
	rctx, rcancel := context.WithTimeout(ctx(t), 600*time.Millisecond)
	defer rcancel()
	reported = nil
	err = broker.WaitReplicas(rctx, b.reader, 1, func(short []string) { reported = append(reported, short) })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "list streams") || len(reported) != 0 {
		t.Fatalf("WaitReplicas without the right to list streams = %v (progress %v); want the deadline and the listing error", err, reported)
	}
}
