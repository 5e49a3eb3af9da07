package main

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-dev/custos/tests/harness"
)

// sweepSection measures the event path under the worker settings that decide how the shared
// consumer is used: max_in_flight (events held at once; a pull asks for min(max_in_flight,
// 1024) messages, and max_ack_pending is far above both) and the pack age limit (how long a
// pack waits for more events). One line per setting, events per second until durable, so that
// the defaults are chosen on figures (docs/performance.md, "Stream and consumer settings").
// With batches (the producer's default) max_in_flight counts messages of ~200 events, hence
// the small values.
func sweepSection(ctx context.Context, bin string) error {
	payload := record(1024)
	for _, o := range []struct {
		inFlight int
		delay    time.Duration
	}{{16, 50 * time.Millisecond}, {64, 50 * time.Millisecond}, {256, 50 * time.Millisecond},
		{1024, 50 * time.Millisecond}, {4096, 50 * time.Millisecond}, {16384, 50 * time.Millisecond},
		{4096, 10 * time.Millisecond}, {4096, 100 * time.Millisecond}, {4096, 200 * time.Millisecond}} {
		opts := prodLike
		opts.MaxInFlight, opts.PackMaxDelay = o.inFlight, o.delay
		var rate float64
		var c eventCPU
		err := withWorker(ctx, bin, fmt.Sprintf("sweep-%d-%dms", o.inFlight, o.delay.Milliseconds()), opts, func(s *harness.Stack, w *harness.Worker) (err error) {
			rate, c, err = timedEventsCPU(ctx, s, w, *events, payload)
			return err
		})
		if err != nil {
			return fmt.Errorf("sweep max_in_flight %d, pack delay %v: %w", o.inFlight, o.delay, err)
		}
		name := fmt.Sprintf("inflight_%d_delay_%dms", o.inFlight, o.delay.Milliseconds())
		bench("sweep_e2e_events_per_s_"+name, rate, "events/s")
		bench("sweep_worker_cpu_us_per_event_"+name, c.worker, "us")
	}
	return nil
}
