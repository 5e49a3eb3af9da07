package event_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
)

func TestEnsureStreams(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Twice: idempotent.
	for range 2 {
		if err := event.EnsureStreams(ctx, srv.JS, event.StreamsConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, subjects string, maxAge time.Duration) {
		want := jetstream.LimitsPolicy
		if name == event.StreamName {
			want = jetstream.WorkQueuePolicy // settled events leave the broker
		}
		t.Helper()
		s, err := srv.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.Retention != want || c.Storage != jetstream.FileStorage ||
			c.Duplicates != 2*time.Minute || c.MaxAge != maxAge || len(c.Subjects) != 1 || c.Subjects[0] != subjects {
			t.Errorf("%s config = %+v", name, c)
		}
	}
	check(event.StreamName, "custos.v1.events.>", 7*24*time.Hour)
	check(event.DLQStreamName, "custos.v1.dlq.>", 30*24*time.Hour)

	// An existing stream is bound as it is, and updated by ApplyStreams only.
	if err := event.EnsureStreams(ctx, srv.JS, event.StreamsConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check(event.StreamName, "custos.v1.events.>", 7*24*time.Hour)
	if err := event.ApplyStreams(ctx, srv.JS, event.StreamsConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check(event.StreamName, "custos.v1.events.>", time.Hour)

	// Every event subject lands in CUSTOS_EVENTS, every DLQ subject in CUSTOS_DLQ.
	for _, typ := range event.Types {
		if ack, err := srv.JS.Publish(ctx, typ.Subject(), nil); err != nil || ack.Stream != event.StreamName {
			t.Errorf("publish %s: %v %v", typ.Subject(), ack, err)
		}
		if ack, err := srv.JS.Publish(ctx, typ.DLQSubject(), nil); err != nil || ack.Stream != event.DLQStreamName {
			t.Errorf("publish %s: %v %v", typ.DLQSubject(), ack, err)
		}
	}
}
