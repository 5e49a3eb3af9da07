package s3_test

import (
	"context"
	"log"
	"time"

	"github.com/custos-dev/custos/pkg/target/s3"
)

// A target on Wasabi with credentials from the SDK's default chain (environment, shared files,
// instance role), objects locked in compliance mode, and a daily sweep of crashed uploads.
func ExampleNew() {
	ctx := context.Background()
	tg, err := s3.New(ctx, s3.Config{
		Name:     "offsite",
		Provider: "wasabi",
		Region:   "eu-central-2",
		Bucket:   "custos-backups",
		Prefix:   "prod",
		LockMode: s3.LockCompliance,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tg.Close()
	if n, err := tg.AbortIncomplete(ctx, 24*time.Hour); err != nil {
		log.Printf("%s: abort incomplete uploads: %v (%d aborted)", tg.Name(), err, n)
	}
}

// The profile of a provider tells what the target relies on.
func ExampleLookupProfile() {
	p, _ := s3.LookupProfile("r2")
	_ = p.ObjectLock // false: a Put with RetainUntil or LegalHold fails instead of storing unlocked
}
