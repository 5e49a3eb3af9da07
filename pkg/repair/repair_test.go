package repair_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

type noIndex struct{}

func (noIndex) AddTarget(context.Context, string, string) error { return nil }

func TestQueueRoundTrip(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	q, err := repair.OpenQueue(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := q.List(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty queue: %v %v", got, err)
	}
	now := time.Now().UTC()
	a := repair.Missing{Pack: "p2", Target: "s3:offsite", Since: now.Add(time.Second)}
	b := repair.Missing{Pack: "p1", Target: "fs:local", Since: now}
	for _, m := range []repair.Missing{a, b, a} { // recording twice replaces
		if err := q.Add(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	got, err := q.List(ctx)
	if err != nil || len(got) != 2 || got[0].Pack != "p1" || got[1].Pack != "p2" {
		t.Fatalf("List = %+v, %v; want p1 then p2", got, err)
	}
	if err := q.Done(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(ctx, b); err != nil {
		t.Fatalf("Done twice: %v", err)
	}
	if got, _ := q.List(ctx); len(got) != 1 || got[0].Pack != "p2" {
		t.Fatalf("after Done: %+v", got)
	}
}

func TestStartStop(t *testing.T) {
	ns := natstest.Start(t)
	q, err := repair.OpenQueue(context.Background(), ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repair.New(repair.Config{Queue: q, Index: noIndex{}, Targets: []target.Target{mem.New()}, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	for range 2 {
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for range 2 {
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := repair.New(repair.Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
}
