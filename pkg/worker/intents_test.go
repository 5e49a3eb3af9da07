package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/event"
)

// removeEvent deletes one event from the events stream, as the work-queue stream does when the
// event is acknowledged.
func (b *bundle) removeEvent(seq uint64) error {
	s, err := b.ns.JS.Stream(context.Background(), event.StreamName)
	if err != nil {
		return err
	}
	return s.DeleteMsg(context.Background(), seq)
}

// crashOnce returns a hook that, the first time it runs, removes event 1 from the stream and
// fails with what: a worker interrupted at that point, after that event left the stream.
func (b *bundle) crashOnce(what string) func(string) error {
	var fail atomic.Bool
	fail.Store(true)
	return func(string) error {
		if !fail.CompareAndSwap(true, false) {
			return nil
		}
		if err := b.removeEvent(1); err != nil {
			return err
		}
		return errors.New(what)
	}
}

// A worker killed after its pack was committed but between two acknowledgements leaves an intent
// whose pack is durable while some of its events are already gone from the stream. The
// redelivered rest is acknowledged against the committed pack: no dead letter, one pack.
func TestResumedIntentOfCommittedPackAcknowledges(t *testing.T) {
	b := setup(t, func(c *Config) { c.PackMaxDelay = 200 * time.Millisecond; c.AckWait = time.Second })
	b.cfg.testAfterIndex = b.crashOnce("simulated crash after the index, one event acknowledged")
	w := b.startWorker()
	want := b.publish(20, 4)
	b.waitSettled()
	if dl := b.dlq(); len(dl) != 0 {
		t.Fatalf("%d dead letters, want none: %s", len(dl), dl[0].Header.Get(HeaderDLQReason))
	}
	if st := w.Stats(); st.Redelivered == 0 {
		t.Fatalf("stats %+v: nothing was redelivered", st)
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, want)
}

// When an event of an interrupted, uncommitted pack is gone from the stream (removed by an
// operator), the pack can never be rebuilt: its other events are backed up again in a new pack
// instead of being dead-lettered.
func TestIntentWithAMissingEventIsAbandoned(t *testing.T) {
	b := setup(t, func(c *Config) { c.PackMaxDelay = 200 * time.Millisecond; c.AckWait = time.Second })
	b.cfg.testAfterIntent = b.crashOnce("simulated crash after the intent, before any write")
	w := b.startWorker()
	want := b.publish(20, 4)
	b.waitSettled()
	if dl := b.dlq(); len(dl) != 0 {
		t.Fatalf("%d dead letters, want none: %s", len(dl), dl[0].Header.Get(HeaderDLQReason))
	}
	if st := w.Stats(); st.Events != 19 {
		t.Fatalf("stats %+v, want the 19 remaining events backed up", st)
	}
	rep, out := b.restoreAll()
	if !rep.OK() {
		t.Fatalf("restore %+v", rep)
	}
	delete(want, "cust-0/rec-0") // event 1, removed
	b.checkRestored(out, want)
}
