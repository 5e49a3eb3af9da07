package main

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/config"
)

// brokerWait bounds how long a command waits for a broker that cannot answer yet: a cluster
// that just lost a node elects new leaders for its streams within seconds, and a restore
// started meanwhile should wait for them rather than fail on "no responders".
var brokerWait = time.Minute

// open opens what cfg names as the client name, trying again with growing pauses while the
// broker is unavailable (broker.Unavailable), for at most brokerWait. Any other error (a wrong
// key file, a refused permission) is returned at once.
func open(ctx context.Context, cfg *config.Config, name string) (*config.Parts, error) {
	log := logger()
	deadline := time.Now().Add(brokerWait)
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		parts, err := cfg.Open(ctx, name, log)
		if err == nil || !broker.Unavailable(err) || ctx.Err() != nil {
			return parts, err
		}
		if time.Now().Add(delay).After(deadline) {
			return nil, fmt.Errorf("%w (the broker did not answer for %s)", err, brokerWait)
		}
		log.Warn("the broker is unavailable; trying again", "attempt", attempt, "pause", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, err
		}
		delay = min(2*delay, 5*time.Second)
	}
}
