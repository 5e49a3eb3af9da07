package crypto_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/custos-dev/custos/pkg/crypto"
)

// Streaming encryption and decryption of one item.
func ExampleNewWriter() {
	dek := bytes.Repeat([]byte{7}, crypto.KeySize) // in Custos: keys.Store.DataKey
	aad := crypto.AAD("custos-item", "p5e0c…", "critical", "item-42")
	nonce, err := crypto.RandomNonce()
	if err != nil {
		panic(err)
	}

	var stored bytes.Buffer
	w, err := crypto.NewWriter(&stored, dek, aad, nonce)
	if err != nil {
		panic(err)
	}
	_, _ = io.WriteString(w, "a large record, ")
	_, _ = io.WriteString(w, "written in pieces")
	if err := w.Close(); err != nil { // writes the final segment
		panic(err)
	}
	fmt.Println(int64(stored.Len()) == crypto.CiphertextSize(33))

	r, err := crypto.NewReader(&stored, dek, aad)
	if err != nil {
		panic(err)
	}
	// Trust the bytes only once the copy returns without error (io.EOF was reached).
	if _, err := io.Copy(os.Stdout, r); err != nil {
		panic(err)
	}
	// Output:
	// true
	// a large record, written in pieces
}

// Deterministic sealing: the same item and content give the same bytes, whichever worker
// encrypts them; a different aad fails authentication.
func ExampleSeal() {
	dek := bytes.Repeat([]byte{7}, crypto.KeySize)
	aad := crypto.AAD("custos-item", "p5e0c…", "critical", "item-42")
	record := []byte("balance=100")

	nonce := crypto.DeriveNonce(dek, "item-42", sha256.Sum256(record))
	a, _ := crypto.Seal(dek, aad, nonce, record)
	b, _ := crypto.Seal(dek, aad, crypto.DeriveNonce(dek, "item-42", sha256.Sum256(record)), record)
	fmt.Println(bytes.Equal(a, b))

	plain, err := crypto.Open(dek, aad, a)
	fmt.Printf("%s %v\n", plain, err)

	_, err = crypto.Open(dek, crypto.AAD("custos-item", "p5e0c…", "critical", "item-43"), a)
	fmt.Println(err)
	// Output:
	// true
	// balance=100 <nil>
	// crypto: message authentication failed
}

func ExampleAAD() {
	fmt.Printf("%q\n", crypto.AAD("custos-item", "p1", "critical", "i1"))
	// Output: "\x00\vcustos-item\x00\x02p1\x00\bcritical\x00\x02i1"
}

func ExampleCiphertextSize() {
	for _, n := range []int64{0, 65535, 65536} {
		c := crypto.CiphertextSize(n)
		p, _ := crypto.PlaintextSize(c)
		fmt.Println(n, c, p)
	}
	// Output:
	// 0 56 0
	// 65535 65591 65535
	// 65536 65608 65536
}
