package producer_test

import (
	"context"
	"testing"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/producer"
)

// BenchmarkPublishAsync measures PublishAsync+Flush of small post-transaction events against an
// embedded server (protobuf, no tracing).
func BenchmarkPublishAsync(b *testing.B) {
	srv := natstest.Start(b)
	ctx := context.Background()
	if err := event.EnsureStreams(ctx, srv.JS, event.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	p, err := producer.New(srv.JS, source)
	if err != nil {
		b.Fatal(err)
	}
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
	srv := natstest.Start(b)
	ctx := context.Background()
	if err := event.EnsureStreams(ctx, srv.JS, event.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	p, err := producer.New(srv.JS, source)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.PublishPostTransaction(ctx, postTransaction("c-1")); err != nil {
			b.Fatal(err)
		}
	}
}
