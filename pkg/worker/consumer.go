package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
)

// ErrConsumerMismatch means the shared consumer exists with settings other than this worker's:
// another worker (or an older version) created it. Joining it silently would let the last worker
// to start rewrite everyone's settings, or let a foreign worker take events it cannot process.
var ErrConsumerMismatch = errors.New("worker: the shared consumer has other settings than this worker")

// metaFingerprint is the consumer metadata key holding the pseudonym-key fingerprint of the
// workers that share it: a worker with another key file must not take their events.
const metaFingerprint = "custos.pseudonym_key"

// joinAttempts and joinBackoff bound how long a starting worker waits for a slow broker (a
// cluster electing leaders, or busy) before it gives up on a step of its start.
const (
	joinAttempts = 6
	joinBackoff  = time.Second
)

// joinConsumer joins the shared consumer (joinConsumerOnce), trying again while the broker is
// unavailable (retryStart): creating a replicated consumer waits for its leader, which a loaded
// or recovering cluster may take longer to elect than one API request allows.
func (w *Worker) joinConsumer(ctx context.Context, stream string, want jetstream.ConsumerConfig) (cons jetstream.Consumer, err error) {
	err = w.retryStart(ctx, "joining the consumer "+want.Durable, func() error {
		cons, err = w.joinConsumerOnce(ctx, stream, want)
		return err
	})
	return cons, err
}

// retryStart runs a step of Start, trying again with growing pauses, up to joinAttempts times,
// while the broker is unavailable (broker.Unavailable). Any other error (a settings mismatch, a
// refused permission) is returned at once.
func (w *Worker) retryStart(ctx context.Context, what string, step func() error) error {
	delay := joinBackoff
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil || attempt == joinAttempts || ctx.Err() != nil || !broker.Unavailable(err) {
			return err
		}
		w.log.Warn(what+": the broker did not answer; trying again", "attempt", attempt, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(2*delay, 8*time.Second)
	}
}

// joinConsumerOnce creates the shared durable consumer, or joins it if it exists with the same
// settings. With update, it rewrites differing settings instead (a deliberate change of, say,
// ack_wait across the fleet); it never joins a consumer of workers with another key file.
func (w *Worker) joinConsumerOnce(ctx context.Context, stream string, want jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	want.Metadata = map[string]string{metaFingerprint: w.deps.Pseudonyms.Fingerprint()}
	for range 3 {
		cons, err := w.deps.JS.Consumer(ctx, stream, want.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = w.deps.JS.CreateConsumer(ctx, stream, want)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // another worker created it first: compare with its settings
			}
			return cons, err
		}
		if err != nil {
			return nil, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		have := info.Config
		if fp := have.Metadata[metaFingerprint]; fp != "" && fp != want.Metadata[metaFingerprint] {
			return nil, fmt.Errorf("%w: consumer %s is shared by workers with another key file (pseudonym-key fingerprint %s, this worker's is %s)",
				ErrConsumerMismatch, want.Durable, fp, want.Metadata[metaFingerprint])
		}
		diff := consumerDiff(have, want)
		if diff == "" && have.Metadata[metaFingerprint] != "" {
			return cons, nil
		}
		if diff != "" && !w.cfg.UpdateConsumer {
			return nil, fmt.Errorf("%w: consumer %s has %s; start every worker with the same settings, or one with update_consumer: true to change them",
				ErrConsumerMismatch, want.Durable, diff)
		}
		if diff != "" {
			w.log.Warn("rewriting the shared consumer's settings", "consumer", want.Durable, "was", diff)
		}
		return w.deps.JS.UpdateConsumer(ctx, stream, want)
	}
	return nil, fmt.Errorf("worker: consumer %s: creation kept conflicting", want.Durable)
}

// consumerDiff names the settings of have that differ from want, or returns "".
func consumerDiff(have, want jetstream.ConsumerConfig) string {
	var d string
	add := func(name string, a, b any) {
		if d != "" {
			d += ", "
		}
		d += fmt.Sprintf("%s %v (this worker: %v)", name, a, b)
	}
	if have.AckWait != want.AckWait {
		add("ack_wait", have.AckWait.Round(time.Millisecond), want.AckWait.Round(time.Millisecond))
	}
	if have.MaxDeliver != want.MaxDeliver {
		add("max_deliver", have.MaxDeliver, want.MaxDeliver)
	}
	if have.MaxAckPending != want.MaxAckPending {
		add("max_ack_pending", have.MaxAckPending, want.MaxAckPending)
	}
	if have.AckPolicy != want.AckPolicy {
		add("ack_policy", have.AckPolicy, want.AckPolicy)
	}
	if have.FilterSubject != want.FilterSubject {
		add("filter_subject", have.FilterSubject, want.FilterSubject)
	}
	return d
}
