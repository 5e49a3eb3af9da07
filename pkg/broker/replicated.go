package broker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Replicated returns js changed so that every stream, key-value bucket and object store it
// creates (or creates-or-updates) has n replicas; n of 1 or less returns js itself.
//
// `custos setup --replicas n` opens everything through it, so that a new cluster's streams have
// their copies from the start. Growing a stream from one replica to three instead leaves every
// stream's leader on the server that first held it, so losing that server makes all of them
// elect at once, and the grow itself is a transition JetStream has had trouble with
// (nats-server issue 6838). Streams that already exist are changed by SetReplicas, as before.
func Replicated(js jetstream.JetStream, n int) jetstream.JetStream {
	if n <= 1 {
		return js
	}
	return withReplicas{JetStream: js, n: n}
}

type withReplicas struct {
	jetstream.JetStream
	n int
}

func (r withReplicas) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateStream(ctx, cfg)
}

func (r withReplicas) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateOrUpdateStream(ctx, cfg)
}

func (r withReplicas) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateKeyValue(ctx, cfg)
}

func (r withReplicas) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}

func (r withReplicas) CreateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateObjectStore(ctx, cfg)
}

func (r withReplicas) CreateOrUpdateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateOrUpdateObjectStore(ctx, cfg)
}
