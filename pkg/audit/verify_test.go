package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/pkg/audit"
)

// testKey is a signing key and its verifier.
type testKey struct {
	signer   note.Signer
	verifier note.Verifier
}

func newKey(t testing.TB, seed byte) testKey {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
	s, err := audit.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.NewVerifier(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return testKey{s, v}
}

func (k testKey) checkpoint(t testing.TB, entries [][]byte) []byte {
	t.Helper()
	cp, err := audit.NewCheckpoint(entries, time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC), k.signer)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// chain builds n entries as Append writes them.
func chain(t testing.TB, n int) [][]byte {
	t.Helper()
	var out [][]byte
	prev := make([]byte, 32)
	for i := range n {
		e := audit.Entry{V: audit.Version, Index: int64(i), Prev: prev, Time: time.Date(2026, 11, 23, 12, 0, i, 0, time.UTC),
			Kind: audit.KindBackupCommit, Class: "critical", Outcome: "committed", Packs: []string{strings.Repeat("ab", 16)}}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		sum := sha256.Sum256(b)
		prev = sum[:]
	}
	return out
}

// edit decodes an entry, changes it and encodes it again.
func edit(t testing.TB, b []byte, change func(*audit.Entry)) []byte {
	t.Helper()
	var e audit.Entry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	change(&e)
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Every single-entry change to a log of 20 entries with checkpoints of 8 and 15 entries is
// found, and the first bad entry named, wherever it is: before, at and after a checkpoint's
// boundary, and after the newest checkpoint (hash chain only).
func TestVerifyNamesTheFirstBadEntry(t *testing.T) {
	t.Parallel()
	k := newKey(t, 1)
	log := chain(t, 20)
	cps := [][]byte{k.checkpoint(t, log[:15]), k.checkpoint(t, log[:8])}
	if rep, err := audit.Verify(log, cps, k.verifier); err != nil || !rep.OK() || rep.Head != 15 || rep.Checkpoints != 2 || rep.FirstBad != -1 {
		t.Fatalf("untouched log: %+v, %v", rep, err)
	}
	reason := func(i int) func([][]byte) [][]byte {
		return func(l [][]byte) [][]byte {
			l[i] = edit(t, l[i], func(e *audit.Entry) { e.Outcome = "nothing happened" })
			return l
		}
	}
	prev := func(i int) func([][]byte) [][]byte {
		return func(l [][]byte) [][]byte {
			l[i] = edit(t, l[i], func(e *audit.Entry) { e.Prev = bytes.Repeat([]byte{7}, 32) })
			return l
		}
	}
	del := func(i int) func([][]byte) [][]byte {
		return func(l [][]byte) [][]byte { return slices.Delete(l, i, i+1) }
	}
	for _, tc := range []struct {
		name   string
		change func([][]byte) [][]byte
		bad    int64
	}{
		{"edit entry 0", reason(0), 0},
		{"edit entry 5", reason(5), 5},
		{"edit the last entry of a checkpoint", reason(7), 7},
		{"edit the first entry after a checkpoint", reason(8), 8},
		{"edit the last entry of the newest checkpoint", reason(14), 14},
		{"edit the first entry after the newest checkpoint", reason(15), 15},
		{"edit an entry after the newest checkpoint", reason(17), 17},
		{"edit the prev of entry 5", prev(5), 5},
		{"edit the prev of entry 8", prev(8), 8},
		{"edit the prev of entry 15", prev(15), 15},
		{"edit the prev of entry 17", prev(17), 17},
		{"edit the index of entry 6", func(l [][]byte) [][]byte {
			l[6] = edit(t, l[6], func(e *audit.Entry) { e.Index = 9 })
			return l
		}, 6},
		{"delete entry 0", del(0), 0},
		{"delete entry 5", del(5), 5},
		{"delete entry 17", del(17), 17},
		{"delete the last entry of the newest checkpoint", del(14), 14},
		{"a deleted message (a hole) at 5", func(l [][]byte) [][]byte { l[5] = nil; return l }, 5},
		{"reorder 3 and 11", func(l [][]byte) [][]byte { l[3], l[11] = l[11], l[3]; return l }, 3},
		{"reorder 16 and 17", func(l [][]byte) [][]byte { l[16], l[17] = l[17], l[16]; return l }, 16},
		{"repeat entry 4", func(l [][]byte) [][]byte { return slices.Insert(l, 5, l[4]) }, 5},
		{"truncate to 12", func(l [][]byte) [][]byte { return l[:12] }, 12},
		{"not JSON", func(l [][]byte) [][]byte { l[9] = []byte("hello"); return l }, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.change(slices.Clone(log))
			rep, err := audit.Verify(l, cps, k.verifier)
			if !errors.Is(err, audit.ErrTampered) || rep.FirstBad != tc.bad || rep.OK() {
				t.Fatalf("Verify = %+v, %v; want entry %d named", rep, err, tc.bad)
			}
			if !strings.Contains(err.Error(), "entry "+itoa(tc.bad)+":") {
				t.Fatalf("error %q does not name entry %d", err, tc.bad)
			}
		})
	}
}

// Without any checkpoint, positions and the hash chain still name the changed entry.
func TestVerifyChainOnly(t *testing.T) {
	t.Parallel()
	log := chain(t, 6)
	if rep, err := audit.Verify(log, nil, nil); err != nil || rep.Head != 0 || rep.Entries != 6 {
		t.Fatalf("untouched: %+v, %v", rep, err)
	}
	log[2] = edit(t, log[2], func(e *audit.Entry) { e.Class = "archive" })
	if rep, err := audit.Verify(log, nil, nil); !errors.Is(err, audit.ErrTampered) || rep.FirstBad != 2 {
		t.Fatalf("edited: %+v, %v", rep, err)
	}
}

// A checkpoint signed by another key, or whose text was changed, is rejected and named; so is a
// checkpoint of a rewritten log signed by the right key, when the log is the original.
func TestVerifyRejectsForgedCheckpoints(t *testing.T) {
	t.Parallel()
	k, other := newKey(t, 1), newKey(t, 2)
	log := chain(t, 10)
	good := k.checkpoint(t, log)
	forged := other.checkpoint(t, log)
	rep, err := audit.Verify(log, [][]byte{good, forged}, k.verifier)
	if !errors.Is(err, audit.ErrCheckpoint) || rep.BadCheckpoint != 1 || rep.FirstBad != -1 || !strings.Contains(rep.Problem, "not signed") {
		t.Fatalf("forged by another key: %+v, %v", rep, err)
	}
	changed := bytes.Replace(good, []byte("\n10\n"), []byte("\n9\n"), 1)
	if rep, err := audit.Verify(log, [][]byte{changed}, k.verifier); !errors.Is(err, audit.ErrCheckpoint) || rep.BadCheckpoint != 0 {
		t.Fatalf("changed text: %+v, %v", rep, err)
	}
	rewritten := slices.Clone(log)
	rewritten[3] = edit(t, rewritten[3], func(e *audit.Entry) { e.Outcome = "x" })
	if _, err := audit.Verify(rewritten, nil, nil); err == nil {
		t.Fatal("the rewritten log chains")
	}
	// Re-chain the rewritten log from entry 3 on, and sign it with the right key: the original
	// log no longer matches that checkpoint, and the checkpoints disagree with each other.
	for i := 4; i < len(rewritten); i++ {
		sum := sha256.Sum256(rewritten[i-1])
		rewritten[i] = edit(t, rewritten[i], func(e *audit.Entry) { e.Prev = sum[:] })
	}
	bad := k.checkpoint(t, rewritten)
	if rep, err := audit.Verify(log, [][]byte{good, bad}, k.verifier); !errors.Is(err, audit.ErrCheckpoint) || rep.BadCheckpoint != 1 {
		t.Fatalf("checkpoint of a rewritten log: %+v, %v", rep, err)
	}
	if rep, err := audit.Verify(rewritten, [][]byte{good}, k.verifier); !errors.Is(err, audit.ErrTampered) || rep.FirstBad != 9 {
		t.Fatalf("a rewritten suffix against the original checkpoint: %+v, %v", rep, err)
	}
	if _, err := audit.ParseCheckpoint(good, other.verifier); !errors.Is(err, audit.ErrCheckpoint) {
		t.Fatalf("ParseCheckpoint with another key: %v", err)
	}
	if !audit.SameTree(good, k.checkpoint(t, log)) || audit.SameTree(good, bad) {
		t.Fatal("SameTree")
	}
}

// NewCheckpoint refuses a log whose chain is broken, and a checkpoint's fields read back.
func TestNewCheckpoint(t *testing.T) {
	t.Parallel()
	k := newKey(t, 1)
	log := chain(t, 3)
	signed := k.checkpoint(t, log)
	c, err := audit.ParseCheckpoint(signed, k.verifier)
	if err != nil || c.Size != 3 || c.Last != sha256.Sum256(log[2]) || !c.Time.Equal(time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("ParseCheckpoint = %+v, %v", c, err)
	}
	if !strings.HasPrefix(string(signed), "custos audit log\n3\n") || !strings.Contains(string(signed), "\n\n— custos-audit ") {
		t.Fatalf("checkpoint:\n%s", signed)
	}
	log[1] = nil
	if _, err := audit.NewCheckpoint(log, time.Now(), k.signer); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("NewCheckpoint of a log with a hole = %v", err)
	}
	if _, err := audit.NewCheckpoint(chain(t, 1), time.Now(), nil); !errors.Is(err, audit.ErrNoSigner) {
		t.Fatalf("NewCheckpoint without a signer = %v", err)
	}
	vkey, err := audit.VerifierKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.ParseVerifierKey(vkey)
	if err != nil || v.KeyHash() != k.verifier.KeyHash() || !strings.HasPrefix(vkey, "custos-audit+") {
		t.Fatalf("ParseVerifierKey(%q) = %v", vkey, err)
	}
}

// Every entry's inclusion proof checks against the checkpoint, and fails for another entry's
// bytes, another position or another checkpoint.
func TestInclusionProofs(t *testing.T) {
	t.Parallel()
	k := newKey(t, 1)
	log := chain(t, 13)
	cp := k.checkpoint(t, log)
	small := k.checkpoint(t, log[:12])
	for i := range int64(13) {
		p, err := audit.Prove(log, 13, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.CheckProof(p, log[i], cp, k.verifier); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if err := audit.CheckProof(p, log[(i+1)%13], cp, k.verifier); err == nil {
			t.Fatalf("entry %d's proof accepts entry %d", i, (i+1)%13)
		}
		if err := audit.CheckProof(p, log[i], small, k.verifier); err == nil {
			t.Fatalf("entry %d's proof accepts a checkpoint of another size", i)
		}
		q := p
		q.Index = (i + 1) % 13
		if err := audit.CheckProof(q, log[i], cp, k.verifier); err == nil {
			t.Fatalf("entry %d's proof accepts position %d", i, q.Index)
		}
	}
	if _, err := audit.Prove(log, 13, 13); err == nil {
		t.Fatal("Prove of an entry past the tree")
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
