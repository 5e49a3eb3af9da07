package producer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// benchProducer returns a producer on a fresh embedded server with the event streams.
func benchProducer(b *testing.B) *producer.Producer {
	b.Helper()
	srv := natstest.Start(b)
	if err := event.EnsureStreams(context.Background(), srv.JS, event.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	p, err := producer.New(srv.JS, source)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPublishAsync measures PublishAsync+Flush of small post-transaction events against an
// embedded server (protobuf, no tracing).
func BenchmarkPublishAsync(b *testing.B) {
	ctx := context.Background()
	p := benchProducer(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.PublishPostTransactionAsync(ctx, postTransaction("c-1")); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublish measures synchronous publishes (one round trip each).
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	p := benchProducer(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.PublishPostTransaction(ctx, postTransaction("c-1")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishAsyncRecord10KiB publishes ~10 KiB JSON records, as the peer bench does: the
// SDK compresses each and batches them.
func BenchmarkPublishAsyncRecord10KiB(b *testing.B) {
	ctx := context.Background()
	p := benchProducer(b)
	r := rand.New(rand.NewPCG(1, 2))
	var recs [][]byte
	for range 64 {
		var rec []byte
		for len(rec) < 10<<10 {
			rec = fmt.Appendf(rec, `{"order":"ORD-%09d","sku":"SKU-%06d","qty":%d,"status":%q},`,
				r.IntN(1e9), r.IntN(1e6), r.IntN(9)+1, []string{"paid", "shipped", "open"}[r.IntN(3)])
		}
		recs = append(recs, rec)
	}
	b.SetBytes(10 << 10)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ev := postTransaction(fmt.Sprintf("c-%d", i%100))
		ev.Record.Source = &custosv1.Record_Inline{Inline: recs[i%len(recs)]}
		if _, err := p.PublishPostTransactionAsync(ctx, ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}
