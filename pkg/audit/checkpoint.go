package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// KeyName is the name of the audit log's signing key in signed checkpoints ("— custos-audit …").
const KeyName = "custos-audit"

// checkpointHeader is the first line of a checkpoint's text; another format gets another line.
const checkpointHeader = "custos audit log"

// maxCheckpoint bounds the size of a signed checkpoint a reader accepts.
const maxCheckpoint = 4096

// Checkpoint is the signed head of the log: the tree of its first Size entries.
type Checkpoint struct {
	Size int64
	// Root is the tlog tree hash (RFC 6962 Merkle tree hash) of entries 0 … Size-1.
	Root tlog.Hash
	// Last is the SHA-256 of entry Size-1's bytes (the hash chain's head); zero when Size is 0.
	Last [32]byte
	// Time is when the checkpoint was made, to the second.
	Time time.Time
}

// Text returns the checkpoint's text, the part that is signed:
//
//	custos audit log
//	<Size, decimal>
//	<Root, base64>
//	<Last, base64>
//	<Time, RFC 3339 UTC>
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n%s\n%s\n", checkpointHeader, c.Size,
		base64.StdEncoding.EncodeToString(c.Root[:]), base64.StdEncoding.EncodeToString(c.Last[:]),
		c.Time.UTC().Format(time.RFC3339))
}

// parseCheckpointText parses the text of a checkpoint, strictly: five lines, each in its one
// canonical form.
func parseCheckpointText(text string) (Checkpoint, error) {
	bad := func(what string) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: %s", ErrCheckpoint, what)
	}
	lines := strings.Split(text, "\n")
	if len(lines) != 6 || lines[5] != "" || lines[0] != checkpointHeader {
		return bad("not a custos audit log checkpoint")
	}
	var c Checkpoint
	var err error
	if c.Size, err = strconv.ParseInt(lines[1], 10, 64); err != nil || c.Size < 0 || strconv.FormatInt(c.Size, 10) != lines[1] {
		return bad("size")
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return bad("root")
	}
	last, err := base64.StdEncoding.DecodeString(lines[3])
	if err != nil || len(last) != sha256.Size {
		return bad("last")
	}
	if c.Time, err = time.Parse(time.RFC3339, lines[4]); err != nil {
		return bad("time")
	}
	copy(c.Root[:], root)
	copy(c.Last[:], last)
	if c.Text() != text {
		return bad("not in canonical form")
	}
	return c, nil
}

// ParseCheckpoint checks a signed checkpoint's signature by v's key and parses it.
func ParseCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	if len(signed) > maxCheckpoint {
		return Checkpoint{}, fmt.Errorf("%w: %d bytes", ErrCheckpoint, len(signed))
	}
	if v == nil {
		return Checkpoint{}, fmt.Errorf("%w: no verifier", ErrCheckpoint)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return Checkpoint{}, fmt.Errorf("%w: not signed by %s key %08x", ErrCheckpoint, v.Name(), v.KeyHash())
		}
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	return parseCheckpointText(n.Text)
}

// NewCheckpoint returns the checkpoint of entries (every entry of the log, by position) made at
// now, signed with s: a note (golang.org/x/mod/sumdb/note) whose text is Checkpoint.Text. It
// refuses (ErrTampered) entries whose positions or hash chain do not verify.
func NewCheckpoint(entries [][]byte, now time.Time, s note.Signer) ([]byte, error) {
	if s == nil {
		return nil, ErrNoSigner
	}
	rep, err := Verify(entries, nil, nil)
	if err != nil {
		return nil, err
	}
	c := Checkpoint{Size: int64(len(entries)), Root: rep.tree.root(int64(len(entries))), Time: now.UTC().Truncate(time.Second)}
	if len(entries) > 0 {
		c.Last = sha256.Sum256(entries[len(entries)-1])
	}
	signed, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return signed, nil
}

// NewSigner returns the note signer of an Ed25519 private key, named KeyName.
func NewSigner(priv ed25519.PrivateKey) (note.Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: signing key: not an Ed25519 private key")
	}
	vkey, err := VerifierKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	parts := strings.Split(vkey, "+") // name, key hash, key
	skey := "PRIVATE+KEY+" + KeyName + "+" + parts[1] + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...)) // 1: Ed25519
	return note.NewSigner(skey)
}

// NewVerifier returns the note verifier of an Ed25519 public key, named KeyName.
func NewVerifier(pub ed25519.PublicKey) (note.Verifier, error) {
	vkey, err := VerifierKey(pub)
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}

// VerifierKey returns the public key in the note verifier-key form,
// "custos-audit+<key hash, 8 hex>+<base64 of 0x01 ‖ public key>", which ParseVerifierKey and
// note.NewVerifier read. It may be published: it only verifies.
func VerifierKey(pub ed25519.PublicKey) (string, error) {
	vkey, err := note.NewEd25519VerifierKey(KeyName, pub)
	if err != nil {
		return "", fmt.Errorf("audit: verifier key: %w", err)
	}
	return vkey, nil
}

// ParseVerifierKey reads a verifier key as VerifierKey writes it.
func ParseVerifierKey(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	return v, nil
}

// SameTree reports whether two signed checkpoints, read without checking signatures, describe
// the same tree (size, root and last entry); a writer that finds a checkpoint of the same size
// already stored uses it to tell a retry from a conflict.
func SameTree(a, b []byte) bool {
	ca, erra := unverifiedCheckpoint(a)
	cb, errb := unverifiedCheckpoint(b)
	return erra == nil && errb == nil && ca.Size == cb.Size && ca.Root == cb.Root && ca.Last == cb.Last
}

// unverifiedCheckpoint parses a signed checkpoint's text without checking any signature.
func unverifiedCheckpoint(signed []byte) (Checkpoint, error) {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 || len(signed) > maxCheckpoint {
		return Checkpoint{}, fmt.Errorf("%w: malformed note", ErrCheckpoint)
	}
	return parseCheckpointText(string(signed[:i+1]))
}
