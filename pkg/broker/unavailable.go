package broker

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Unavailable reports whether err means the broker could not answer now, as opposed to an
// answer that will not change: no server reachable, the connection lost or reconnecting, a
// request that timed out or found no responder (a stream or consumer electing its leader), or
// JetStream reporting itself unavailable (503). A service starting against a cluster that is
// still forming, or losing a node, sees these; waiting and trying again is the remedy. A
// denial (ErrDenied), a missing stream or a settings mismatch is not unavailability.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, ErrDenied) {
		return false
	}
	var apiErr *jetstream.APIError
	// A key-value watcher subscribes through the client's older JetStream API, whose errors
	// have their own type: a 503 there is the same unavailability.
	var legacyErr *nats.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503
	case errors.As(err, &legacyErr):
		return legacyErr.Code == 503
	}
	return false
}
