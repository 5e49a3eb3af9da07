package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/keys"
)

// otherKeyFile reports another pseudonym-key fingerprint than the key file it wraps, as a
// worker started with another key file would.
type otherKeyFile struct{ *keys.LocalKMS }

func (otherKeyFile) Fingerprint() string { return "00000000deadbeef" }

// A worker joins the shared consumer only with the settings and key file of the workers already
// on it: the last worker to start never rewrites everyone's settings by accident, and a worker
// with another key file never takes their events.
func TestWorkerJoinsTheSharedConsumerOnlyWithTheSameSettings(t *testing.T) {
	b := setup(t)
	b.startWorker()
	b.startWorker() // same settings: joins

	start := func(cfg Config, ps keys.Pseudonymizer) error {
		w, err := New(Deps{JS: b.ns.JS, Keys: b.keys, Pseudonyms: ps, Index: b.index, Repairs: b.repairs}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = w.Start(context.Background())
		if err == nil {
			t.Cleanup(func() { w.Stop(context.Background()) })
		}
		return err
	}
	other := b.cfg
	other.AckWait = 7 * time.Second
	if err := start(other, b.kms); !errors.Is(err, ErrConsumerMismatch) {
		t.Fatalf("worker with another ack_wait: Start = %v, want ErrConsumerMismatch", err)
	}
	if got := b.consumerInfo().Config.AckWait; got != b.cfg.AckWait {
		t.Fatalf("consumer ack_wait = %v after a refused worker, want %v", got, b.cfg.AckWait)
	}
	if err := start(b.cfg, otherKeyFile{b.kms}); !errors.Is(err, ErrConsumerMismatch) {
		t.Fatalf("worker with another key file: Start = %v, want ErrConsumerMismatch", err)
	}
	// A deliberate change across the fleet.
	other.UpdateConsumer = true
	if err := start(other, b.kms); err != nil {
		t.Fatalf("worker with update_consumer: %v", err)
	}
	if got := b.consumerInfo().Config.AckWait; got != other.AckWait {
		t.Fatalf("consumer ack_wait = %v after update_consumer, want %v", got, other.AckWait)
	}
}

// flakyIntents is the real JetStream whose first OrderedConsumer calls fail with err, as a
// loaded cluster does when the intent stream's leader does not answer in time.
type flakyIntents struct {
	jetstream.JetStream
	fail  int32
	err   error
	calls atomic.Int32
}

func (f *flakyIntents) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	if f.calls.Add(1) <= f.fail {
		return nil, f.err
	}
	return f.JetStream.OrderedConsumer(ctx, stream, cfg)
}

// A starting worker whose request to follow the pack intents times out tries again and then
// backs up as usual; an error that waiting does not cure ends the start at once.
func TestStartRetriesFollowingIntents(t *testing.T) {
	b := setup(t)
	start := func(js jetstream.JetStream) (*Worker, error) {
		w, err := New(Deps{JS: js, Keys: b.keys, Pseudonyms: b.kms, Index: b.index, Repairs: b.repairs}, b.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(context.Background()); err != nil {
			return nil, err
		}
		t.Cleanup(func() { w.Stop(context.Background()) })
		return w, nil
	}
	refused := &flakyIntents{JetStream: b.ns.JS, fail: 1, err: errors.New("consumer settings refused")}
	if _, err := start(refused); err == nil || refused.calls.Load() != 1 {
		t.Fatalf("Start = %v after %d calls, want the refusal after 1", err, refused.calls.Load())
	}
	slow := &flakyIntents{JetStream: b.ns.JS, fail: 2, err: fmt.Errorf("create ordered consumer: %w", context.DeadlineExceeded)}
	if _, err := start(slow); err != nil {
		t.Fatalf("Start after two timeouts: %v", err)
	}
	if got := slow.calls.Load(); got != 3 {
		t.Fatalf("%d calls to follow the intents, want 3 (two timeouts, then success)", got)
	}
	want := b.publish(20, 4)
	b.waitSettled()
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, want)
}
