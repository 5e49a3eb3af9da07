package report_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/report"
)

// The digest a policy_change entry records, and a report compares with the policy in force.
func ExamplePolicyDigest() {
	fmt.Println(report.PolicyDigest([]byte("version: 1\n"))[:20])
	// Output: sha256:09bfcc6a14b83
}

// A report of a log holding only the policy: the controls that need backups and drills fail
// for want of evidence; the configuration controls pass.
func ExampleBuild() {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	signer, _ := audit.NewSigner(priv)
	vkey, _ := audit.VerifierKey(priv.Public().(ed25519.PublicKey))
	digest := report.PolicyDigest(policy.DefaultYAML())

	// One entry, chained as Append would store it (entry 0: prev is 32 zero bytes).
	e := audit.Entry{V: audit.Version, Index: 0, Prev: make([]byte, 32), Time: time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC),
		Kind: audit.KindPolicyChange, Outcome: "applied", Policy: digest}
	b, _ := json.Marshal(e)
	entries := [][]byte{b}
	checkpoint, _ := audit.NewCheckpoint(entries, time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), signer)

	r, err := report.Build(report.Input{Policy: policy.Default(), PolicyDigest: digest, Entries: entries,
		Checkpoint: checkpoint, VerifierKey: vkey,
		From: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		Now: time.Date(2027, 1, 2, 1, 0, 0, 0, time.UTC)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range r.Controls {
		fmt.Println(c.ID, c.Status)
	}
	// Output:
	// seed002-3.1-frequency fail
	// seed002-3.2-retention pass
	// seed002-3.3-methods pass
	// seed002-3.3-encryption pass
	// seed002-3.4-testing fail
	// seed002-3.5-offsite fail
	// seed002-4.1-rpo fail
	// seed002-4.2-rto fail
	// seed002-4.3-restoration not_applicable
	// seed002-5-monitoring pass
	// seed002-6-audits pass
	// seed003-1-objectives pass
	// seed003-2-3-2-1 pass
	// seed003-5-documentation pass
}
