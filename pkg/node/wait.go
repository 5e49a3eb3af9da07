package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/custos-dev/custos/pkg/broker"
)

// Pauses between start attempts while the broker is unavailable: short at first (a cluster
// electing its leaders answers within seconds), then at most startBackoffMax apart.
const (
	startBackoff    = 500 * time.Millisecond
	startBackoffMax = 15 * time.Second
)

// StartWhenAvailable calls start until it succeeds, returns an error that is not the broker
// being unavailable (broker.Unavailable: a wrong key file, a refused permission, a bad
// configuration), or ctx ends. Each failed attempt is logged with its error and the pause
// before the next. A service started before its broker, or while a cluster loses a node or
// elects leaders, thus waits for it instead of exiting; start must undo its partial work when
// it fails, as StartWorker and StartScheduler do.
func StartWhenAvailable[T any](ctx context.Context, log *slog.Logger, what string, start func(context.Context) (T, error)) (T, error) {
	delay := startBackoff
	for attempt := 1; ; attempt++ {
		v, err := start(ctx)
		if err == nil || !broker.Unavailable(err) || ctx.Err() != nil {
			return v, err
		}
		log.Warn("the broker is unavailable; starting again after a pause", "what", what, "attempt", attempt,
			"pause", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return v, err
		}
		delay = min(2*delay, startBackoffMax)
	}
}
