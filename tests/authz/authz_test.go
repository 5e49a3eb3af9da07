// Package authz runs the whole pipeline with the broker's authorization on (one NKey user per
// role, package natsauth) and checks that each role can do its work and nothing more: the
// attempts the least-privilege design forbids fail with a permission error and lose nothing.
package authz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/natsauth"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

const tenant = "shop"

// connect opens a connection as role and records the permission errors the server reports.
func connect(t *testing.T, stack *harness.Stack, r natsauth.Role) (*nats.Conn, jetstream.JetStream, func() []string) {
	t.Helper()
	opt, err := natsauth.ConnectOption(filepath.Join(stack.Dir, "auth", string(r)+natsauth.SeedExt))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var errs []string
	nc, err := nats.Connect(stack.NATS.URL(), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		errs = append(errs, err.Error())
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), errs...) }
}

func TestRolesAreEnforcedByTheBroker(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx := context.Background()
	stack, err := harness.Start(dir, harness.Options{Targets: 2, Auth: &natsauth.Options{ReserveDeletion: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()

	// Only the admin makes streams and buckets.
	if out, err := stack.CLIAs(natsauth.Admin, "setup"); err != nil || !strings.Contains(out, "setup done") {
		t.Fatalf("custos setup as admin: %v %s", err, out)
	}
	w, err := stack.StartWorker(bin, "w1") // the config file connects as the worker
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()

	// The producer publishes its events.
	pnc, pjs, perrs := connect(t, stack, natsauth.Producer)
	p, err := producer.New(pjs, "urn:test:authz", producer.WithRetry(1, 10*time.Millisecond, 10*time.Millisecond),
		producer.WithAttemptTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		c := fmt.Sprintf("cust-%d", i%3)
		ev := &custosv1.PostTransaction{
			Meta:   &custosv1.Meta{Time: timestamppb.Now(), Tenant: tenant, CustomerId: c, DataClass: "critical"},
			Record: &custosv1.Record{Key: fmt.Sprintf("k%d", i), Source: &custosv1.Record_Inline{Inline: []byte(fmt.Sprintf("data %d", i))}},
		}
		if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
			t.Fatalf("producer publishing a post-transaction: %v", err)
		}
	}
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		b, _ := os.ReadFile(w.Log)
		t.Fatalf("%v\n%s", err, b)
	}
	keysBefore := liveKeys(t, stack)
	if len(keysBefore) < 3 {
		t.Fatalf("%d live keys, want the 3 customers'", len(keysBefore))
	}

	// The producer may not request an erasure when the policy reserves it.
	del := &custosv1.DeletionRequest{Meta: &custosv1.Meta{Time: timestamppb.Now(), Tenant: tenant, CustomerId: "cust-0"}, RequestedBy: "app"}
	if _, err := p.PublishDeletionRequest(ctx, del); err == nil {
		t.Fatal("a producer credential published a reserved deletion request")
	}
	pnc.Flush()
	if !anyContains(perrs(), "permissions violation", event.TypeDeletionRequest.Subject()) {
		t.Fatalf("no permission error for the deletion request; connection errors: %v", perrs())
	}

	// Neither the producer nor the worker may purge the key store or delete a stream.
	wnc, _, _ := connect(t, stack, natsauth.Worker)
	for _, who := range []struct {
		name string
		nc   *nats.Conn
	}{{"producer", pnc}, {"worker", wnc}} {
		// The JetStream API requests an attacker would send.
		for _, api := range []string{"STREAM.PURGE." + broker.KVStream(keys.DefaultBucket), "STREAM.DELETE." + event.StreamName} {
			err := broker.Do(ctx, who.nc, api, func(ctx context.Context) error {
				_, err := who.nc.RequestWithContext(ctx, "$JS.API."+api, nil)
				return err
			})
			if !errors.Is(err, broker.ErrDenied) {
				t.Errorf("%s sending %s: %v, want a permission error", who.name, api, err)
			}
		}
	}
	// Nothing was lost.
	if after := liveKeys(t, stack); len(after) != len(keysBefore) {
		t.Fatalf("%d live keys after the attempts, %d before", len(after), len(keysBefore))
	}
	if _, err := stack.JS.Stream(ctx, event.StreamName); err != nil {
		t.Fatalf("events stream: %v", err)
	}

	// A foreign worker (another key file) with a valid worker credential refuses to join the
	// group; a worker with no credential cannot even connect.
	cfg, err := os.ReadFile(stack.Config)
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "custos-foreign.yaml")
	if err := os.WriteFile(foreign, []byte(strings.Replace(string(cfg), "file: custos.key", "file: foreign.key", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	anonymous := filepath.Join(dir, "custos-anonymous.yaml")
	if err := os.WriteFile(anonymous, []byte(strings.Replace(string(cfg), "  seed_file: auth/worker.nk\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ config, want string }{
		// Refused by the targets' check of the key file, or by the consumer group's.
		{foreign, "not the one these backups were written with|other settings"},
		{anonymous, "Authorization Violation"},
	} {
		out, err := runWorker(bin, c.config)
		if err == nil || !regexp.MustCompile(c.want).MatchString(out) {
			t.Errorf("worker with %s: err = %v, output does not say %q:\n%s", filepath.Base(c.config), err, c.want, out)
		}
	}

	// The operator may request the erasure; the restorer restores; the auditor reads the log.
	if out, err := stack.CLIAs(natsauth.Operator, "erase", "request", "--tenant", tenant, "--customer", "cust-0", "--requested-by", "dpo"); err != nil {
		t.Fatalf("operator erase request: %v %s", err, out)
	}
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := stack.CLIAs(natsauth.Restorer, "restore", "--all", "--out", filepath.Join(dir, "restored"))
	if err != nil || !strings.Contains(out, "customers=2") || !strings.Contains(out, "erased_skipped=1") || !strings.Contains(out, "failures=0") {
		t.Fatalf("restore as restorer: %v\n%s", err, out)
	}
	if strings.Contains(out, "not recorded") {
		t.Errorf("the restorer's restore was not logged:\n%s", out)
	}
	// The log holds the erasure and the restorer's own restore entry.
	if out, err := stack.CLIAs(natsauth.Auditor, "audit"); err != nil || !strings.Contains(out, "erasure") || !strings.Contains(out, "restore") {
		t.Fatalf("audit as auditor: %v\n%s", err, out)
	}
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// runWorker runs a worker that must fail to start and returns its output.
func runWorker(bin, config string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := execCommand(ctx, bin, "--config", config, "--name", "intruder")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), nil // still running: it joined
	}
	return string(out), err
}

func liveKeys(t *testing.T, stack *harness.Stack) []string {
	t.Helper()
	kv, err := stack.JS.KeyValue(context.Background(), keys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	return out
}

func anyContains(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(strings.ToLower(l), strings.ToLower(p))
		}
		if ok {
			return true
		}
	}
	return false
}
