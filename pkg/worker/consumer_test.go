package worker

import (
	"context"
	"errors"
	"testing"
	"time"

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
