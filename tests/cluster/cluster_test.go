// Package cluster runs Custos on a three-node JetStream cluster, the production shape:
// `custos setup --replicas 3` gives every Custos stream and bucket three copies, and a worker
// keeps backing up, losing nothing, when one of the three servers stops.
package cluster

import (
	"context"
	"fmt"
	"net/url"
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
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// startCluster runs three JetStream servers routed to each other on loopback.
func startCluster(t *testing.T, dir string) []*server.Server {
	t.Helper()
	cports := []int{harness.FreePort(t), harness.FreePort(t), harness.FreePort(t)}
	var routes []*url.URL
	for _, p := range cports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var srvs []*server.Server
	for i, cp := range cports {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "custos", Host: "127.0.0.1", Port: cp}, Routes: routes}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		srvs = append(srvs, s)
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatal("server not ready")
		}
	}
	return srvs
}

// serverOf returns the server holding the client connection named name, waiting up to 30 s
// for it to connect.
func serverOf(t *testing.T, srvs []*server.Server, name string) *server.Server {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, s := range srvs {
			cz, err := s.Connz(&server.ConnzOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cz.Conns {
				if c.Name == name {
					return s
				}
			}
		}
	}
	t.Fatalf("no server holds the connection %s", name)
	return nil
}

// started waits until the worker's log says it has started.
func started(t *testing.T, log string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), `"msg":"worker started"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// consumerState describes the workers' consumer for a failure message.
func consumerState(ctx context.Context, js jetstream.JetStream) string {
	c, err := js.Consumer(ctx, event.StreamName, "custos-workers")
	if err != nil {
		return err.Error()
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err.Error()
	}
	leader := ""
	if info.Cluster != nil {
		leader = info.Cluster.Leader
	}
	return fmt.Sprintf("pending %d, ack pending %d, redelivered %d, waiting pulls %d, leader %q",
		info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, leader)
}

// streamStates is, for a failure message, how each running server sees every Custos stream:
// its leader and each replica's state. A worker waiting on a stream that has no leader, or whose
// followers never caught up, shows here.
func streamStates(srvs []*server.Server) string {
	var b strings.Builder
	for _, s := range srvs {
		if !s.Running() {
			continue
		}
		jsz, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, RaftGroups: true})
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", s.Name(), err)
			continue
		}
		for _, acc := range jsz.AccountDetails {
			for _, st := range acc.Streams {
				if !broker.Owned(st.Name) {
					continue
				}
				fmt.Fprintf(&b, "%s sees %s (raft %s):", s.Name(), st.Name, st.RaftGroup)
				if st.Cluster != nil {
					fmt.Fprintf(&b, " leader %q", st.Cluster.Leader)
					for _, r := range st.Cluster.Replicas {
						fmt.Fprintf(&b, " [%s current=%v offline=%v lag=%d active=%s]", r.Name, r.Current, r.Offline, r.Lag, r.Active)
					}
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

func TestThreeReplicasSurviveANodeLoss(t *testing.T) { nodeLoss(t, false) }

// The node goes while the worker is still starting: it opens its buckets and watchers through
// the outage (waiting while the cluster answers "unavailable") and then backs up everything.
func TestThreeReplicasSurviveANodeLossDuringWorkerStart(t *testing.T) { nodeLoss(t, true) }

// nodeLoss runs a worker on a three-node cluster and stops the server it is connected to:
// once it has started and backed up a first batch, or (duringStart) as soon as it connects.
func nodeLoss(t *testing.T, duringStart bool) {
	dir := t.TempDir()
	srvs := startCluster(t, filepath.Join(dir, "nats"))
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The cluster answers JetStream requests once it has elected its meta leader.
	deadline := time.Now().Add(time.Minute)
	for _, err := js.AccountInfo(ctx); err != nil; _, err = js.AccountInfo(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	cfg := filepath.Join(dir, "custos.yaml")
	text := fmt.Sprintf(`nats:
  url: %s
keys:
  file: custos.key
  create: true
targets:
  - {name: t0, kind: fs, path: targets/t0}
  - {name: t1, kind: fs, path: targets/t1}
classes:
  critical: {targets: [t0, t1]}
  important: {targets: [t0, t1]}
  non_essential: {targets: [t0, t1]}
worker:
  pack_max_delay: 50ms
  spool_dir: spool
  drain_timeout: 20s
`, strings.Join(urls, ","))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cli, err := harness.CLIBinary()
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"--config", cfg}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("custos %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	setupOut := run("setup", "--replicas", "3")
	if !strings.Contains(setupOut, "every stream has 3 current replicas") {
		t.Fatalf("setup did not wait for the copies:\n%s", setupOut)
	}
	// On a new cluster every stream is created with its three copies; none is grown from one
	// (setup names each stream it changes).
	if strings.Contains(setupOut, ": 3 replicas\n") {
		t.Errorf("setup grew streams created with one replica:\n%s", setupOut)
	}
	// Setup run again without --replicas, as after an upgrade, leaves every stream's copies as
	// they are.
	run("setup")
	// Setup returns once the cluster has copied every stream: each has a leader and two
	// current followers, so the server stopped below may be any of them.
	n := 0
	for name := range js.StreamNames(ctx).Name() {
		if !broker.Owned(name) {
			continue
		}
		n++
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if r := info.Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas after setup --replicas 3 and a plain setup", name, r)
		}
		if info.Cluster == nil {
			t.Errorf("stream %s after setup: no cluster information", name)
			continue
		}
		current, followers := 0, []string{}
		for _, p := range info.Cluster.Replicas {
			followers = append(followers, fmt.Sprintf("%s current=%t offline=%t", p.Name, p.Current, p.Offline))
			if p.Current && !p.Offline {
				current++
			}
		}
		if info.Cluster.Leader == "" || current != 2 {
			t.Errorf("stream %s after setup: leader %q, followers %v; want a leader and 2 current followers", name, info.Cluster.Leader, followers)
		}
	}
	if n < 10 {
		t.Fatalf("only %d Custos streams after setup", n)
	}

	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "worker.log"))
	if err != nil {
		t.Fatal(err)
	}
	w := exec.Command(bin, "--config", cfg, "--name", "w1")
	w.Dir, w.Stdout, w.Stderr = dir, logf, logf
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Process.Kill(); w.Wait(); logf.Close() }()

	p, err := producer.New(js, "urn:test:cluster")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			c, key := fmt.Sprintf("cust-%d", i%5), fmt.Sprintf("order-%d", i)
			data := fmt.Sprintf(`{"order":%d}`, i)
			if _, err := p.PublishPostTransaction(ctx, &custosv1.PostTransaction{
				Meta:   &custosv1.Meta{EventId: fmt.Sprintf("ev-%d", i), Time: timestamppb.Now(), Tenant: "shop", CustomerId: c, DataClass: "critical"},
				Record: &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: []byte(data)}},
			}); err != nil {
				t.Fatal(err)
			}
			want[c+"/"+key] = data
		}
	}
	settled := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			c, err := js.Consumer(ctx, event.StreamName, "custos-workers")
			if err == nil {
				if info, err := c.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
					return
				}
			}
			if time.Now().After(deadline) {
				// The worker's goroutines (SIGQUIT) show where it waits.
				state := consumerState(ctx, js)
				w.Process.Signal(syscall.SIGQUIT) //nolint:errcheck // a diagnostic
				time.Sleep(2 * time.Second)
				b, _ := os.ReadFile(logf.Name())
				t.Fatalf("events not settled (consumer: %s):\nstreams:\n%s\nworker:\n%s", state, streamStates(srvs), b)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if duringStart {
		gone := serverOf(t, srvs, "w1")
		gone.Shutdown()
		b, _ := os.ReadFile(logf.Name())
		t.Logf("server stopped %s the worker had started", map[bool]string{true: "after", false: "before"}[strings.Contains(string(b), `"msg":"worker started"`)])
		gone.WaitForShutdown()
		publish(0, 40)
		settled()
		started(t, logf.Name())
	} else {
		publish(0, 20)
		settled()
		// The worker consumes events before it has started its other parts (tasks, erasures,
		// audit); the node goes once it runs them all.
		started(t, logf.Name())

		// The server the worker is connected to goes, so the worker reconnects and its pull
		// requests move; the other two still hold a majority of every stream.
		gone := serverOf(t, srvs, "w1")
		gone.Shutdown()
		gone.WaitForShutdown()
		publish(20, 40)
		settled()
	}

	out := filepath.Join(dir, "restored")
	run("restore", "--all", "--out", out)
	for ck, data := range want {
		c, key, _ := strings.Cut(ck, "/")
		got, err := os.ReadFile(restore.Path(out, "shop", c, key))
		if err != nil || string(got) != data {
			t.Errorf("%s: restored %q (%v), want %q", ck, got, err, data)
		}
	}
}
