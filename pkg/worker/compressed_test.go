package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Records the producer compressed are stored as they came and restore byte-identical; a record
// whose inline_zstd does not decompress, or decompresses past the inline limit, is dead-lettered
// once (no retry: the same bytes fail the same way), and the events stream keeps nothing.
func TestCompressedRecords(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 20 {
		c, key := fmt.Sprintf("cust-%d", i%4), fmt.Sprintf("rec-%d", i)
		data := []byte(strings.Repeat(fmt.Sprintf(`{"i":%d,"note":"compressible"},`, i), 60))
		if _, err := b.producer.PublishPostTransactionAsync(ctx, postTx(fmt.Sprintf("z-%d", i), c, "critical", key, data)); err != nil {
			t.Fatal(err)
		}
		want[c+"/"+key] = data
	}
	if err := b.producer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	good := enc.EncodeAll([]byte("hello"), nil)
	bad := map[string][]byte{
		"truncated": good[:len(good)-3],
		"bomb":      enc.EncodeAll(make([]byte, 4<<20), nil), // 4 MiB of zeros in a few hundred bytes
	}
	for name, z := range bad {
		msg := postTx("bad-"+name, "cust-0", "critical", "bad-"+name, nil)
		msg.Record.Source = &custosv1.Record_InlineZstd{InlineZstd: z}
		ev, err := event.New(msg, "urn:test")
		if err != nil {
			t.Fatal(err)
		}
		subj, hdr, data, err := event.Encode(ev, event.ContentTypeProtobuf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := b.ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bad))
	}
	for _, m := range dl {
		reason := m.Header.Get(HeaderDLQReason)
		if !strings.Contains(reason, "inline_zstd") || m.Header.Get(HeaderDLQDeliveries) != "1" {
			t.Errorf("dead letter: reason %q after %s deliveries", reason, m.Header.Get(HeaderDLQDeliveries))
		}
		if strings.Contains(reason, "cust-0") {
			t.Errorf("reason names the customer: %q", reason)
		}
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore: %+v", rep.Failures)
	}
	b.checkRestored(out, want)
	if n := b.eventsLeft(); n != 0 {
		t.Fatalf("the events stream still holds %d messages", n)
	}
}
