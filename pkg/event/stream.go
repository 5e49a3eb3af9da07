package event

import (
	"context"
	"github.com/custos-dev/custos/pkg/broker"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults.
const (
	// DefaultMaxAge is how long CUSTOS_EVENTS keeps an event no worker has settled. With
	// work-queue retention an event leaves the stream once a worker acknowledges it (its data
	// is durable in the targets) or dead-letters it: the broker keeps no copy of a body that
	// the targets hold, and nothing of an erased customer (docs/design.md section 12).
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultDLQMaxAge is how long CUSTOS_DLQ keeps rejected events.
	DefaultDLQMaxAge = 30 * 24 * time.Hour
	// DuplicateWindow is the JetStream de-duplication window of CUSTOS_EVENTS: a message whose
	// Nats-Msg-Id (= ce-id) was seen within it is acknowledged as a duplicate and not stored.
	DuplicateWindow = 2 * time.Minute
)

// StreamsConfig tunes EnsureStreams. The zero value gives the defaults.
type StreamsConfig struct {
	// MaxAge of CUSTOS_EVENTS; 0 means DefaultMaxAge.
	MaxAge time.Duration
	// DLQMaxAge of CUSTOS_DLQ; 0 means DefaultDLQMaxAge.
	DLQMaxAge time.Duration
	// Replicas of both streams (1, 3 or 5). 0 creates a stream with 1 (single server) and leaves
	// an existing stream's as they are. Use 3 in a cluster.
	Replicas int
	// MaxBytes bounds each stream's storage; 0 means unlimited.
	MaxBytes int64
}

// EventsStreamConfig is the CUSTOS_EVENTS configuration EnsureStreams applies.
func (c StreamsConfig) EventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Custos trigger events (see docs/events.md)",
		Subjects:    []string{StreamSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      orDefault(c.MaxAge, DefaultMaxAge),
		MaxBytes:    orUnlimited(c.MaxBytes),
		MaxMsgs:     -1,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas(c.Replicas),
	}
}

// DLQStreamConfig is the CUSTOS_DLQ configuration EnsureStreams applies.
func (c StreamsConfig) DLQStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DLQStreamName,
		Description: "Custos events rejected by the worker; header Custos-Dlq-Reason says why",
		Subjects:    []string{DLQSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      orDefault(c.DLQMaxAge, DefaultDLQMaxAge),
		MaxBytes:    orUnlimited(c.MaxBytes),
		MaxMsgs:     -1,
		Duplicates:  DuplicateWindow,
		Replicas:    replicas(c.Replicas),
	}
}

// EnsureStreams binds the CUSTOS_EVENTS and CUSTOS_DLQ streams, creating them with cfg when
// they do not exist; an existing stream is left as it is (changing one is ApplyStreams', with
// an admin credential). It is idempotent and safe to run from every service at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	for _, sc := range []jetstream.StreamConfig{cfg.EventsStreamConfig(), cfg.DLQStreamConfig()} {
		if _, err := broker.Ensure(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}

// ApplyStreams creates the two streams or updates them to cfg (custos setup, as admin). A
// stream's retention cannot change in place: a CUSTOS_EVENTS made before work-queue retention
// keeps limits retention (and so keeps acknowledged bodies until MaxAge) until it is recreated.
// An existing stream keeps its replicas unless cfg.Replicas is set: running setup again, as
// after an upgrade, must not take a cluster's three copies down to one.
func ApplyStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	for _, sc := range []jetstream.StreamConfig{cfg.EventsStreamConfig(), cfg.DLQStreamConfig()} {
		if s, err := js.Stream(ctx, sc.Name); err == nil {
			have := s.CachedInfo().Config
			if have.Retention != sc.Retention {
				sc.Retention = have.Retention
			}
			if cfg.Replicas <= 0 {
				sc.Replicas = have.Replicas
			}
		}
		if _, err := broker.Apply(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orUnlimited(n int64) int64 {
	if n > 0 {
		return n
	}
	return -1
}

func replicas(n int) int {
	if n > 0 {
		return n
	}
	return 1
}
