package repair_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// What waits for repair is logged once per change, with counts, not at every pass.
func TestWaitingLoggedOncePerChange(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	q, err := repair.OpenQueue(ctx, ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	r, err := repair.New(repair.Config{Queue: q, Index: noIndex{}, Targets: []target.Target{mem.New()},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Entries for a target this repairer does not have: they wait.
	m := repair.Missing{Pack: "p1", Class: "critical", Target: "s3:gone", Since: time.Now()}
	for _, e := range []repair.Missing{m, {Pack: "p2", Class: "critical", Target: "s3:gone", Since: time.Now()}} {
		if err := q.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := r.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), `msg="replicas wait for repair" pending=2 targets="s3:gone=2"`); n != 1 {
		t.Fatalf("%d summaries over 3 passes, want 1:\n%s", n, logs.String())
	}
	if err := q.Done(ctx, m); err != nil {
		t.Fatal(err)
	}
	r.RunOnce(ctx)
	if !strings.Contains(logs.String(), `pending=1 targets="s3:gone=1"`) {
		t.Fatalf("no summary after the change:\n%s", logs.String())
	}
}
