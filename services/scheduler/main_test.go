package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMain lets the test binary act as custos-scheduler when re-executed by a test.
func TestMain(m *testing.M) {
	if os.Getenv("CUSTOS_SCHEDULER_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestStartAndSIGTERM runs the scheduler process against an embedded nats-server, waits until it
// has started, sends SIGTERM and expects a clean exit.
func TestStartAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	cfg := filepath.Join(dir, "custos.yaml")
	body := fmt.Sprintf("nats:\n  url: %s\nkeys:\n  file: custos.key\ntargets:\n  - {name: primary, kind: fs, path: t}\nclasses:\n  critical: {targets: [primary]}\n", srv.ClientURL())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join("..", "..", "deploy", "policy.example.yaml")
	cmd := exec.Command(os.Args[0], "--config", cfg, "--policy", policy, "--name", "test-1", "--json-logs")
	cmd.Env = append(os.Environ(), "CUSTOS_SCHEDULER_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var logged []string
	wait := func(fragment string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("exited before logging %q:\n%s", fragment, strings.Join(logged, "\n"))
				}
				logged = append(logged, l)
				if strings.Contains(l, fragment) {
					return
				}
			case <-timeout:
				_ = cmd.Process.Kill()
				t.Fatalf("no %q in:\n%s", fragment, strings.Join(logged, "\n"))
			}
		}
	}
	wait(`"msg":"scheduler started"`)

	// The record bucket and the cursor exist.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), "CUSTOS_SCHEDULER")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := kv.Get(context.Background(), "cursor.acme") // written by the first pass
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor: %v", err)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait(`"msg":"scheduler exited"`)
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, strings.Join(logged, "\n"))
	}
	// The example policy's override is reported at start.
	if !strings.Contains(strings.Join(logged, "\n"), "override_321") {
		t.Errorf("policy warning not logged:\n%s", strings.Join(logged, "\n"))
	}
}
