package gcs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log"
	"time"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/gcs"
)

// A target on Google Cloud Storage, with Application Default Credentials, storing a pack that
// must stay for 90 days. Against fake-gcs-server, set Endpoint to its http:// address; no
// credentials are sent then.
func Example() {
	ctx := context.Background()
	tg, err := gcs.New(ctx, gcs.Config{
		Name:      "offsite",
		Bucket:    "example-custos-packs", // with object retention enabled
		Prefix:    "site-a",
		ChunkSize: 8 << 20,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tg.Close()

	pack := []byte("ciphertext of a pack")
	err = tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), target.PutOptions{
		SHA256:      sha256.Sum256(pack),
		RetainUntil: time.Now().AddDate(0, 0, 90),
	})
	if err != nil {
		log.Fatal(err)
	}
}
