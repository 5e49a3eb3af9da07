package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

// RecordProblem is an erasure or snapshot record missing from, or damaged in, a target that
// must hold it.
type RecordProblem struct {
	Target   string
	Object   string
	Missing  bool // false: present but it does not authenticate
	Repaired bool
	Err      error // why it was not repaired
}

func (p RecordProblem) String() string {
	what := "damaged"
	if p.Missing {
		what = "missing"
	}
	s := fmt.Sprintf("%s %s: %s", p.Target, p.Object, what)
	if p.Err != nil {
		s += ": " + p.Err.Error()
	}
	return s
}

// RecordReport says what CheckRecords found.
type RecordReport struct {
	Erasures  int // distinct erasure records that authenticate somewhere
	Snapshots int // distinct snapshot records that authenticate somewhere
	Problems  []RecordProblem
	// Unreachable names targets that could not be listed: their records were not checked.
	Unreachable []string
}

// Remaining counts the problems not repaired.
func (r RecordReport) Remaining() int {
	n := 0
	for _, p := range r.Problems {
		if !p.Repaired {
			n++
		}
	}
	return n
}

// CheckRecords checks that every erasure record is in every target and every snapshot record
// in every target of its class (classes maps a class to its targets), so that a rebuild or a
// restore from any one target knows every erasure and snapshot. Unless dryRun, a missing or
// damaged copy is replaced, create-only, by the bytes of a copy that authenticates. Records are
// read from every target that answers; one that authenticates nowhere is not a record.
func CheckRecords(ctx context.Context, targets []target.Target, classes map[string][]target.Target, o *Opener, dryRun bool) (RecordReport, error) {
	var rep RecordReport
	type copyOf struct {
		good  []byte            // bytes of a copy that authenticates
		class string            // snapshot records: the class whose targets must hold it
		seen  map[string]string // target → "ok" | "bad"
	}
	records := map[string]*copyOf{}
	listed := map[string]bool{}
	for _, t := range targets {
		var names []string
		err := t.List(ctx, ErasurePrefix, func(in target.Info) error { names = append(names, in.Name); return nil })
		if err == nil {
			err = t.List(ctx, SnapshotPrefix, func(in target.Info) error {
				if _, ok := parseSnapshotRecord(in.Name); ok {
					names = append(names, in.Name)
				}
				return nil
			})
		}
		if err != nil {
			rep.Unreachable = append(rep.Unreachable, t.Name())
			continue
		}
		listed[t.Name()] = true
		for _, name := range names {
			b, err := ReadAll(ctx, t, name, MaxCatalogObject)
			if err != nil {
				continue
			}
			class, err := openRecord(ctx, o, name, b)
			if isKeyError(err) {
				return rep, fmt.Errorf("%s: %s: %w", t.Name(), name, err)
			}
			c := records[name]
			if c == nil {
				c = &copyOf{seen: map[string]string{}}
				records[name] = c
			}
			if err != nil {
				c.seen[t.Name()] = "bad"
				continue
			}
			c.seen[t.Name()] = "ok"
			if c.good == nil {
				c.good, c.class = b, class
			}
		}
	}
	names := make([]string, 0, len(records))
	for name, c := range records {
		if c.good != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		c := records[name]
		holders := targets
		if c.class != "" {
			holders = classes[c.class]
			rep.Snapshots++
		} else {
			rep.Erasures++
		}
		for _, t := range holders {
			if !listed[t.Name()] || c.seen[t.Name()] == "ok" {
				continue
			}
			p := RecordProblem{Target: t.Name(), Object: name, Missing: c.seen[t.Name()] == ""}
			if !dryRun {
				p.Err = replaceRecord(ctx, t, name, c.good, p.Missing)
				p.Repaired = p.Err == nil
			}
			rep.Problems = append(rep.Problems, p)
		}
	}
	return rep, nil
}

// openRecord authenticates an erasure or snapshot record; for a snapshot record it returns the
// snapshot's class.
func openRecord(ctx context.Context, o *Opener, name string, b []byte) (string, error) {
	if job, ok := parseSnapshotRecord(name); ok {
		sn, err := o.SnapshotRecord(ctx, job, b)
		if err == nil && sn.Class == "" {
			err = fmt.Errorf("%w: snapshot record %s names no class", ErrCorrupt, job)
		}
		return sn.Class, err
	}
	p, ok := parseLeaf(name, ErasurePrefix)
	if !ok || !ValidPseudonym(p) || name != ErasureName(p) {
		return "", fmt.Errorf("%w: %s is not an erasure record name", ErrCorrupt, name)
	}
	_, err := o.Erasure(ctx, p, b)
	return "", err
}

// replaceRecord writes good under name in t, deleting a damaged copy first, and checks it.
func replaceRecord(ctx context.Context, t target.Target, name string, good []byte, missing bool) error {
	if !missing {
		if err := t.Delete(ctx, name); err != nil && !errors.Is(err, target.ErrNotFound) {
			if errors.Is(err, target.ErrLocked) {
				return ErrLockedInPlace
			}
			return err
		}
	}
	sum := sha256.Sum256(good)
	err := t.Put(ctx, name, bytes.NewReader(good), int64(len(good)), target.PutOptions{SHA256: sum})
	if err != nil && !errors.Is(err, target.ErrExists) {
		return err
	}
	b, err := ReadAll(ctx, t, name, int64(len(good)))
	if err != nil {
		return err
	}
	if !bytes.Equal(b, good) {
		return fmt.Errorf("%s still differs after the repair", name)
	}
	return nil
}

// putOnce writes b under name create-only; an existing object with the same bytes is success.
func putOnce(ctx context.Context, t target.Target, name string, b []byte, opts target.PutOptions) error {
	opts.SHA256 = sha256.Sum256(b)
	err := putKept(ctx, t, name, b, opts)
	if errors.Is(err, target.ErrExists) {
		got, rerr := ReadAll(ctx, t, name, int64(len(b)))
		if rerr == nil && bytes.Equal(got, b) {
			return nil
		}
		return fmt.Errorf("%s exists with other bytes: %w", name, err)
	}
	return err
}

// putKept writes an object whose lock is a safeguard, not a requirement of its class (key
// envelopes, audit exports and checkpoints, which every target gets): a target that cannot lock
// (target.ErrNoLock) stores it unlocked rather than not at all. Class data never goes through
// here: the policy keeps targets that cannot lock out of classes that need locks.
func putKept(ctx context.Context, t target.Target, name string, b []byte, opts target.PutOptions) error {
	err := t.Put(ctx, name, bytes.NewReader(b), int64(len(b)), opts)
	if errors.Is(err, target.ErrNoLock) {
		opts.RetainUntil, opts.LegalHold = time.Time{}, false
		err = t.Put(ctx, name, bytes.NewReader(b), int64(len(b)), opts)
	}
	return err
}
