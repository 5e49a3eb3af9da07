package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

// Writing checkpoints to the targets (docs/audit.md, "In the targets"), shared by
// `custos audit checkpoint` and the workers' periodic checkpoints: both read what the targets
// hold, refuse a log that does not verify against it, sign, and write the entries each target
// lacks and then the checkpoint.

// TargetCheckpoints are the distinct checkpoint objects of a set of targets.
type TargetCheckpoints struct {
	// Data are the signed checkpoints (identical bytes counted once); Where[i] says where Data[i]
	// was first found ("<target>:audit/checkpoints/…").
	Data  [][]byte
	Where []string
	// Unreachable holds the error of each target that could not be read.
	Unreachable []error
	// Lagging names the targets that hold fewer checkpoint sizes than the targets hold together
	// (they missed a checkpoint, or lost some), with how many they hold.
	Lagging map[string]int
	// Sizes is how many distinct checkpoint sizes the targets hold together.
	Sizes int
}

// ReadTargetCheckpoints reads the checkpoints of every target that answers.
func ReadTargetCheckpoints(ctx context.Context, targets []target.Target) TargetCheckpoints {
	out := TargetCheckpoints{Lagging: map[string]int{}}
	held := map[string]int{}
	sizes := map[int64]bool{}
	for _, t := range targets {
		cps, err := repository.ReadAuditCheckpoints(ctx, t)
		if err != nil {
			out.Unreachable = append(out.Unreachable, err)
			continue
		}
		held[t.Name()] = len(cps)
		for _, c := range cps {
			sizes[c.Size] = true
			if !slices.ContainsFunc(out.Data, func(b []byte) bool { return bytes.Equal(b, c.Data) }) {
				out.Data = append(out.Data, c.Data)
				out.Where = append(out.Where, t.Name()+":"+c.Name)
			}
		}
	}
	out.Sizes = len(sizes)
	for name, n := range held {
		if n < len(sizes) {
			out.Lagging[name] = n
		}
	}
	return out
}

// CheckpointWrite is what WriteCheckpoint is given.
type CheckpointWrite struct {
	// Entries are every entry of the log, by position (ReadEntries).
	Entries [][]byte
	// Held are the checkpoints the targets hold (ReadTargetCheckpoints): the log must verify
	// against them before a new one is signed.
	Held TargetCheckpoints
	// Targets receive the entries they lack and the checkpoint.
	Targets []target.Target
	// Signer signs the checkpoint; Verifier is its public key.
	Signer   note.Signer
	Verifier note.Verifier
	// Now is the checkpoint's time; Put the retention of the objects written.
	Now time.Time
	Put target.PutOptions
}

// CheckpointResult is what WriteCheckpoint did.
type CheckpointResult struct {
	// Report is the verification of the entries against the checkpoints already held.
	Report Report
	// Checkpoint and Signed are the new checkpoint, parsed and as written; Signed is nil when
	// the log is empty (nothing is written).
	Checkpoint Checkpoint
	Signed     []byte
	// Written counts the targets that hold the checkpoint now; Failures has one error per
	// target that does not.
	Written  int
	Failures []error
}

// ErrNotVerified means the log does not verify against the checkpoints the targets hold, so no
// checkpoint was signed (docs/audit.md: a checkpoint is only signed for a log that verifies).
var ErrNotVerified = errors.New("audit: the log does not verify: no checkpoint written")

// WriteCheckpoint verifies w.Entries against w.Held as Verify does and refuses (ErrNotVerified,
// writing nothing) a log that does not verify; otherwise it signs a checkpoint of every entry and
// writes to every target, create-only, the entries the target lacks and then the checkpoint
// (repository.WriteAudit). A target that fails is reported in Failures; the others are written
// all the same. An empty log is not checkpointed.
func WriteCheckpoint(ctx context.Context, w CheckpointWrite) (CheckpointResult, error) {
	if w.Signer == nil || w.Verifier == nil {
		return CheckpointResult{}, ErrNoSigner
	}
	rep, err := Verify(w.Entries, w.Held.Data, w.Verifier)
	res := CheckpointResult{Report: rep}
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrNotVerified, err)
	}
	if len(w.Entries) == 0 {
		return res, nil
	}
	signed, err := NewCheckpoint(w.Entries, w.Now, w.Signer)
	if err != nil {
		return res, err
	}
	c, err := ParseCheckpoint(signed, w.Verifier)
	if err != nil {
		return res, err
	}
	res.Checkpoint, res.Signed = c, signed
	for _, t := range w.Targets {
		err := repository.WriteAudit(ctx, t, repository.AuditWrite{Entries: w.Entries, Size: c.Size,
			Checkpoint: signed, Same: SameTree, Put: w.Put})
		if err != nil {
			res.Failures = append(res.Failures, err)
			continue
		}
		res.Written++
	}
	return res, nil
}

// ReadEntriesAfter returns the log's entries by position, reusing known (the entries up to some
// position, as an earlier call returned them) and reading the later ones from the stream one
// message at a time. It needs only the right to read single messages, not to create consumers,
// so a worker can call it; reading a long log the first time is slower than ReadEntries.
// Entries already known are not read again: the log is append-only, and Verify and the
// checkpoints in the targets catch an entry changed in the stream afterwards.
func ReadEntriesAfter(ctx context.Context, js jetstream.JetStream, known [][]byte) ([][]byte, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	last := s.CachedInfo().State.LastSeq
	if uint64(len(known)) > last {
		return nil, fmt.Errorf("%w: the stream holds %d entries, fewer than the %d read before", ErrTampered, last, len(known))
	}
	out := slices.Clip(known)
	for seq := uint64(len(known)) + 1; seq <= last; seq++ {
		m, err := s.GetMsg(ctx, seq)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			out = append(out, nil)
		case err != nil:
			return nil, fmt.Errorf("audit: read entry %d: %w", seq-1, err)
		default:
			out = append(out, m.Data)
		}
	}
	return out, nil
}

// LeaseBucket is the key-value bucket in which the workers take turns writing checkpoints.
const LeaseBucket = "CUSTOS_AUDIT_LEASE"

// LeaseConfig is the configuration of LeaseBucket: one key, no history.
func LeaseConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: LeaseBucket,
		Description: "Custos: whose turn it is to checkpoint the audit log", History: 1}
}
