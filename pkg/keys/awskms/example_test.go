package awskms_test

import (
	"context"
	"log"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/awskms"
)

// A worker opens the ring with the SDK's default credentials (its instance or task role) and
// joins it with the pseudonym key, which stays in a local key file.
func ExampleOpen() {
	ctx := context.Background()
	ring, err := awskms.Open(ctx, awskms.Config{Region: "eu-central-1", Alias: "alias/custos-kek"}, false)
	if err != nil {
		log.Fatal(err) // awskms.ErrAliasNotFound: the operator has not created the ring yet
	}
	defer ring.Close()
	pseudo, err := keys.LoadPseudonyms("/etc/custos/keys.json", true)
	if err != nil {
		log.Fatal(err)
	}
	_ = keys.NewKeyring(ring, pseudo)
}

// The operator rotates, re-wraps the data keys under the new version, then destroys the old
// versions: from then on no key they wrapped opens, in any process.
func ExampleRing_DestroyRetired() {
	ctx := context.Background()
	ring, err := awskms.Open(ctx, awskms.Config{Region: "eu-central-1"}, true)
	if err != nil {
		log.Fatal(err)
	}
	defer ring.Close()
	oldID, newID, err := ring.Rotate(ctx)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("active KEK %s, retired %s", newID, oldID)
	// ... re-wrap every data key under newID ...
	gone, err := ring.DestroyRetired(ctx)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("disabled and scheduled for deletion: %v", gone)
}
