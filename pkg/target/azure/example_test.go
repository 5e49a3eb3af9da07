package azure_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log"
	"time"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/azure"
	"github.com/custos-dev/custos/pkg/target/stack"
)

// Example opens a target in an existing container with the credentials of the environment
// (DefaultAzureCredential), wraps it with retries and limits as services do, and stores a pack
// under retention. It has no Output: it needs a storage account, so it is compiled, not run.
func Example() {
	ctx := context.Background()
	az, err := azure.New(ctx, azure.Config{
		Name:       "offsite",
		AccountURL: "https://myaccount.blob.core.windows.net",
		Container:  "backups", // created with version-level immutability enabled
		Prefix:     "custos/",
	})
	if err != nil {
		log.Fatal(err)
	}
	tg := stack.Build(az, stack.Config{MaxAttempts: 5, MaxPuts: 8, MaxGets: 8})
	defer tg.Close()

	pack := []byte("ciphertext of a pack")
	opts := target.PutOptions{SHA256: sha256.Sum256(pack), RetainUntil: time.Now().AddDate(0, 0, 30)}
	err = tg.Put(ctx, "packs/ab/abcdef", bytes.NewReader(pack), int64(len(pack)), opts)
	switch {
	case errors.Is(err, target.ErrExists):
		// Stored before (an earlier attempt, say): compare checksums with Stat.
	case errors.Is(err, target.ErrPermanent):
		log.Fatalf("not retryable: %v", err)
	case err != nil:
		log.Printf("transient, the retry wrapper gave up: %v", err)
	}
}
