// Package erasure checks that an erasure is complete wherever Custos wrote: after a deletion
// request, no file of any target (local disk and the S3 emulator's storage), of the broker's
// JetStream store, of the dead-letter stream or of the logs holds the customer's id or record
// bytes; a restore of the customer returns nothing and names the erasure's certificate, and the
// certificate verifies.
package erasure

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

const tenant = "shop"

func TestErasureLeavesNothingReadable(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx := context.Background()
	s3, err := devstack.StartS3(ctx, filepath.Join(dir, "s3"), "custos-erasure")
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Stop()
	stack, err := harness.Start(dir, harness.Options{Targets: 2, Clouds: []*devstack.Cloud{s3}})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	w, err := stack.StartWorker(bin, "w1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()

	// The customer's id and record bytes are distinctive so that a grep cannot miss them.
	gone := "cust-erin-5e7a1c"
	secret := []byte("ERIN-RECORD-9f4c2d1b-card-4111")
	p, err := producer.New(stack.JS, "urn:test:erasure")
	if err != nil {
		t.Fatal(err)
	}
	post := func(customer, key string, data []byte) *custosv1.PostTransaction {
		return &custosv1.PostTransaction{
			Meta:   &custosv1.Meta{Time: timestamppb.Now(), Tenant: tenant, CustomerId: customer, DataClass: "critical"},
			Record: &custosv1.Record{Key: key, ContentType: "application/json", Source: &custosv1.Record_Inline{Inline: data}},
		}
	}
	for i := range 20 {
		for _, c := range []string{gone, "cust-keep"} {
			data := append(append([]byte(nil), secret...), fmt.Sprintf(" %s %d", c, i)...)
			if _, err := p.PublishPostTransaction(ctx, post(c, fmt.Sprintf("orders/%d", i), data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A rejected event of the customer (unknown class): its dead letter holds the body.
	bad := post(gone, "orders/bad", secret)
	bad.Meta.DataClass, bad.Meta.EventId = "platinum", "bad-class-1"
	data, err := protojson.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	for k, v := range map[string]string{event.HeaderSpecVersion: "1.0", event.HeaderID: "bad-class-1", event.HeaderSource: "urn:test",
		event.HeaderType: event.TypePostTransaction.CEType(), event.HeaderTime: bad.Meta.Time.AsTime().Format(time.RFC3339Nano),
		event.HeaderContentType: event.ContentTypeJSON} {
		hdr.Set(k, v)
	}
	if _, err := stack.JS.PublishMsg(ctx, &nats.Msg{Subject: event.TypePostTransaction.Subject(), Header: hdr, Data: data}); err != nil {
		t.Fatal(err)
	}
	// A batch of events with a rejected entry of the customer (its class differs from the
	// batch's): that entry alone is dead-lettered, sealed under the customer's key.
	keepEntry, badEntry := post("cust-keep", "orders/batch", []byte("kept")), post(gone, "orders/bad-entry", secret)
	keepEntry.Meta.EventId, badEntry.Meta.EventId, badEntry.Meta.DataClass = "batch-keep-1", "bad-entry-1", "important"
	batch := &custosv1.PostTransactionBatch{
		Meta:   &custosv1.Meta{EventId: "batch-1", Time: timestamppb.Now(), Tenant: tenant, DataClass: "critical"},
		Events: []*custosv1.BatchedPostTransaction{{Event: keepEntry}, {Event: badEntry}},
	}
	bev, err := event.New(batch, "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	bsubj, bhdr, bdata, err := event.Encode(bev, event.ContentTypeProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stack.JS.PublishMsg(ctx, &nats.Msg{Subject: bsubj, Header: bhdr, Data: bdata}); err != nil {
		t.Fatal(err)
	}
	settle(t, stack, w)

	// Before the erasure the data is there and restorable.
	before := filepath.Join(dir, "restore-before")
	if out := cli(t, stack, "restore", "--tenant", tenant, "--customer", gone, "--out", before); !strings.Contains(out, "records=20") {
		t.Fatalf("restore before the erasure: %s", out)
	}
	if n := grep(t, before, secret); n == 0 {
		t.Fatal("the restore before the erasure does not hold the record bytes: the grep below would prove nothing")
	}
	os.RemoveAll(before)

	// The rejected event's body is sealed, and the operator can still open it while the customer
	// exists.
	badSeq := dlqSeq(t, stack, "bad-class-1")
	if body := cli(t, stack, "dlq", "show", badSeq); !strings.Contains(body, gone) { // the JSON body names the customer
		t.Fatalf("dlq show before the erasure: %q", body)
	}
	badEntrySeq := dlqSeq(t, stack, "bad-entry-1")
	if body := cli(t, stack, "dlq", "show", badEntrySeq); !strings.Contains(body, gone) || !strings.Contains(body, string(secret)) {
		t.Fatalf("dlq show %s (a batch entry) before the erasure: %q", badEntrySeq, body)
	}
	if list := cli(t, stack, "dlq"); !strings.Contains(list, "batch=batch-1#1") {
		t.Fatalf("custos dlq does not name the batch entry: %s", list)
	}

	cli(t, stack, "erase", "request", "--tenant", tenant, "--customer", gone, "--requested-by", "dpo@example.com", "--legal-basis", "gdpr_art17")
	settle(t, stack, w)
	// An event for the erased customer arriving later is not kept.
	if _, err := p.PublishPostTransaction(ctx, post(gone, "orders/late", secret)); err != nil {
		t.Fatal(err)
	}
	settle(t, stack, w)
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// The restore of the erased customer returns nothing and names the certificate.
	after := filepath.Join(dir, "restore-after")
	out := cli(t, stack, "restore", "--tenant", tenant, "--customer", gone, "--out", after)
	m := regexp.MustCompile(`ERASED: (p[0-9a-f]{32}) was erased \(certificate (er-[0-9a-f]+)\)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "records=0") {
		t.Fatalf("restore of the erased customer: %s", out)
	}
	status := cli(t, stack, "erase", "status", "--tenant", tenant, "--customer", gone)
	if !strings.Contains(status, "state=done") || !strings.Contains(status, "certificate "+m[2]+" signature OK") ||
		!strings.Contains(status, `"key": "destroyed"`) {
		t.Fatalf("erase status: %s", status)
	}
	if out, err := stack.CLI("dlq", "show", badSeq); err == nil {
		t.Fatalf("dlq show opened an erased customer's dead letter: %s", out)
	}
	if out, err := stack.CLI("dlq", "show", badEntrySeq); err == nil {
		t.Fatalf("dlq show opened an erased customer's dead-lettered batch entry: %s", out)
	}
	// The certificate is in the targets too and verifies with no broker.
	offline := cli(t, stack, "erase", "status", "--tenant", tenant, "--customer", gone, "--from-target", "t1")
	if !strings.Contains(offline, "certificate "+m[2]+" in fs:t1 signature OK") && !strings.Contains(offline, "certificate "+m[2]+" in t1 signature OK") {
		t.Fatalf("erase status --from-target: %s", offline)
	}
	// The other customer is untouched: its 20 records and the one of the batch.
	keep := filepath.Join(dir, "restore-keep")
	if out := cli(t, stack, "restore", "--tenant", tenant, "--customer", "cust-keep", "--out", keep); !strings.Contains(out, "records=21") {
		t.Fatalf("restore of the kept customer: %s", out)
	}

	// Nothing readable is left: targets, S3's storage, the JetStream store, the logs, and the
	// dead-letter stream read through the broker.
	stack.NC.Flush()
	for _, root := range []string{filepath.Join(dir, "targets"), filepath.Join(dir, "s3"), filepath.Join(dir, "nats"), filepath.Join(dir, "logs"), after} {
		for _, needle := range [][]byte{[]byte(gone), secret} {
			if n := grep(t, root, needle); n > 0 {
				t.Errorf("%d files under %s hold %q", n, root, needle)
			}
		}
	}
	dlq, err := stack.JS.Stream(ctx, event.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		all := append([]byte(fmt.Sprint(msg.Header)), msg.Data...)
		if bytes.Contains(all, []byte(gone)) || bytes.Contains(all, secret) {
			t.Errorf("dead letter %d holds the customer's id or data", seq)
		}
	}
	events, err := stack.JS.Stream(ctx, event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := events.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("the events stream still holds %d settled events (%v)", info.State.Msgs, err)
	}
}

func settle(t *testing.T, stack *harness.Stack, w *harness.Worker) {
	t.Helper()
	if err := stack.WaitSettled(context.Background(), time.Minute); err != nil {
		b, _ := os.ReadFile(w.Log)
		t.Fatalf("%v\nworker log:\n%s", err, b)
	}
}

func cli(t *testing.T, stack *harness.Stack, args ...string) string {
	t.Helper()
	out, err := stack.CLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// grep counts the files under root holding needle.
func grep(t *testing.T, root string, needle []byte) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			t.Logf("found %q in %s", needle, p)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dlqSeq returns the events-stream sequence of the dead letter of event id.
func dlqSeq(t *testing.T, stack *harness.Stack, id string) string {
	t.Helper()
	ctx := context.Background()
	s, err := stack.JS.Stream(ctx, event.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		if m, err := s.GetMsg(ctx, seq); err == nil && m.Header.Get(event.HeaderID) == id {
			if i := m.Header.Get(worker.HeaderDLQBatchIndex); i != "" { // an entry of a batch
				return m.Header.Get(worker.HeaderDLQSeq) + "-" + i
			}
			return m.Header.Get(worker.HeaderDLQSeq)
		}
	}
	t.Fatalf("no dead letter of %s", id)
	return ""
}
