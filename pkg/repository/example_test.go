package repository_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// exampleMust stops an example at the first error.
func exampleMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func examplePut(tg target.Target, name string, data []byte) {
	if err := tg.Put(context.Background(), name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
		panic(err)
	}
}

// A worker seals catalog objects under the catalog key; any reader holding the key file opens
// them, with no key store at all.
func ExampleSealer() {
	ctx := context.Background()
	kms := exampleMust(keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)))
	store := keys.NewMemStoreWithKMS(kms)
	sealer := exampleMust(repository.NewSealer(ctx, store, kms.Fingerprint()))

	bob := kms.Pseudonym("shop", "bob")
	record := exampleMust(sealer.Erasure(bob, time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)))
	fmt.Println("name:", repository.ErasureName(bob))

	opener := repository.NewOpener(kms, kms.Fingerprint())
	e := exampleMust(opener.Erasure(ctx, bob, record))
	fmt.Println("erased:", e.Customer == bob, e.Erased.Format(time.RFC3339))

	// A reader with another key file is stopped, not shown an empty repository.
	other := exampleMust(keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{3}, 32)))
	_, err := repository.NewOpener(other, other.Fingerprint()).Erasure(ctx, bob, record)
	fmt.Println("another key file:", errors.Is(err, repository.ErrKeyMismatch))
	// Output:
	// name: erasures/1c/p1c56beecbc48f7c0967afd513adc0c71
	// erased: true 2026-05-01T12:00:00Z
	// another key file: true
}

// With one target and the key file alone, Rebuild recovers the index, the customers' data keys
// and the erasures; the records can then be read back.
func ExampleRebuild() {
	ctx := context.Background()
	kms := exampleMust(keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)))
	tg := mem.New(mem.WithLabel("primary"))

	// What a worker wrote: a pack holding one record of alice, its manifest carrying alice's
	// wrapped key, and bob's erasure record. The key store is then lost.
	alice, bob := kms.Pseudonym("shop", "alice"), kms.Pseudonym("shop", "bob")
	codec := exampleMust(pack.NewCodec())
	defer codec.Close()
	{
		store := keys.NewMemStoreWithKMS(kms)
		sealer := exampleMust(repository.NewSealer(ctx, store, kms.Fingerprint()))
		at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		id := fmt.Sprintf("%032x", 1)
		meta := pack.ItemMeta{Tenant: "shop", CustomerID: "alice", RecordKey: "profile", EventID: "ev-1", EventTime: at}
		item := exampleMust(codec.SealItem(exampleMust(store.DataKey(ctx, alice)), alice, "critical", id, meta, []byte(`{"name":"Alice"}`)))
		b := pack.Build("critical", []pack.Item{{ID: id, Customer: alice, Seq: 1, EventTime: at, Sealed: item}})
		env := exampleMust(store.Envelope(ctx, alice))
		b.Manifest.Keys = map[string]pack.WrappedKey{alice: {KEK: env.KEK, DEK: env.DEK}}
		examplePut(tg, repository.PackName(b.Manifest.Pack), b.Data)
		examplePut(tg, repository.ManifestName(b.Manifest.Pack), exampleMust(sealer.Manifest(b.Manifest)))
		examplePut(tg, repository.ErasureName(bob), exampleMust(sealer.Erasure(bob, at)))
	}

	// Later, from the target and the key file only.
	m := repository.NewMemory(kms)
	rep := exampleMust(repository.Rebuild(ctx, tg, nil, repository.NewOpener(kms, kms.Fingerprint()), m, repository.RebuildOptions{}))
	fmt.Printf("packs %d, keys %d, erased %d, ok %v\n", rep.Packs, rep.Keys, rep.Erased, rep.OK())

	recs := exampleMust(m.Customer(ctx, alice))
	e := recs[0].Items[0]
	rc := exampleMust(tg.GetRange(ctx, repository.PackName(recs[0].Pack), e.Offset, e.Length))
	defer rc.Close()
	meta, data := func() (pack.ItemMeta, []byte) {
		meta, data, err := codec.OpenItem(exampleMust(m.Lookup(ctx, alice)), alice, recs[0].Class, e.ID, exampleMust(io.ReadAll(rc)))
		if err != nil {
			panic(err)
		}
		return meta, data
	}()
	fmt.Printf("%s/%s: %s\n", meta.CustomerID, meta.RecordKey, data)

	_, err := m.Lookup(ctx, bob)
	fmt.Println("bob erased:", errors.Is(err, keys.ErrDestroyed))
	// Output:
	// packs 1, keys 2, erased 1, ok true
	// alice/profile: {"name":"Alice"}
	// bob erased: true
}
