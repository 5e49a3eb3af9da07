package worker

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/pkg/event"
)

// A bad event so close to the broker's max_payload that its copy with the dead-letter headers
// does not fit is still dead-lettered (without its body, saying where the body is), not handed
// back forever.
func TestDeadLetterOfAnEventAtMaxPayload(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	good, err := event.New(postTx("near-max", "c1", "critical", "k", []byte("ok")), "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	subj, hdr, _, err := event.Encode(good, event.ContentTypeJSON)
	if err != nil {
		t.Fatal(err)
	}
	hdrSize := 0
	for k, vs := range hdr {
		for _, v := range vs {
			hdrSize += len(k) + len(v) + 4
		}
	}
	// Malformed JSON filling the message to a little under max_payload.
	room := int(b.ns.Conn.MaxPayload()) - hdrSize - 64
	data := append([]byte(`{"meta": {`), bytes.Repeat([]byte(" "), room-10)...)
	if _, err := b.ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr, Data: data}); err != nil {
		t.Fatalf("publish an event just under max_payload: %v", err)
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	m := dl[0]
	if !strings.Contains(m.Header.Get(HeaderDLQReason), "malformed") {
		t.Errorf("reason %q", m.Header.Get(HeaderDLQReason))
	}
	body := m.Header.Get(HeaderDLQBody)
	if len(m.Data) != 0 || !strings.HasPrefix(body, "omitted:") || !strings.Contains(body, event.StreamName) {
		t.Errorf("dead letter holds %d body bytes and %s %q; want none, with where the body is", len(m.Data), HeaderDLQBody, body)
	}
	if m.Header.Get(HeaderDLQSeq) == "" {
		t.Error("dead letter does not name the original sequence")
	}
}
