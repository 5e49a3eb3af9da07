package replica_test

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// Write a pack to three targets, one of them down; then write it again once it is back: the
// copies already stored count as durable.
func ExampleWrite() {
	ctx := context.Background()
	offline := faulty.New(mem.New(mem.WithLabel("offsite")))
	targets := []target.Target{mem.New(mem.WithLabel("primary")), mem.New(mem.WithLabel("secondary")), offline}
	data := []byte("pack bytes")
	sum := sha256.Sum256(data)

	offline.Down()
	res := replica.Write(ctx, targets, "packs/ab/ab12", int64(len(data)), sum, replica.BytesSource(data), target.PutOptions{})
	fmt.Printf("durable in %d of %d: %v\n", replica.Durable(res), len(targets), replica.Err(res))

	offline.Up()
	res = replica.Write(ctx, targets, "packs/ab/ab12", int64(len(data)), sum, replica.BytesSource(data), target.PutOptions{})
	for _, r := range res {
		fmt.Println(r.Target, r.Err, r.Existed)
	}
	// Output:
	// durable in 2 of 3: put packs/ab/ab12 to mem:offsite: put packs/ab/ab12: faulty: target unavailable
	// mem:primary <nil> true
	// mem:secondary <nil> true
	// mem:offsite <nil> false
}

// Check that a target still holds the expected bytes.
func ExampleVerify() {
	ctx := context.Background()
	t := mem.New()
	data := []byte("manifest bytes")
	res := replica.Write(ctx, []target.Target{t}, "manifests/ab/ab12", int64(len(data)), sha256.Sum256(data), replica.BytesSource(data), target.PutOptions{})
	if err := replica.Err(res); err != nil {
		panic(err)
	}
	ok, err := replica.Verify(ctx, t, "manifests/ab/ab12", int64(len(data)), sha256.Sum256(data))
	fmt.Println(ok, err)
	ok, err = replica.Verify(ctx, t, "manifests/ab/ab12", int64(len(data)), sha256.Sum256([]byte("something else")))
	fmt.Println(ok, err)
	// Output:
	// true <nil>
	// false <nil>
}
