package producer_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Records from 1 KiB travel zstd-compressed (inline_zstd) and decompress to the caller's bytes;
// the caller's message keeps its inline bytes; smaller or incompressible records, and every
// record with WithCompression(0), travel as they are.
func TestPublishCompressesRecords(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	big := []byte(strings.Repeat(`{"sku":"A-1","qty":2,"price":"9.99"},`, 100))
	noise := make([]byte, 4096)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	zd, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zd.Close()
	stored := func(p *producer.Producer, data []byte) *custosv1.Record {
		t.Helper()
		msg := &custosv1.ManualRequest{
			Meta:        &custosv1.Meta{Tenant: "acme", CustomerId: "c-1", DataClass: "critical"},
			RequestedBy: "ops", Reason: "test",
			Records: []*custosv1.Record{{Key: "small", Source: &custosv1.Record_Inline{Inline: []byte("{}")}},
				{Key: "k", ContentType: "application/json", Source: &custosv1.Record_Inline{Inline: data}}},
		}
		orig := proto.Clone(msg)
		ack, err := p.PublishManualRequest(b.ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		orig.(*custosv1.ManualRequest).Meta = msg.Meta // filled in by the producer, as documented
		if !proto.Equal(msg, orig) {
			t.Fatal("the producer changed the caller's records")
		}
		raw := b.stored(t, ack.Sequence)
		ev, err := event.Decode(raw.Subject, raw.Header, raw.Data, event.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		got := ev.Msg.(*custosv1.ManualRequest)
		recs := got.GetRecords()
		if recs[0].GetInline() == nil {
			t.Fatal("a 2-byte record was compressed")
		}
		// Every other field travels as the caller set it: with the compressed record inflated
		// back, the event equals the caller's.
		inflated := proto.Clone(got).(*custosv1.ManualRequest)
		if z := recs[1].GetInlineZstd(); z != nil {
			plain, err := zd.DecodeAll(z, nil)
			if err != nil {
				t.Fatal(err)
			}
			inflated.Records[1].Source = &custosv1.Record_Inline{Inline: plain}
		}
		if !proto.Equal(inflated, msg) {
			t.Fatalf("the stored event differs from the caller's beyond compression:\n%v\n%v", inflated, msg)
		}
		return recs[1]
	}
	p := b.producer(t)
	r := stored(p, big)
	z := r.GetInlineZstd()
	if z == nil || len(z) >= len(big)/3 {
		t.Fatalf("a %d-byte JSON record travelled as %d compressed bytes (inline %d)", len(big), len(z), len(r.GetInline()))
	}
	if got, err := zd.DecodeAll(z, nil); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the compressed record does not decompress to the original: %v", err)
	}
	if r := stored(p, noise); r.GetInline() == nil {
		t.Fatal("an incompressible record was sent compressed")
	}
	if r := stored(b.producer(t, producer.WithCompression(0)), big); !bytes.Equal(r.GetInline(), big) {
		t.Fatal("WithCompression(0) still compressed")
	}
	// JSON events carry the compressed bytes as base64, and decode to the same record.
	r = stored(b.producer(t, producer.WithContentType(event.ContentTypeJSON)), big)
	if got, err := zd.DecodeAll(r.GetInlineZstd(), nil); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("a JSON event's compressed record: %v", err)
	}
}
