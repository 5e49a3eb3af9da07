package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/node"
)

// warnings counts the warnings logged through it.
type warnings struct {
	slog.Handler
	n *atomic.Int32
}

func (h warnings) Enabled(context.Context, slog.Level) bool { return true }
func (h warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
func (h warnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h warnings) WithGroup(string) slog.Handler      { return h }

// A worker started before its broker waits for it and starts once it is up, instead of exiting.
func TestWorkerWaitsForTheBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "custos.yaml")
	yaml := fmt.Sprintf(`nats: {url: "nats://127.0.0.1:%d"}
keys: {file: custos.key, create: true}
targets: [{name: a, kind: fs, path: data/a}]
classes: {critical: {targets: [a]}}
worker: {spool_dir: spool}
`, port)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var warned atomic.Int32
	log := slog.New(warnings{n: &warned})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type started struct {
		n   *node.Worker
		err error
	}
	done := make(chan started, 1)
	go func() {
		n, err := node.StartWhenAvailable(ctx, log, "worker", func(ctx context.Context) (*node.Worker, error) {
			return node.StartWorker(ctx, cfg, "w1", log)
		})
		done <- started{n, err}
	}()
	for warned.Load() < 2 {
		select {
		case s := <-done:
			t.Fatalf("the worker did not wait for the broker: %v", s.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	natstest.StartServer(t, filepath.Join(dir, "nats"), port)
	s := <-done
	if s.err != nil {
		t.Fatalf("worker start once the broker is up: %v", s.err)
	}
	if err := s.n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// An error that waiting does not cure ends the start at once.
func TestStartWhenAvailableReturnsOtherErrors(t *testing.T) {
	var warned atomic.Int32
	calls := 0
	bad := errors.New("the key file does not match the backups")
	_, err := node.StartWhenAvailable(t.Context(), slog.New(warnings{n: &warned}), "worker", func(context.Context) (int, error) {
		calls++
		return 0, bad
	})
	if !errors.Is(err, bad) || calls != 1 || warned.Load() != 0 {
		t.Fatalf("StartWhenAvailable = %v after %d calls and %d warnings, want the error after 1 call", err, calls, warned.Load())
	}
}
