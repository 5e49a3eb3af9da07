package broker_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
)

// TestReplicatedCreatesWithItsReplicas: every create through Replicated asks the server for
// its replica count, whatever the configuration said. A single server refuses three replicas,
// which shows the count reached it; with one replica Replicated is the stream API itself.
func TestReplicatedCreatesWithItsReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if broker.Replicated(b.admin, 1) != b.admin {
		t.Fatal("Replicated with one replica wraps the API")
	}
	r := broker.Replicated(b.admin, 3)
	calls := map[string]func() error{
		"CreateStream": func() error {
			_, err := r.CreateStream(ctx(t), jetstream.StreamConfig{Name: "R1", Subjects: []string{"r1.>"}, Replicas: 1})
			return err
		},
		"CreateOrUpdateStream": func() error {
			_, err := r.CreateOrUpdateStream(ctx(t), jetstream.StreamConfig{Name: "R2", Subjects: []string{"r2.>"}})
			return err
		},
		"CreateKeyValue": func() error {
			_, err := r.CreateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: "R3"})
			return err
		},
		"CreateOrUpdateKeyValue": func() error {
			_, err := r.CreateOrUpdateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: "R4", Replicas: 1})
			return err
		},
		"CreateObjectStore": func() error {
			_, err := r.CreateObjectStore(ctx(t), jetstream.ObjectStoreConfig{Bucket: "R5"})
			return err
		},
		"CreateOrUpdateObjectStore": func() error {
			_, err := r.CreateOrUpdateObjectStore(ctx(t), jetstream.ObjectStoreConfig{Bucket: "R6"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "replicas") {
			t.Errorf("%s through Replicated(3) on one server: %v; want the server refusing 3 replicas", name, err)
		}
	}
	if _, err := b.admin.CreateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: "R3"}); err != nil {
		t.Fatalf("the same bucket with its own configuration: %v", err)
	}
}
