package crypto_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/custos-dev/custos/pkg/crypto"
)

// FuzzOpen feeds arbitrary bytes to both decryption paths: they must never panic, must agree,
// and may only fail with ErrAuth or ErrUnsupportedVersion. The committed corpus in
// testdata/fuzz/FuzzOpen holds valid items under testDEK and testAAD and near misses.
func FuzzOpen(f *testing.F) {
	for _, n := range []int{0, 1, 100} {
		c, err := crypto.Seal(testDEK, testAAD, crypto.DeriveNonce(testDEK, "fuzz", [32]byte{byte(n)}), make([]byte, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opened, err := crypto.Open(testDEK, testAAD, data)
		if err != nil && !errors.Is(err, crypto.ErrAuth) && !errors.Is(err, crypto.ErrUnsupportedVersion) {
			t.Fatalf("Open: unexpected error %v", err)
		}
		var streamed bytes.Buffer
		rerr := readInto(&streamed, data)
		if !errors.Is(rerr, err) {
			t.Fatalf("NewReader err %v, Open err %v", rerr, err)
		}
		if err == nil && !bytes.Equal(opened, streamed.Bytes()) {
			t.Fatal("Open and NewReader disagree")
		}
		if err == nil {
			// Anything that opens must re-seal to the same bytes under its own header.
			var n crypto.Nonce
			copy(n.Salt[:], data[1:33])
			copy(n.Prefix[:], data[33:40])
			again, _ := crypto.Seal(testDEK, testAAD, n, opened)
			if !bytes.Equal(again, data) {
				t.Fatal("re-seal differs")
			}
		}
	})
}

func readInto(w io.Writer, data []byte) error {
	r, err := crypto.NewReader(bytes.NewReader(data), testDEK, testAAD)
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}
