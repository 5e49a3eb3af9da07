// Package outage stops a real cloud emulator in the middle of a run of real worker processes,
// brings it back, and checks that the replicas it missed are caught up with nothing lost.
package outage

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// startCloud starts one emulator kind with its data under dir.
type startCloud func(ctx context.Context, dir string) (*devstack.Cloud, error)

func TestCloudDownAndBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start startCloud
	}{
		{"s3", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartS3(ctx, dir, "custos-outage")
		}},
		{"gcs", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartGCS(ctx, dir, "custos-outage")
		}},
		{"azure", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartAzure(ctx, dir, "custos-outage")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testCloudDownAndBack(t, tc.start) })
	}
}

func testCloudDownAndBack(t *testing.T, start startCloud) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	cloud, err := start(ctx, filepath.Join(dir, "cloud"))
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Stop()
	for _, kv := range cloud.Env { // the test process restores from the cloud too
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	stack, err := harness.Start(dir, harness.Options{Targets: 2, Clouds: []*devstack.Cloud{cloud},
		MinReplicas: 2, ReplicaGrace: 300 * time.Millisecond, RepairInterval: 500 * time.Millisecond,
		PackMaxDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	w, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	defer func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", readLog(w.Log))
		}
	}()
	p, err := producer.New(stack.JS, "urn:test:outage")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			c, key := fmt.Sprintf("cust-%d", i%20), fmt.Sprintf("rec-%d", i%5)
			data := []byte(fmt.Sprintf(`{"event":%d}`, i))
			ev := &custosv1.PostTransaction{
				Meta: &custosv1.Meta{EventId: fmt.Sprintf("ev-%d", i), Time: timestamppb.Now(), Tenant: "t1",
					CustomerId: c, DataClass: "critical"},
				Record: &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: data}},
			}
			if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
				t.Fatal(err)
			}
			want[c+"/"+key] = data
			time.Sleep(2 * time.Millisecond) // a steady trickle: packs before, during and after the outage
		}
	}
	publish(0, 200)
	// Azurite keeps its metadata in memory and saves it every few seconds, so a SIGKILL loses
	// its last writes: let it save what it acknowledged before the outage starts. (Real
	// services and the other emulators are durable when they answer.)
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	cloud.Stop() // the outage, in the middle of the run
	publish(200, 400)
	// Events keep being acknowledged while the cloud is down: the local targets are enough.
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatalf("events stuck while one target was down: %v", err)
	}
	parts, _, err := stack.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer parts.Close()
	missing, err := parts.Repairs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) == 0 {
		t.Fatal("no replica recorded as missing during the outage")
	}
	t.Logf("%d packs missed the cloud during the outage", len(missing))

	// A worker restarted while the cloud is down starts (the class still reaches min_replicas
	// on the local targets) and keeps acknowledging events.
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	w, err = stack.StartWorker(bin, "worker-b")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	publish(400, 450)
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatalf("events stuck after a worker restarted with one target down: %v", err)
	}

	if err := cloud.Start(); err != nil { // back, same data directory and port
		t.Fatal(err)
	}
	publish(450, 500)
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		left, err := parts.Repairs.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d replicas still missing two minutes after the cloud came back", len(left))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every pack is in every target now, byte for byte, and the index says so.
	packs, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cloudTarget := parts.Targets[len(parts.Targets)-1]
	items := 0
	for _, pk := range packs {
		items += pk.Items
		if len(pk.Targets) != 3 {
			t.Fatalf("pack %s indexed in %v, want all three targets", pk.Pack, pk.Targets)
		}
		sum, err := hex.DecodeString(pk.SHA256)
		if err != nil || len(sum) != 32 {
			t.Fatalf("pack %s: bad checksum in the index", pk.Pack)
		}
		ok, err := replica.Verify(ctx, cloudTarget, pack.ObjectName(pk.Pack), pk.Size, [32]byte(sum))
		if err != nil || !ok {
			t.Fatalf("pack %s in the cloud: verified %v, err %v", pk.Pack, ok, err)
		}
	}
	if items < 500 {
		t.Fatalf("catalog holds %d items for 500 events", items)
	}
	// The cloud alone restores everything.
	out := t.TempDir()
	r := &restore.Restorer{Index: parts.Index, Targets: []target.Reader{cloudTarget}, Keys: parts.Keys, Pseudonyms: parts.KMS}
	rep, err := r.All(ctx, restore.Options{Out: out})
	if err != nil || !rep.OK() {
		t.Fatalf("restore from the cloud alone: %v %+v", err, rep)
	}
	for k, data := range want {
		c, key, _ := strings.Cut(k, "/")
		got, err := os.ReadFile(restore.Path(out, "t1", c, key))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("record %s lost or wrong after the outage (%v)", k, err)
		}
	}
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}
