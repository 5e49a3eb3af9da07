// Package repository owns what Custos keeps in its storage targets, the system of record: the
// object names, the framing of catalog objects (manifests, task manifests, snapshot records,
// erasure records, each carrying the wrapped catalog key), and reading all of it back with the
// KEK alone. docs/design.md sections 5, 10 and 11 are its specification.
//
// The broker is the transport; the targets are the record. Nothing here needs NATS: the key
// store, the index and the snapshot list can be rebuilt from any one target (Rebuild), and a
// restore can run from a target alone (Memory).
package repository

import (
	"errors"
	"strings"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// Named errors, matched with errors.Is.
var (
	// ErrKeyMismatch means an object was written with another pseudonym key than the reader's
	// key file: the reader would find no customer, so it must stop.
	ErrKeyMismatch = errors.New("repository: the key file is not the one these backups were written with")
	// ErrCorrupt means an object is not well formed or does not authenticate.
	ErrCorrupt = errors.New("repository: corrupt object")
	// ErrUnavailable means no target answered for an object.
	ErrUnavailable = errors.New("repository: no target answered")
)

// Prefixes of the object kinds, as listed by Rebuild and Verify.
const (
	PackPrefix     = "packs/"
	ManifestPrefix = "manifests/"
	SnapshotPrefix = "snapshots/"
	ErasurePrefix  = "erasures/"
	EnvelopePrefix = "keys/"
)

// PackName is the name of a pack object; id must satisfy pack.ValidID.
func PackName(id string) string { return pack.ObjectName(id) }

// ManifestName is the name of a pack's manifest.
func ManifestName(id string) string { return pack.ManifestName(id) }

// TaskManifestName is the name of a snapshot task's manifest whose sealed bytes have the
// SHA-256 sum (hex); snapshot.ManifestName says why the sum is in it.
func TaskManifestName(job string, task int, sum string) string {
	return snapshot.ManifestName(job, task, sum)
}

// SnapshotRecordName is the name of a committed snapshot's record.
func SnapshotRecordName(job string) string { return SnapshotPrefix + job[:2] + "/" + job + "/commit" }

// ErasureName is the name of a customer's erasure record; pseudonym is "p" + 32 hex.
func ErasureName(pseudonym string) string {
	return ErasurePrefix + shard(pseudonym) + "/" + pseudonym
}

// shard is the two characters after a pseudonym's "p".
func shard(pseudonym string) string {
	if len(pseudonym) < 3 {
		return "00"
	}
	return pseudonym[1:3]
}

// parseSnapshotRecord returns the job id of a snapshot record name.
func parseSnapshotRecord(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, SnapshotPrefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "commit" || !pack.ValidID(parts[1]) || parts[0] != parts[1][:2] {
		return "", false
	}
	return parts[1], true
}

// parseLeaf returns the last element of name under prefix/<2 chars>/, if name has that form.
func parseLeaf(name, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", false
	}
	sh, leaf, ok := strings.Cut(rest, "/")
	if !ok || len(sh) != 2 || strings.Contains(leaf, "/") || leaf == "" {
		return "", false
	}
	return leaf, true
}

// ValidPseudonym reports whether s has the form of a customer pseudonym: "p" and 32 hex digits.
func ValidPseudonym(s string) bool { return len(s) == 33 && s[0] == 'p' && pack.ValidID(s[1:]) }
