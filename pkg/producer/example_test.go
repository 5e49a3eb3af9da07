package producer_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// An application service publishes a post-transaction event after committing an order.
func Example() {
	js, stop := exampleJetStream()
	defer stop()
	ctx := context.Background()

	// Once per deployment (any service may do it; it is idempotent).
	if err := event.EnsureStreams(ctx, js, event.StreamsConfig{}); err != nil {
		panic(err)
	}

	p, err := producer.New(js, "//shop.example.com/orders",
		producer.WithLimits(event.Limits{Classes: []string{"critical", "important", "non_essential"}}))
	if err != nil {
		panic(err)
	}
	msg := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{Tenant: "acme", CustomerId: "c-1001", DataClass: "critical"},
		Record: &custosv1.Record{
			Key:         "orders/42",
			ContentType: "application/json",
			Source:      &custosv1.Record_Inline{Inline: []byte(`{"total":42}`)},
		},
		TransactionId: "tx-42",
	}
	// ctx would normally carry the request's span: the event joins its trace.
	ack, err := p.PublishPostTransaction(ctx, msg)
	fmt.Println(ack.Stream, ack.Sequence, ack.Duplicate, err)

	// Publishing the same message again (e.g. after a timeout) reuses its event id: de-duplicated.
	ack, err = p.PublishPostTransaction(ctx, msg)
	fmt.Println(ack.Stream, ack.Sequence, ack.Duplicate, err)

	// Invalid events are refused before anything is sent.
	msg.Meta.DataClass = "gold"
	msg.Meta.EventId = ""
	_, err = p.PublishPostTransaction(ctx, msg)
	fmt.Println(err)
	// Output:
	// CUSTOS_EVENTS 1 false <nil>
	// CUSTOS_EVENTS 1 true <nil>
	// producer: invalid event: post_transaction: unknown data class: meta.data_class "gold" (the policy defines critical, important, non_essential)
}

// A high-rate producer publishes without waiting for each ack, then flushes.
func ExampleProducer_PublishAsync() {
	js, stop := exampleJetStream()
	defer stop()
	ctx := context.Background()
	if err := event.EnsureStreams(ctx, js, event.StreamsConfig{}); err != nil {
		panic(err)
	}
	p, err := producer.New(js, "//shop.example.com/orders", producer.WithContentType(event.ContentTypeJSON))
	if err != nil {
		panic(err)
	}
	for i := range 100 {
		_, err := p.PublishPostTransactionAsync(ctx, &custosv1.PostTransaction{
			Meta:   &custosv1.Meta{Tenant: "acme", CustomerId: fmt.Sprintf("c-%d", i), DataClass: "critical"},
			Record: &custosv1.Record{Key: "orders/1", Source: &custosv1.Record_Inline{Inline: []byte("{}")}},
		})
		if err != nil {
			panic(err) // invalid event; nothing was sent
		}
	}
	fmt.Println(p.Flush(ctx), p.Pending())
	// Output: <nil> 0
}

// exampleJetStream starts an embedded JetStream server for the examples.
func exampleJetStream() (jetstream.JetStream, func()) {
	dir, err := os.MkdirTemp("", "custos-example-")
	if err != nil {
		panic(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		panic("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	return js, func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}
