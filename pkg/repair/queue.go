// Package repair keeps every pack in every target its class names, even across outages.
//
// A worker acknowledges events once a class's minimum number of replicas is durable. Each target
// that missed a pack is recorded in the repair queue (NATS KV bucket CUSTOS_REPAIRS) before the
// index names the pack; the Repairer copies the missing objects from a healthy replica, verifying
// their SHA-256 on the way, as soon as the target answers again, then adds the target to the
// pack's index entry and removes the queue entry.
package repair

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
)

// Bucket is the KV bucket of the repair queue.
const Bucket = "CUSTOS_REPAIRS"

// Object is one object a target lacks.
type Object struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// Missing says that a record's objects are missing from one target. The record is a pack (Pack
// is its id; the repaired target is then added to its index entry) or another record of
// docs/design.md section 11, which the index does not list: Pack is then "erasure.<pseudonym>",
// "snapshot.<job id>" or "task.<job id>.<task>".
type Missing struct {
	Pack    string    `json:"pack"`
	Class   string    `json:"class"`
	Target  string    `json:"target"`
	Objects []Object  `json:"objects"` // in write order: the pack, then its manifest; or the one record
	From    []string  `json:"from"`    // targets that held every object when it was recorded
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"` // the write error, for operators; holds no customer data
	// RetainUntil is the immutability the other replicas got; the repaired copy gets the same.
	RetainUntil time.Time `json:"retain_until,omitzero"`
	// LegalHold is set when the other replicas are under legal hold (suspicious activity); the
	// repaired copy is held too.
	LegalHold bool `json:"legal_hold,omitempty"`
}

// Queue is the repair queue.
type Queue struct {
	kv jetstream.KeyValue
}

// OpenQueue creates the bucket if needed.
func OpenQueue(ctx context.Context, js jetstream.JetStream, replicas int) (*Queue, error) {
	kv, err := broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Custos replicas missing from a target, waiting for repair",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("repair: open queue: %w", err)
	}
	return &Queue{kv: kv}, nil
}

// key is "<pack id>.<hex of target name>": target names may hold characters KV keys do not allow.
func key(pack, targetName string) string { return pack + "." + hex.EncodeToString([]byte(targetName)) }

// Add records m; recording the same pack and target again replaces the entry.
func (q *Queue) Add(ctx context.Context, m Missing) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := broker.Bounded(ctx, 0)
	defer cancel()
	if _, err := q.kv.Put(ctx, key(m.Pack, m.Target), b); err != nil {
		return fmt.Errorf("repair: record pack %s missing from %s: %w", m.Pack, m.Target, err)
	}
	return nil
}

// List returns every entry, oldest first.
func (q *Queue) List(ctx context.Context) ([]Missing, error) {
	l, err := q.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("repair: list: %w", err)
	}
	var out []Missing
	for k := range l.Keys() {
		e, err := q.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // repaired meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("repair: read %s: %w", k, err)
		}
		var m Missing
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			return nil, fmt.Errorf("repair: decode %s: %w", k, err)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].Pack < out[j].Pack
	})
	return out, nil
}

// Done removes the entry of a repaired pack and target.
func (q *Queue) Done(ctx context.Context, m Missing) error {
	err := q.kv.Delete(ctx, key(m.Pack, m.Target))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("repair: clear pack %s on %s: %w", m.Pack, m.Target, err)
	}
	return nil
}
