package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/pkg/config"
)

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A command started while the broker cannot answer (a cluster electing leaders, a server
// restarting) waits for it instead of failing at once.
func TestOpenWaitsForTheBroker(t *testing.T) {
	port := freePort(t)
	cfg, err := config.Load(writeConfig(t, fmt.Sprintf("nats://127.0.0.1:%d", port)))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(time.Second)
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
			StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
		if err != nil {
			t.Error(err)
			return
		}
		go srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	}()
	parts, err := open(context.Background(), cfg, "test")
	if err != nil {
		t.Fatalf("open while the broker starts: %v", err)
	}
	parts.Close()
}

// It waits for brokerWait at most, and says so.
func TestOpenGivesUp(t *testing.T) {
	defer func(d time.Duration) { brokerWait = d }(brokerWait)
	brokerWait = 2 * time.Second
	cfg, err := config.Load(writeConfig(t, fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = open(context.Background(), cfg, "test")
	if err == nil || !strings.Contains(err.Error(), "the broker did not answer for 2s") {
		t.Fatalf("open with no broker: %v, want it to give up after 2s", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("gave up after %s", took)
	}
}
