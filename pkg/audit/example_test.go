package audit_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
)

// An entry names its customer by pseudonym only; a raw id is refused before anything is written,
// and the error does not repeat it.
func ExampleEntry_Validate() {
	e := audit.Entry{Time: time.Now(), Kind: audit.KindManual, EventID: "5f0c1d5e", Class: "critical",
		Customer: "c-1001", Reason: "restore drill", RequestedBy: "alice@ops", Outcome: audit.OutcomeNoRecords}
	err := e.Validate()
	fmt.Println(errors.Is(err, audit.ErrInvalidEntry), err)

	e.Customer = "p0b7c7fce795c1d0468b281827e2015c7" // what keys.Pseudonymizer returns
	fmt.Println(e.Validate())
	// Output:
	// true audit: invalid entry: customer is not a pseudonym
	// <nil>
}

// exampleLog chains entries as Append does: each carries its position and the SHA-256 of the
// previous entry's bytes.
func exampleLog(n int) [][]byte {
	var out [][]byte
	prev := make([]byte, 32)
	for i := range n {
		e := audit.Entry{V: 1, Index: int64(i), Prev: prev, Time: time.Date(2026, 11, 23, 12, i, 0, 0, time.UTC),
			Kind: audit.KindRestore, Reason: "restore drill", RequestedBy: "alice@ops", Outcome: "restored"}
		b, _ := json.Marshal(e)
		out = append(out, b)
		sum := sha256.Sum256(b)
		prev = sum[:]
	}
	return out
}

// A checkpoint signs the head of the log; Verify checks the whole log against it offline, and
// names the first entry that was changed.
func ExampleVerify() {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32)) // the caller owns the key
	signer, _ := audit.NewSigner(priv)
	verifier, _ := audit.NewVerifier(priv.Public().(ed25519.PublicKey))

	entries := exampleLog(5)
	checkpoint, _ := audit.NewCheckpoint(entries, time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC), signer)
	rep, err := audit.Verify(entries, [][]byte{checkpoint}, verifier)
	fmt.Println(rep.Entries, rep.Head, err)

	entries[2] = []byte(string(entries[2][:len(entries[2])-2]) + "!\"}") // another outcome
	rep, err = audit.Verify(entries, [][]byte{checkpoint}, verifier)
	fmt.Println(rep.FirstBad, errors.Is(err, audit.ErrTampered))
	// Output:
	// 5 5 <nil>
	// 2 true
}

// An inclusion proof shows that one entry is in the tree a checkpoint signs, without the others.
func ExampleProve() {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	signer, _ := audit.NewSigner(priv)
	verifier, _ := audit.NewVerifier(priv.Public().(ed25519.PublicKey))
	entries := exampleLog(7)
	checkpoint, _ := audit.NewCheckpoint(entries, time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC), signer)

	p, _ := audit.Prove(entries, 7, 3)
	fmt.Println(len(p.Hashes), audit.CheckProof(p, entries[3], checkpoint, verifier))
	fmt.Println(audit.CheckProof(p, entries[4], checkpoint, verifier) != nil)
	// Output:
	// 3 <nil>
	// true
}
