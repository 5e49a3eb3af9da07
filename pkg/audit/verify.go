package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Report says what Verify found.
type Report struct {
	// Entries is how many entries were given.
	Entries int64
	// Checkpoints is how many checkpoints were given and carry a valid signature.
	Checkpoints int
	// Head is the size of the largest valid checkpoint, Root its tree hash and Time its time;
	// 0 when there is none. Entries from Head on are proven by the hash chain alone.
	Head int64
	Root tlog.Hash
	Time time.Time
	// FirstBad is the position of the first entry that is missing, out of place, changed or not
	// an entry; -1 when every entry verified.
	FirstBad int64
	// BadCheckpoint is the index (in the checkpoints given) of the first checkpoint that is
	// malformed, not signed by the verifier's key or inconsistent; -1 when none is.
	BadCheckpoint int
	// Problem says what is wrong with FirstBad, or else with BadCheckpoint.
	Problem string

	tree *tree
}

// OK reports whether the entries and every checkpoint verified.
func (r Report) OK() bool { return r.FirstBad < 0 && r.BadCheckpoint < 0 }

// Verify checks a whole log offline: entries are the bytes of every entry by position (nil
// where one is missing), checkpoints signed checkpoints of it in any order (from every target),
// v the key that signs them. It checks, in this order (docs/audit.md, "Verifying"):
//
//   - every checkpoint's signature and form;
//   - every entry's form and position (its index is its position);
//   - the hash chain, walking back from each checkpoint's last-entry hash, and from the newest
//     entry for the entries after the largest checkpoint;
//   - that each checkpoint's root is the tree hash of that many entries, and that no checkpoint
//     names more entries than there are.
//
// A changed, deleted or reordered entry is named: FirstBad is its position. The error wraps
// ErrTampered when an entry is bad and ErrCheckpoint when only a checkpoint is; the report is
// complete either way. With no checkpoints Verify checks positions and the chain only.
func Verify(entries [][]byte, checkpoints [][]byte, v note.Verifier) (Report, error) {
	n := int64(len(entries))
	rep := Report{Entries: n, FirstBad: -1, BadCheckpoint: -1}
	var bad badList

	// Checkpoints: signature and form.
	var cps []parsedCheckpoint
	for i, signed := range checkpoints {
		c, err := ParseCheckpoint(signed, v)
		if err != nil {
			rep.badCheckpoint(i, err.Error())
			continue
		}
		rep.Checkpoints++
		cps = append(cps, parsedCheckpoint{c, i})
	}

	// Entries: form and position; hashes; the tree.
	hashes := make([][32]byte, n)
	prevs := make([]*[32]byte, n) // nil: not to be used (the entry is missing, out of place or not an entry)
	rep.tree = &tree{}
	for i, b := range entries {
		idx := int64(i)
		rep.tree.add(b)
		if b == nil {
			bad.add(idx, "missing")
			continue
		}
		hashes[i] = sha256.Sum256(b)
		var h struct {
			V     int    `json:"v"`
			Index *int64 `json:"index"`
			Prev  []byte `json:"prev"`
		}
		switch {
		case json.Unmarshal(b, &h) != nil || h.V != Version || h.Index == nil || len(h.Prev) != sha256.Size ||
			bytes.ContainsAny(b, "\n\r"):
			bad.add(idx, "not an audit entry of version 1")
			continue
		case *h.Index > idx:
			bad.add(idx, fmt.Sprintf("missing: this position holds entry %d", *h.Index))
			continue // an entry out of place says nothing about its neighbours here: its prev is not used
		case *h.Index < idx:
			bad.add(idx, fmt.Sprintf("out of place: this position holds entry %d (moved or repeated)", *h.Index))
			continue
		}
		p := [32]byte(h.Prev)
		prevs[i] = &p
	}

	// One anchor per size: the last-entry hash of the checkpoints of that size. Two checkpoints
	// of one size that disagree cannot both be right; the one the entries match is kept.
	anchors := map[int64][32]byte{}
	for _, c := range cps {
		switch {
		case c.Size > n:
			bad.add(n, fmt.Sprintf("missing: a checkpoint names %d entries, the log holds %d", c.Size, n))
		case c.Size == 0:
		default:
			a, seen := anchors[c.Size]
			if !seen || (a != c.Last && c.Last == hashes[c.Size-1]) {
				anchors[c.Size] = c.Last
			}
		}
	}
	sizes := make([]int64, 0, len(anchors))
	for s := range anchors {
		sizes = append(sizes, s)
	}
	slices.Sort(sizes)

	// The chain, segment by segment: [previous size, size) is walked back from the checkpoint's
	// last-entry hash; each entry must hash to what its successor (or the checkpoint) records.
	// Reaching the segment's start, the first entry's prev must be the previous checkpoint's
	// last-entry hash (zero for entry 0).
	lo := int64(0)
	for _, s := range sizes {
		bad.walk(entries, hashes, prevs, lo, s, anchors[s], true, func(p [32]byte) {
			switch {
			case lo == 0 && p != [32]byte{}:
				bad.add(0, "prev of the first entry is not zero")
			case lo > 0 && p != anchors[lo]:
				for _, c := range cps {
					if c.Size == s {
						rep.badCheckpoint(c.i, fmt.Sprintf("the checkpoints of sizes %d and %d disagree", lo, s))
						break
					}
				}
			}
		})
		lo = s
	}
	// The entries after the largest checkpoint: only the chain proves them, from the newest back.
	if n > lo {
		bad.walk(entries, hashes, prevs, lo, n, hashes[n-1], false, func(p [32]byte) {
			switch {
			case lo == 0 && p != [32]byte{}:
				bad.add(0, "prev of the first entry is not zero")
			case lo > 0 && p != anchors[lo]:
				bad.add(lo, fmt.Sprintf("changed: prev is not the hash of entry %d the checkpoint of size %d records", lo-1, lo))
			}
		})
	}

	// Roots, and the head.
	for _, c := range cps {
		if c.Size > n {
			continue
		}
		if rep.tree.root(c.Size) != c.Root || (c.Size > 0 && hashes[c.Size-1] != c.Last) {
			if f := bad.first(); f < 0 || f >= c.Size {
				rep.badCheckpoint(c.i, fmt.Sprintf("checkpoint of size %d does not match entries that verify", c.Size))
			}
			continue
		}
		if rep.Time.IsZero() || c.Size > rep.Head {
			rep.Head, rep.Root, rep.Time = c.Size, c.Root, c.Time
		}
	}

	if f := bad.first(); f >= 0 {
		rep.FirstBad, rep.Problem = f, bad[f]
		return rep, fmt.Errorf("%w: entry %d: %s", ErrTampered, f, bad[f])
	}
	if rep.BadCheckpoint >= 0 {
		return rep, fmt.Errorf("%w: checkpoint %d: %s", ErrCheckpoint, rep.BadCheckpoint, rep.Problem)
	}
	return rep, nil
}

func (r *Report) badCheckpoint(i int, why string) {
	if r.BadCheckpoint < 0 || i < r.BadCheckpoint {
		r.BadCheckpoint, r.Problem = i, why
	}
}

// parsedCheckpoint is a checkpoint whose signature verified, and its index in the input.
type parsedCheckpoint struct {
	Checkpoint
	i int
}

// badList holds, by position, why entries are bad; the first reason given for a position stays.
type badList map[int64]string

func (b *badList) add(i int64, why string) {
	if *b == nil {
		*b = badList{}
	}
	if _, ok := (*b)[i]; !ok {
		(*b)[i] = why
	}
}

func (b badList) first() int64 {
	f := int64(-1)
	for i := range b {
		if f < 0 || i < f {
			f = i
		}
	}
	return f
}

// walk checks the chain over positions [lo, hi), from hi-1 down. With anchored set, want is the
// hash entry hi-1 must have (a checkpoint's last-entry hash) and hi-1 is checked against it;
// otherwise want is entry hi-1's own hash and the walk starts at hi-2. The first entry that
// does not hash to what is wanted is marked, and the walk stops there: its own prev cannot be
// trusted. When the walk reaches lo, done gets the prev of entry lo.
func (b *badList) walk(entries [][]byte, hashes [][32]byte, prevs []*[32]byte, lo, hi int64, want [32]byte, anchored bool, done func([32]byte)) {
	i := hi - 1
	if !anchored {
		if entries[i] == nil || prevs[i] == nil {
			return
		}
		want = *prevs[i]
		i--
	}
	for ; i >= lo; i-- {
		switch {
		case entries[i] == nil:
			b.add(i, "missing")
			return
		case hashes[i] != want && anchored && i == hi-1:
			b.add(i, fmt.Sprintf("changed: its hash is not the one the checkpoint of size %d records", hi))
			return
		case hashes[i] != want:
			b.add(i, fmt.Sprintf("changed: its hash is not the prev entry %d records", i+1))
			return
		case prevs[i] == nil:
			return
		}
		want = *prevs[i]
	}
	done(want)
}

// tree holds the stored hashes of the tlog tree over entries, in the order tlog.StoredHashes
// returns them.
type tree struct {
	n      int64
	hashes []tlog.Hash
}

func (t *tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("audit: tree hash %d not stored", x)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

// add appends an entry (nil: a missing one, hashed as empty).
func (t *tree) add(entry []byte) {
	h, err := tlog.StoredHashes(t.n, entry, t)
	if err != nil {
		panic("audit: " + err.Error()) // every hash StoredHashes reads was stored before
	}
	t.hashes = append(t.hashes, h...)
	t.n++
}

// root is the tree hash of the first n entries.
func (t *tree) root(n int64) tlog.Hash {
	h, err := tlog.TreeHash(n, t)
	if err != nil {
		panic("audit: " + err.Error())
	}
	return h
}

// Proof is an inclusion proof (RFC 6962 audit path) of entry Index in the tree of the log's
// first Size entries, as tlog.ProveRecord builds it.
type Proof struct {
	Index, Size int64
	// Leaf is tlog.RecordHash of the entry's bytes.
	Leaf tlog.Hash
	// Hashes is the audit path, from the leaf's sibling up.
	Hashes tlog.RecordProof
}

// Prove returns the proof that entry index is in the tree of the first size entries. It does
// not verify entries: run Verify first.
func Prove(entries [][]byte, size, index int64) (Proof, error) {
	if size < 1 || size > int64(len(entries)) || index < 0 || index >= size {
		return Proof{}, fmt.Errorf("audit: no entry %d in a tree of %d of %d entries", index, size, len(entries))
	}
	t := &tree{}
	for _, e := range entries[:size] {
		t.add(e)
	}
	p, err := tlog.ProveRecord(size, index, t)
	if err != nil {
		return Proof{}, fmt.Errorf("audit: prove entry %d: %w", index, err)
	}
	return Proof{Index: index, Size: size, Leaf: tlog.RecordHash(entries[index]), Hashes: p}, nil
}

// CheckProof checks that entry (its bytes) is entry p.Index of the log the signed checkpoint
// describes, whose size must be p.Size.
func CheckProof(p Proof, entry, checkpoint []byte, v note.Verifier) error {
	c, err := ParseCheckpoint(checkpoint, v)
	if err != nil {
		return err
	}
	if c.Size != p.Size {
		return fmt.Errorf("audit: proof is for a tree of %d entries, the checkpoint is of %d", p.Size, c.Size)
	}
	if err := tlog.CheckRecord(p.Hashes, c.Size, c.Root, p.Index, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("audit: entry %d is not in the checkpoint of size %d: %w", p.Index, c.Size, err)
	}
	return nil
}
