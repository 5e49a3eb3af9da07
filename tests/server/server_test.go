// Package server runs `custos server` as a real process: killed with SIGKILL in the middle of a
// stream of events and started again, it loses no acknowledged event; the CLI finds it with no
// configuration; its status page renders in headless Chromium and shows a class without a
// backup as breached.
package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

type server struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited; err is then set
	err  error
}

// startServer runs `custos server` in work (state in work/.custos) and waits until /healthz
// answers 200.
func startServer(t *testing.T, bin, work, natsAddr, admin string, n int) *server {
	t.Helper()
	logf, err := os.Create(filepath.Join(work, fmt.Sprintf("server-%d.log", n)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "--nats", natsAddr, "--admin", admin)
	cmd.Dir, cmd.Stdout, cmd.Stderr = work, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() { s.cmd.Process.Kill(); <-s.done })
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("server exited at start: %v\n%s", s.err, b)
		default:
		}
		if r, err := http.Get("http://" + admin + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return s
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("server not healthy within 2 minutes")
	return nil
}

func TestServerKilledAndRestartedLosesNothing(t *testing.T) {
	bin, err := harness.CLIBinary()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	natsAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	srv := startServer(t, bin, work, natsAddr, admin, 1)

	nc, err := nats.Connect("nats://"+natsAddr, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(js, "urn:test:server")
	if err != nil {
		t.Fatal(err)
	}
	// Publish until the server is killed; an event counts once the broker acknowledged it.
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[string][]byte{} // customer/key -> bytes
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, key := fmt.Sprintf("cust-%d", i%20), fmt.Sprintf("order-%d", i)
			data := []byte(fmt.Sprintf(`{"order":%d,"customer":%q}`, i, c))
			_, err := p.PublishPostTransaction(ctx, &custosv1.PostTransaction{
				Meta:   &custosv1.Meta{EventId: fmt.Sprintf("ev-%d", i), Time: timestamppb.Now(), Tenant: "shop", CustomerId: c, DataClass: "critical"},
				Record: &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: data}},
			})
			if err == nil {
				mu.Lock()
				acked[c+"/"+key] = data
				mu.Unlock()
			}
		}
	}()
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 150 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-srv.done
	close(stop)
	<-published
	mu.Lock()
	t.Logf("%d events acknowledged before SIGKILL", len(acked))
	mu.Unlock()

	startServer(t, bin, work, natsAddr, admin, 2)
	if err := waitSettled(ctx, js, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	// The CLI finds the server's configuration on its own (.custos/custos.yaml).
	out := filepath.Join(work, "restored")
	cmd := exec.Command(bin, "restore", "--all", "--out", out)
	cmd.Dir = work
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, b)
	}
	missing := 0
	for ck, want := range acked {
		c, key, _ := strings.Cut(ck, "/")
		got, err := os.ReadFile(restore.Path(out, "shop", c, key))
		if err != nil || string(got) != string(want) {
			missing++
			if missing <= 5 {
				t.Errorf("%s: restored %q (%v), want %q", ck, got, err, want)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged events not restored", missing, len(acked))
	}

	// The status page: critical was backed up just now, important never (breached).
	dom := harness.ChromiumDOM(t, "http://"+admin+"/")
	for _, want := range []string{`<tr class="ok" data-class="critical">`, `<tr class="breached" data-class="important">`, "BREACHED",
		"<td>fs:primary</td>", "<td>fs:secondary</td>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page lacks %q:\n%s", want, dom)
		}
	}
}

// waitSettled waits until the workers' consumer has nothing pending or unacknowledged.
func waitSettled(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := js.Consumer(ctx, event.StreamName, "custos-workers")
		if err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("events not settled within %v", timeout)
}
