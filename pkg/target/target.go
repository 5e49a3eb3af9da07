// Package target defines the storage target contract every backend (local disk, S3, GCS, Azure,
// memory) implements, and the errors callers match with errors.Is.
//
// Contract, for every implementation:
//
//   - Names are relative, slash-separated, made of [a-z0-9._/-]; no leading slash, no "..", no
//     empty segments. Implementations reject other names with ErrInvalidName.
//   - Put is create-only and atomic: after it returns nil the whole object is visible under name
//     with exactly the bytes read from r; before that, nothing is visible under name (a crash in
//     the middle leaves at most hidden temporary data, never a partial object under name).
//   - Put verifies the SHA-256 of the bytes it stored against opts.SHA256 before making the object
//     visible, and returns ErrChecksumMismatch (and stores nothing) when they differ.
//   - If an object already exists under name, Put returns an error matching ErrExists and leaves
//     the existing object untouched. Callers make Put idempotent by comparing checksums (Stat).
//   - Put may be retried by a wrapper: r must therefore be an io.ReadSeeker, rewound by Put.
//   - Get and GetRange return ErrNotFound for a missing object. The returned reader must be closed.
//   - Delete of a missing object returns ErrNotFound. Delete of a locked object returns ErrLocked.
//   - List returns every object whose name starts with prefix, in lexical order.
//   - Errors that retrying cannot fix are marked with ErrPermanent (errors.Is(err, ErrPermanent)):
//     ErrExists, ErrNotFound, ErrChecksumMismatch, ErrInvalidName, ErrLocked all are permanent.
//
// Implementations hold no retry loops, metrics or tracing: those are wrappers.
package target

import (
	"context"
	"errors"
	"io"
	"time"
)

// Named errors, matched with errors.Is.
var (
	ErrNotFound         = permanent("object not found")
	ErrExists           = permanent("object already exists")
	ErrChecksumMismatch = permanent("checksum mismatch")
	ErrInvalidName      = permanent("invalid object name")
	ErrLocked           = permanent("object is locked by retention")
	// ErrNoLock means the target cannot lock objects (no retention, no legal hold) and so
	// refused a Put that asked for a lock rather than store the object unlocked.
	ErrNoLock = permanent("target cannot lock objects")
	// ErrPermanent matches every error that retrying cannot fix.
	ErrPermanent = errors.New("permanent target error")
)

type permanentError struct{ msg string }

func permanent(msg string) error               { return &permanentError{msg: msg} }
func (e *permanentError) Error() string        { return "target: " + e.msg }
func (e *permanentError) Is(target error) bool { return target == ErrPermanent }

// Info describes a stored object.
type Info struct {
	Name    string
	Size    int64
	SHA256  [32]byte // zero when the target cannot report it without reading the object
	ModTime time.Time
}

// PutOptions says what Put must verify and apply.
type PutOptions struct {
	// SHA256 is the checksum of the whole object; Put refuses to publish other bytes.
	SHA256 [32]byte
	// RetainUntil, when non-zero, asks the target to make the object immutable until then.
	RetainUntil time.Time
	// LegalHold asks the target to hold the object until the hold is released.
	LegalHold bool
}

// Reader is the read side: all a restore needs.
type Reader interface {
	// Name identifies the target in logs and metrics, e.g. "fs:primary".
	Name() string
	// Get opens the whole object.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// GetRange opens length bytes at offset; length < 0 reads to the end.
	GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
	// Stat describes an object.
	Stat(ctx context.Context, name string) (Info, error)
	// List calls fn for every object under prefix in lexical order; fn's error stops the walk.
	List(ctx context.Context, prefix string, fn func(Info) error) error
}

// Writer is the write side.
type Writer interface {
	// Put stores size bytes from r under name, create-only and atomically (see package doc).
	Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts PutOptions) error
	// Delete removes an object.
	Delete(ctx context.Context, name string) error
}

// Target is a full storage target.
type Target interface {
	Reader
	Writer
	// Kind is the kind of storage ("fs", "s3", "gcs", "azure", "mem") used for 3-2-1 checks.
	Kind() string
	// Close releases resources. It is safe to call twice.
	Close() error
}

// Readers returns ts as readers, for the code that only reads a set of targets (restore,
// verify, rebuild).
func Readers(ts []Target) []Reader {
	out := make([]Reader, len(ts))
	for i, t := range ts {
		out[i] = t
	}
	return out
}
