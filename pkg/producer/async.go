package producer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Future is the outcome of one PublishAsync: done once the stream acked the event, or every
// attempt failed.
type Future struct {
	id   string
	done chan struct{}
	ack  *jetstream.PubAck
	err  error
}

// EventID is the event's id (meta.event_id, ce-id, Nats-Msg-Id).
func (f *Future) EventID() string { return f.id }

// Done is closed when the outcome is known.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result returns the ack or error; valid once Done is closed.
func (f *Future) Result() (*jetstream.PubAck, error) {
	select {
	case <-f.done:
		return f.ack, f.err
	default:
		return nil, fmt.Errorf("producer: result of event %s not known yet", f.id)
	}
}

// Wait blocks until the outcome is known or ctx ends, and returns it. It is the same as Publish's
// result: the ack (Duplicate set for a de-duplicated event), or an error wrapping ErrUnavailable
// or ErrRejected.
func (f *Future) Wait(ctx context.Context) (*jetstream.PubAck, error) {
	select {
	case <-f.done:
		return f.ack, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("producer: wait for event %s: %w", f.id, ctx.Err())
	}
}

// PublishPostTransactionAsync is PublishAsync for a post-transaction event.
func (p *Producer) PublishPostTransactionAsync(ctx context.Context, msg *custosv1.PostTransaction, opts ...PublishOption) (*Future, error) {
	return p.PublishAsync(ctx, msg, opts...)
}

// PublishAsync validates and sends msg without waiting for the stream's ack, and returns a
// Future for the outcome. Validation errors (ErrInvalidEvent) are returned at once and nothing is
// sent. Transient broker errors are retried in the background like Publish does. At most
// WithMaxPending events are in flight: PublishAsync blocks (until ctx ends) when that many are
// unresolved. ctx is the parent of the producer span; cancelling it after PublishAsync returned
// does not cancel the publish. Call Flush to wait for everything published so far. msg is read
// until its Future resolves (a batched event is encoded when its batch is sent), so do not change
// it, or messages it points to, before then.
func (p *Producer) PublishAsync(ctx context.Context, msg proto.Message, opts ...PublishOption) (*Future, error) {
	if pt, ok := p.batchable(msg, publishOpts(p, opts)); ok {
		f, err := p.enqueue(ctx, pt)
		if !errors.Is(err, errTooBigForBatch) {
			return f, err
		}
	}
	ev, m, err := p.prepare(msg, opts)
	if err != nil {
		return nil, err
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("producer: publish %s: %w", m.Subject, ctx.Err())
	}
	sctx, span := p.startSpan(context.WithoutCancel(ctx), ev, m.Subject, len(m.Data), m.Header)
	f := &Future{id: ev.ID(), done: make(chan struct{})}
	p.mu.Lock()
	p.pending[f] = struct{}{}
	p.mu.Unlock()

	jsf, err := p.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
	if err != nil && !transient(err) {
		p.resolve(f, span, nil, fmt.Errorf("%w: publish %s: %w", ErrRejected, m.Subject, err))
		return f, nil
	}
	go func() {
		ack, err := p.await(sctx, span, m, jsf)
		p.resolve(f, span, ack, err)
	}()
	return f, nil
}

// publishOpts applies one call's options over the producer's defaults.
func publishOpts(p *Producer, opts []PublishOption) publishOptions {
	po := publishOptions{contentType: p.o.contentType}
	for _, opt := range opts {
		opt.applyPublish(&po)
	}
	return po
}

// await returns the outcome of an async publish, falling back to synchronous retries on
// transient errors. jsf is nil when the async send itself failed transiently.
func (p *Producer) await(ctx context.Context, span trace.Span, m *nats.Msg, jsf jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	var err error
	if jsf != nil {
		t := time.NewTimer(p.o.attemptTimeout)
		select {
		case ack := <-jsf.Ok():
			t.Stop()
			return ack, nil
		case err = <-jsf.Err():
			t.Stop()
		case <-t.C:
			err = jetstream.ErrAsyncPublishTimeout
		}
		if !transient(err) {
			return nil, fmt.Errorf("%w: publish %s: %w", ErrRejected, m.Subject, err)
		}
		if p.o.attempts < 2 {
			return nil, fmt.Errorf("%w: publish %s: 1 attempt: %w", ErrUnavailable, m.Subject, err)
		}
		span.AddEvent("retry")
		time.Sleep(p.backoff(1))
	}
	first := 2
	if jsf == nil {
		first = 1
	}
	return p.publishWithRetry(ctx, span, m, first)
}

func (p *Producer) resolve(f *Future, span trace.Span, ack *jetstream.PubAck, err error) {
	f.ack, f.err = ack, err
	endSpan(span, ack, err)
	span.End()
	p.mu.Lock()
	delete(p.pending, f)
	if err != nil {
		p.failed++
		if p.firstErr == nil {
			p.firstErr = err
		}
	}
	p.mu.Unlock()
	close(f.done)
	<-p.sem
}

// Pending is the number of async publishes not yet resolved.
func (p *Producer) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Flush waits until every event published with PublishAsync before the call is acked or has
// failed, or ctx ends. It returns nil when every async publish resolved since the previous Flush
// succeeded, else an error counting the failures and wrapping the first one (ErrUnavailable or
// ErrRejected); the failed events' Futures say which they were.
func (p *Producer) Flush(ctx context.Context) error {
	p.flushBatches() // a batch still gathering events leaves now
	p.mu.Lock()
	futures := make([]*Future, 0, len(p.pending))
	for f := range p.pending {
		futures = append(futures, f)
	}
	p.mu.Unlock()

	for _, f := range futures {
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("producer: flush: %d events still pending: %w", p.Pending(), ctx.Err())
		}
	}
	p.mu.Lock()
	failed, first := p.failed, p.firstErr
	p.failed, p.firstErr = 0, nil
	p.mu.Unlock()
	if failed > 0 {
		return fmt.Errorf("producer: flush: %d events failed, first: %w", failed, first)
	}
	return nil
}
