package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
)

// A bad event so close to the broker's max_payload that its sealed copy with the dead-letter
// headers does not fit in one message is dead-lettered in parts, whole, not handed back forever
// and not cut: with work-queue retention the events stream keeps no copy once it is settled.
func TestDeadLetterOfAnEventAtMaxPayload(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	good, err := event.New(postTx("near-max", "c1", "critical", "k", []byte("ok")), "urn:test")
	if err != nil {
		t.Fatal(err)
	}
	subj, hdr, _, err := event.Encode(good, event.ContentTypeProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	// Random bytes (incompressible, not a protobuf) filling the message to just under
	// max_payload.
	room := int(b.ns.Conn.MaxPayload()) - event.MessageSize(hdr, nil) - 64
	data := make([]byte, room)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	data[0] = 0xff // never a valid protobuf field
	if _, err := b.ns.JS.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: hdr, Data: data}); err != nil {
		t.Fatalf("publish an event just under max_payload: %v", err)
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) < 2 {
		t.Fatalf("%d dead-letter messages, want the event split in parts", len(dl))
	}
	var parts []deadletter.Part
	for _, m := range dl {
		if !strings.Contains(m.Header.Get(HeaderDLQReason), "malformed") {
			t.Errorf("reason %q", m.Header.Get(HeaderDLQReason))
		}
		if m.Header.Get(HeaderDLQSeq) == "" {
			t.Error("dead letter does not name the original sequence")
		}
		parts = append(parts, deadletter.Part{Header: m.Header, Data: m.Data})
	}
	got, err := deadletter.Open(ctx, b.keys, parts)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reassembled dead letter: err = %v, same bytes = %v", err, bytes.Equal(got, data))
	}
	if _, err := deadletter.Open(ctx, b.keys, parts[1:]); err == nil {
		t.Fatal("a dead letter with a part missing opened")
	}
	if n := b.eventsLeft(); n != 0 {
		t.Fatalf("the events stream still holds %d messages after the event was settled", n)
	}
}

// eventsLeft is how many messages CUSTOS_EVENTS still holds.
func (b *bundle) eventsLeft() uint64 {
	b.t.Helper()
	s, err := b.ns.JS.Stream(context.Background(), event.StreamName)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	return info.State.Msgs
}
