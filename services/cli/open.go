package main

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/node"
)

// brokerWait bounds how long a command waits for a broker that cannot answer yet: a cluster
// that just lost a node elects new leaders for its streams within seconds, and a restore
// started meanwhile should wait for them rather than fail on "no responders".
var brokerWait = time.Minute

// open opens what cfg names as the client name, trying again while the broker is unavailable
// (node.StartWhenAvailable), for at most brokerWait. Any other error (a wrong key file, a
// refused permission) is returned at once.
func open(ctx context.Context, cfg *config.Config, name string, opts ...config.OpenOption) (*config.Parts, error) {
	log := logger()
	wait, cancel := context.WithTimeout(ctx, brokerWait)
	defer cancel()
	// The parts outlive the wait: they are opened under ctx, not under wait.
	parts, err := node.StartWhenAvailable(wait, log, name, func(context.Context) (*config.Parts, error) {
		return cfg.Open(ctx, name, log, opts...)
	})
	if err != nil && wait.Err() != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w (the broker did not answer for %s)", err, brokerWait)
	}
	return parts, err
}
