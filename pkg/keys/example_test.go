package keys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/keys"
)

func ExampleLocalKMS_Pseudonym() {
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	if err != nil {
		panic(err)
	}
	fmt.Println(kms.Pseudonym("acme", "cust-0042"))
	// Output: pfa6dbf87fe21f9759f0e077cc2dd5c5d
}

func ExampleLoadOrCreateKeyFile() {
	dir, _ := os.MkdirTemp("", "custos-keys")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "custos.key")

	kms, err := keys.LoadOrCreateKeyFile(path) // first start: creates the file
	if err != nil {
		panic(err)
	}
	again, err := keys.LoadKeyFile(path) // later starts: the same keys
	if err != nil {
		panic(err)
	}
	fmt.Println(kms.KeyID() == again.KeyID())

	ctx := context.Background()
	wrapped, _ := kms.Wrap(ctx, []byte("a data key"), []byte("p0123"))
	_, err = again.Unwrap(ctx, wrapped, []byte("p9999")) // bound to its scope
	fmt.Println(err)
	// Output:
	// true
	// keys: unwrap data key failed
}

// A key store on an embedded NATS server: create on first use, then crypto-shred.
func ExampleNewKVStore() {
	dir, _ := os.MkdirTemp("", "custos-kv")
	defer os.RemoveAll(dir)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(5 * time.Second) {
		panic("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	kms, err := keys.LoadOrCreateKeyFile(filepath.Join(dir, "custos.key"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	store, err := keys.NewKVStore(ctx, js, kms)
	if err != nil {
		panic(err)
	}
	defer store.Close()

	scope := kms.Pseudonym("acme", "cust-0042")
	dek, _ := store.DataKey(ctx, scope) // created on first use
	again, _ := store.DataKey(ctx, scope)
	fmt.Println(len(dek), bytes.Equal(dek, again))

	_ = store.Destroy(ctx, scope) // the customer asked to be erased
	_, err = store.DataKey(ctx, scope)
	fmt.Println(errors.Is(err, keys.ErrDestroyed))
	// Output:
	// 32 true
	// true
}

func ExampleMemStore() {
	store := keys.NewMemStore()
	ctx := context.Background()
	if _, err := store.Lookup(ctx, "catalog"); errors.Is(err, keys.ErrNotFound) {
		fmt.Println("no key yet")
	}
	dek, _ := store.DataKey(ctx, "catalog")
	fmt.Println(len(dek))
	// Output:
	// no key yet
	// 32
}
