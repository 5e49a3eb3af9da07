package rclone_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/rclone"
)

func Example() {
	dir, _ := os.MkdirTemp("", "custos-example-")
	defer os.RemoveAll(dir)

	// The local backend needs no server; an SFTP remote takes Backend "sftp" and Options
	// host, user, key_file and known_hosts_file, with secrets (a password, a key's passphrase)
	// in Secrets.
	tg, err := rclone.New(context.Background(), rclone.Config{Label: "example", Backend: "local", Root: dir})
	if err != nil {
		panic(err)
	}
	defer tg.Close()
	ctx := context.Background()
	pack := []byte("ciphertext of a pack")
	opts := target.PutOptions{SHA256: sha256.Sum256(pack)}

	if err := tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), opts); err != nil {
		panic(err)
	}
	// Create-only: a second Put of the name is refused.
	err = tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), opts)
	fmt.Println(errors.Is(err, target.ErrExists))

	// No rclone remote can lock: a Put that asks for a lock stores nothing.
	opts.LegalHold = true
	err = tg.Put(ctx, "packs/ab/held", bytes.NewReader(pack), int64(len(pack)), opts)
	fmt.Println(errors.Is(err, target.ErrPermanent))
	fmt.Println(tg.Name(), tg.Kind())
	// Output:
	// true
	// true
	// rclone:example rclone
}
