package fs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
)

func Example() {
	dir, _ := os.MkdirTemp("", "custos-example-")
	defer os.RemoveAll(dir)

	tg, err := fs.New(dir, fs.WithLabel("offsite"))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	pack := []byte("ciphertext of a pack")
	opts := target.PutOptions{SHA256: sha256.Sum256(pack)}

	if err := tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), opts); err != nil {
		panic(err)
	}
	// Create-only: a second Put of the name is refused, the object stays as it was.
	err = tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), opts)
	fmt.Println(errors.Is(err, target.ErrExists), errors.Is(err, target.ErrPermanent))

	rc, err := tg.GetRange(ctx, "packs/ab/abcdef", 0, 10)
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	head, _ := io.ReadAll(rc)
	fmt.Printf("%s %q\n", tg.Name(), head)
	// Output:
	// true true
	// fs:offsite "ciphertext"
}
