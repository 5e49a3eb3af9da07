package pkcs11kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log"

	"github.com/custos-dev/custos/pkg/keys/pkcs11kms"
)

// The token "custos" was initialized beforehand, e.g. with
// softhsm2-util --init-token --free --label custos --pin 1234 --so-pin 5678 (TestMain does the
// same for this example).
func ExampleOpen() {
	ctx := context.Background()
	ring, err := pkcs11kms.Open(ctx, pkcs11kms.Config{
		Module:     "/usr/lib/softhsm/libsofthsm2.so",
		TokenLabel: "custos",
		PIN:        "1234", // read it from a secret, never from code or a config file
	}, true)
	if err != nil {
		log.Fatal(err)
	}
	defer ring.Close()

	dek := make([]byte, 32)
	rand.Read(dek)
	scope := []byte("p0123456789abcdef0123456789abcdef")
	wrapped, err := ring.Wrap(ctx, dek, scope)
	if err != nil {
		log.Fatal(err)
	}
	got, err := ring.Unwrap(ctx, wrapped, scope)
	fmt.Println("unwrapped:", err == nil && bytes.Equal(got, dek))

	oldID, _, err := ring.Rotate(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = ring.Unwrap(ctx, wrapped, scope)
	fmt.Println("retired version still unwraps:", err == nil && ring.Holds(oldID))

	gone, err := ring.DestroyRetired(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = ring.Unwrap(ctx, wrapped, scope)
	fmt.Println("destroyed:", len(gone), "version; unwrap:", err)
	// Output:
	// unwrapped: true
	// retired version still unwraps: true
	// destroyed: 1 version; unwrap: keys: unwrap data key failed
}
