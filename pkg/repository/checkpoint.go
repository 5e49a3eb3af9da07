package repository

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/custos-dev/custos/pkg/target"
)

// The audit log in the targets (docs/audit.md, "In the targets"): signed checkpoints, and the
// entries themselves in export objects, so that the log can be verified from one target alone.
// Entries hold pseudonyms, never raw ids, so they are stored as they are, not sealed.
const (
	AuditCheckpointPrefix = "audit/checkpoints/"
	AuditEntriesPrefix    = "audit/entries/"
	// AuditExportEntries bounds the entries of one export object.
	AuditExportEntries = 4096
	// maxAuditCheckpoint bounds a checkpoint object read back.
	maxAuditCheckpoint = 4096
)

// AuditCheckpointName is the name of the signed checkpoint of the log's first size entries:
// "audit/checkpoints/<size, 20 digits>".
func AuditCheckpointName(size int64) string {
	return fmt.Sprintf("%s%020d", AuditCheckpointPrefix, size)
}

// AuditEntriesName is the name of the export of entries first … last (inclusive, positions from
// 0): "audit/entries/<first, 20 digits>-<last, 20 digits>".
func AuditEntriesName(first, last int64) string {
	return fmt.Sprintf("%s%020d-%020d", AuditEntriesPrefix, first, last)
}

// ParseAuditCheckpointName returns the size of a checkpoint's name, if name has that form.
func ParseAuditCheckpointName(name string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, AuditCheckpointPrefix)
	if !ok {
		return 0, false
	}
	n, ok := parse20(rest)
	return n, ok
}

// ParseAuditEntriesName returns the range of an export's name, if name has that form.
func ParseAuditEntriesName(name string) (first, last int64, ok bool) {
	rest, ok := strings.CutPrefix(name, AuditEntriesPrefix)
	if !ok || len(rest) != 41 || rest[20] != '-' {
		return 0, 0, false
	}
	first, ok1 := parse20(rest[:20])
	last, ok2 := parse20(rest[21:])
	if !ok1 || !ok2 || last < first {
		return 0, 0, false
	}
	return first, last, true
}

// parse20 reads a number written in exactly 20 decimal digits.
func parse20(s string) (int64, bool) {
	if len(s) != 20 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// AuditCheckpoint is a checkpoint object as a target holds it.
type AuditCheckpoint struct {
	Name string
	Size int64 // from the name; the signed text says it again
	Data []byte
}

// ReadAuditCheckpoints reads every checkpoint object the target holds, smallest size first.
func ReadAuditCheckpoints(ctx context.Context, r target.Reader) ([]AuditCheckpoint, error) {
	var out []AuditCheckpoint
	err := r.List(ctx, AuditCheckpointPrefix, func(in target.Info) error {
		if size, ok := ParseAuditCheckpointName(in.Name); ok {
			out = append(out, AuditCheckpoint{Name: in.Name, Size: size})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list audit checkpoints in %s: %w", r.Name(), err)
	}
	for i := range out {
		if out[i].Data, err = ReadAll(ctx, r, out[i].Name, maxAuditCheckpoint); err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", out[i].Name, r.Name(), err)
		}
	}
	return out, nil
}

type auditExport struct {
	name        string
	first, last int64
}

// listAuditExports lists the target's export objects, by first entry and then by last.
func listAuditExports(ctx context.Context, r target.Reader) ([]auditExport, error) {
	var out []auditExport
	err := r.List(ctx, AuditEntriesPrefix, func(in target.Info) error {
		if first, last, ok := ParseAuditEntriesName(in.Name); ok {
			out = append(out, auditExport{in.Name, first, last})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list audit entries in %s: %w", r.Name(), err)
	}
	slices.SortFunc(out, func(a, b auditExport) int {
		return cmp.Or(cmp.Compare(a.first, b.first), cmp.Compare(a.last, b.last))
	})
	return out, nil
}

// ReadAuditEntries returns the entries the target's exports hold, by position, for
// audit.Verify. Exports are read by first entry; each one's lines are placed from its first
// entry on, in order, lines a previous export already placed being skipped. A position no
// export reaches, before the last one placed, is nil (missing). An export whose lines are
// fewer or more than its name says is read as it is: Verify then finds entries out of place.
func ReadAuditEntries(ctx context.Context, r target.Reader) ([][]byte, error) {
	exports, err := listAuditExports(ctx, r)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, x := range exports {
		if x.last < int64(len(out)) {
			continue
		}
		b, err := ReadAll(ctx, r, x.name, MaxCatalogObject)
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", x.name, r.Name(), err)
		}
		lines := bytes.SplitAfter(b, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		for x.first > int64(len(out)) {
			out = append(out, nil)
		}
		for _, l := range lines[min(int64(len(out))-x.first, int64(len(lines))):] {
			out = append(out, bytes.TrimSuffix(l, []byte("\n")))
		}
	}
	return out, nil
}

// AuditExported returns the position after the last entry the target's exports name: the first
// entry WriteAudit writes next.
func AuditExported(ctx context.Context, r target.Reader) (int64, error) {
	exports, err := listAuditExports(ctx, r)
	if err != nil {
		return 0, err
	}
	next := int64(0)
	for _, x := range exports {
		next = max(next, x.last+1)
	}
	return next, nil
}

// AuditWrite is what WriteAudit writes.
type AuditWrite struct {
	// Entries are the log's entries by position, at least Size of them.
	Entries [][]byte
	// Size is the checkpoint's size; Checkpoint the signed checkpoint of the first Size entries.
	Size       int64
	Checkpoint []byte
	// Same reports whether a checkpoint already stored under the name describes the same tree as
	// Checkpoint (one made at another time); nil: only the same bytes do.
	Same func(stored, checkpoint []byte) bool
	// Put is applied to every object (its SHA256 is set here).
	Put target.PutOptions
}

// ErrAuditCheckpointConflict means a target holds a checkpoint of the same size that describes
// another tree.
var ErrAuditCheckpointConflict = errors.New("repository: a checkpoint of that size describing another log exists")

// WriteAudit writes to t, create-only, the entries it lacks up to w.Size-1 (from AuditExported
// on, in objects of at most AuditExportEntries entries, in order) and then the checkpoint: a
// checkpoint must only be in a target that holds every entry it covers. A retried write finds
// its earlier objects and accepts them.
func WriteAudit(ctx context.Context, t target.Target, w AuditWrite) error {
	if w.Size < 0 || w.Size > int64(len(w.Entries)) {
		return fmt.Errorf("audit checkpoint of %d entries, %d given", w.Size, len(w.Entries))
	}
	next, err := AuditExported(ctx, t)
	if err != nil {
		return err
	}
	for first := next; first < w.Size; first += AuditExportEntries {
		last := min(first+AuditExportEntries, w.Size) - 1
		var b bytes.Buffer
		for i := first; i <= last; i++ {
			e := w.Entries[i]
			if len(e) == 0 || bytes.ContainsAny(e, "\n\r") {
				return fmt.Errorf("audit entry %d is missing or not one line: not exported", i)
			}
			b.Write(e)
			b.WriteByte('\n')
		}
		if err := putOnce(ctx, t, AuditEntriesName(first, last), b.Bytes(), w.Put); err != nil {
			return fmt.Errorf("export audit entries %d-%d to %s: %w", first, last, t.Name(), err)
		}
	}
	name := AuditCheckpointName(w.Size)
	opts := w.Put
	opts.SHA256 = sha256.Sum256(w.Checkpoint)
	err = putKept(ctx, t, name, w.Checkpoint, opts)
	if errors.Is(err, target.ErrExists) {
		stored, rerr := ReadAll(ctx, t, name, maxAuditCheckpoint)
		switch {
		case rerr != nil:
			err = fmt.Errorf("%w; reading it: %w", err, rerr)
		case bytes.Equal(stored, w.Checkpoint) || (w.Same != nil && w.Same(stored, w.Checkpoint)):
			return nil
		default:
			err = fmt.Errorf("%w: %w", ErrAuditCheckpointConflict, err)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s to %s: %w", name, t.Name(), err)
	}
	return nil
}
