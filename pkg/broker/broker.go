// Package broker holds how Custos provisions its JetStream streams and buckets and who may touch
// them.
//
// Two ways to provision, for two kinds of credential:
//
//   - Ensure, EnsureKV and EnsureObjectStore bind: they look the stream up and create it only
//     when it is missing; an existing stream is returned as it is, never updated. Services start
//     with them, so a worker, the scheduler or a CLI role needs only the right to look a stream
//     up (STREAM.INFO), not to create or change one (package natsauth).
//   - Apply, ApplyKV and ApplyObjectStore create or update to the given configuration. Only an
//     admin credential may (`custos setup`, and the embedded stack, which runs as admin).
//
// Every call here reports a denied JetStream API request as ErrDenied within a round trip to
// the server, instead of the timeout the client would otherwise wait for (a denied request gets
// no reply; the server only reports the violation on the connection).
package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kind names what is provisioned, for errors.
const (
	kindStream = "stream"
	kindKV     = "bucket"
	kindObject = "object store"
)

// Ensure returns the stream cfg.Name, creating it with cfg when it does not exist. An existing
// stream is returned unchanged even when its configuration differs from cfg: changing a stream
// is Apply's, with an admin credential. Two processes ensuring the same stream at once both get
// it.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := guard(ctx, js, apiMatch(cfg.Name), func(ctx context.Context) (jetstream.Stream, error) {
		s, err := js.Stream(ctx, cfg.Name)
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return s, err
		}
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile
			return js.Stream(ctx, cfg.Name)
		}
		return s, err
	})
	if err != nil {
		return nil, wrap(kindStream, cfg.Name, err)
	}
	return s, nil
}

// EnsureKV returns the key-value bucket cfg.Bucket, creating it with cfg when it does not
// exist. An existing bucket is returned unchanged, as Ensure does for streams.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := guard(ctx, js, apiMatch(KVStream(cfg.Bucket)), func(ctx context.Context) (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return kv, err
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // created meanwhile
			return js.KeyValue(ctx, cfg.Bucket)
		}
		return kv, err
	})
	if err != nil {
		return nil, wrap(kindKV, cfg.Bucket, err)
	}
	return kv, nil
}

// EnsureObjectStore returns the object store cfg.Bucket, creating it with cfg when it does not
// exist. An existing store is returned unchanged.
func EnsureObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := guard(ctx, js, apiMatch(ObjectStream(cfg.Bucket)), func(ctx context.Context) (jetstream.ObjectStore, error) {
		obs, err := js.ObjectStore(ctx, cfg.Bucket)
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return obs, err
		}
		obs, err = js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // created meanwhile
			return js.ObjectStore(ctx, cfg.Bucket)
		}
		return obs, err
	})
	if err != nil {
		return nil, wrap(kindObject, cfg.Bucket, err)
	}
	return obs, nil
}

// Apply creates the stream cfg.Name or updates it to cfg. It needs an admin credential.
func Apply(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := guard(ctx, js, apiMatch(cfg.Name), func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, wrap(kindStream, cfg.Name, err)
	}
	return s, nil
}

// ApplyKV creates the key-value bucket cfg.Bucket or updates it to cfg. It needs an admin
// credential.
func ApplyKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := guard(ctx, js, apiMatch(KVStream(cfg.Bucket)), func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, wrap(kindKV, cfg.Bucket, err)
	}
	return kv, nil
}

// ApplyObjectStore creates the object store cfg.Bucket or updates it to cfg. It needs an admin
// credential.
func ApplyObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := guard(ctx, js, apiMatch(ObjectStream(cfg.Bucket)), func(ctx context.Context) (jetstream.ObjectStore, error) {
		return js.CreateOrUpdateObjectStore(ctx, cfg)
	})
	if err != nil {
		return nil, wrap(kindObject, cfg.Bucket, err)
	}
	return obs, nil
}

// KVStream is the name of the stream holding key-value bucket bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// ObjectStream is the name of the stream holding object store bucket.
func ObjectStream(bucket string) string { return "OBJ_" + bucket }

// wrap names what failed; a denial also says how to provision it.
func wrap(kind, name string, err error) error {
	if errors.Is(err, ErrDenied) {
		return fmt.Errorf("%s %s: %w; run custos setup with an admin credential", kind, name, err)
	}
	return fmt.Errorf("%s %s: %w", kind, name, err)
}

// Owned reports whether a stream belongs to Custos: the streams and the key-value and object
// buckets it makes are all named CUSTOS_*.
func Owned(stream string) bool {
	for _, prefix := range []string{"CUSTOS_", KVStream("CUSTOS_"), ObjectStream("CUSTOS_")} {
		if strings.HasPrefix(stream, prefix) {
			return true
		}
	}
	return false
}

// SetReplicas updates every Custos stream (Owned) to n replicas and returns the names of those
// it changed, in the server's order. A cluster moves the data to the new peers itself, after
// the update returns: WaitReplicas waits for it. A single server refuses n > 1. It needs an
// admin credential.
func SetReplicas(ctx context.Context, js jetstream.JetStream, n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("broker: replicas %d: want 1 or more (3 in a cluster)", n)
	}
	var changed []string
	err := ownedStreams(ctx, js, func(name string, s jetstream.Stream, err error) error {
		if err != nil {
			return fmt.Errorf("broker: stream %s: %w", name, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas == n {
			return nil
		}
		cfg.Replicas = n
		if _, err := Apply(ctx, js, cfg); err != nil {
			return fmt.Errorf("broker: %d replicas of %s: %w", n, name, err)
		}
		changed = append(changed, name)
		return nil
	})
	return changed, err
}

// ownedStreams calls fn with each Custos stream (Owned), in the server's order, and what
// looking it up gave, until fn returns an error, which it returns.
func ownedStreams(ctx context.Context, js jetstream.JetStream, fn func(name string, s jetstream.Stream, err error) error) error {
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if !Owned(name) {
			continue
		}
		s, err := js.Stream(ctx, name)
		if err := fn(name, s, err); err != nil {
			return err
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("broker: list streams: %w", err)
	}
	return nil
}

// WaitReplicas waits until every Custos stream has a leader and at least n-1 current followers
// online: until then a stream just scaled up by SetReplicas may be held by its first server
// alone, and losing that server leaves the stream without a leader. progress, when not nil, is
// called with the streams still short after each check that finds some. When ctx ends first,
// the error names them and wraps ctx's error.
func WaitReplicas(ctx context.Context, js jetstream.JetStream, n int, progress func(short []string)) error {
	const poll = 250 * time.Millisecond
	for {
		short, err := shortOfReplicas(ctx, js, n)
		if err == nil && len(short) == 0 {
			return nil
		}
		if err == nil && progress != nil {
			progress(short)
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("broker: waiting for %d replicas: %w (%w)", n, ctx.Err(), err)
			}
			return fmt.Errorf("broker: %d streams without %d current replicas (%s): %w", len(short), n, strings.Join(short, ", "), ctx.Err())
		case <-time.After(poll):
		}
	}
}

// shortOfReplicas lists the Custos streams without a leader and n-1 current followers.
func shortOfReplicas(ctx context.Context, js jetstream.JetStream, n int) ([]string, error) {
	var short []string
	err := ownedStreams(ctx, js, func(name string, s jetstream.Stream, err error) error {
		if err != nil || !replicated(s.CachedInfo(), n) {
			short = append(short, name) // an error: no leader answers for it yet
		}
		return nil
	})
	return short, err
}

// replicated reports whether a stream has a leader and n-1 current followers online. A single
// server (no cluster information) holds one copy.
func replicated(info *jetstream.StreamInfo, n int) bool {
	if info.Cluster == nil || len(info.Cluster.Replicas) == 0 && info.Cluster.Leader == "" {
		return n <= 1
	}
	if info.Cluster.Leader == "" {
		return false
	}
	current := 0
	for _, p := range info.Cluster.Replicas {
		if p != nil && p.Current && !p.Offline {
			current++
		}
	}
	return current >= n-1
}
