// Package source defines how Custos reads customer data out of the systems it backs up: the
// Source contract every connector (PostgreSQL, an HTTP export endpoint, ...) implements, and the
// errors callers match with errors.Is. docs/sources.md describes the connectors.
//
// Contract, for every implementation:
//
//   - Snapshot opens one consistent read of a data class. A full snapshot yields every record of
//     the class (within Request.Range); an incremental one yields every record that changed after
//     the snapshot whose cursor is Request.Cursor, and may yield some unchanged ones again (an
//     overlap that keeps in-flight writes from being lost). Consumers therefore deduplicate by
//     (tenant, customer, key, content): a record seen twice with the same bytes is one version.
//   - A write committed while a snapshot runs is either in that snapshot or in the next
//     incremental one started from its cursor; it is never in neither.
//   - Snapshot.Next returns records one at a time and io.EOF after the last one. Memory stays
//     bounded whatever the size of the source: implementations stream, they never load a whole
//     table or export.
//   - Snapshot.Cursor is valid only after Next returned io.EOF. The caller stores it when, and
//     only when, everything the snapshot yielded is durable; the next incremental passes it back.
//     A cursor is opaque bytes and belongs to the source and data class that made it.
//   - Records with Deleted set are tombstones: the record existed and is gone. Sources that cannot
//     tell deletions say so in their documentation; a full backup then is how deletions show.
//   - Errors that retrying cannot fix match ErrPermanent (bad configuration, a cursor the source
//     rejects, a malformed page, refused credentials). Others may succeed on a retry of the whole
//     snapshot.
//   - Close releases the snapshot and may be called more than once, also before Next ran dry.
//   - A Source is safe for concurrent use; a Snapshot is used by one goroutine at a time.
//
// Implementations hold no retry loops for whole snapshots, no metrics and no tracing: callers
// wrap them. (A connector retries single HTTP requests, as every outbound HTTP call does.)
package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// Method says whether a snapshot reads everything or only changes.
type Method string

// Backup methods, as in the policy and ScheduleTick.method.
const (
	Full        Method = "full"
	Incremental Method = "incremental"
)

// Source reads records of data classes out of one system.
type Source interface {
	// Snapshot opens a consistent read described by req. The returned Snapshot must be closed.
	Snapshot(ctx context.Context, req Request) (Snapshot, error)
}

// Snapshot is one consistent read in progress.
type Snapshot interface {
	// Next returns the next record, or io.EOF after the last one. The record's Data is the
	// caller's to keep.
	Next(ctx context.Context) (Record, error)
	// Cursor is the position to store when this snapshot commits and to pass as Request.Cursor
	// to the next incremental snapshot. It returns an error before Next returned io.EOF.
	Cursor() ([]byte, error)
	// Close ends the read; safe to call twice.
	Close() error
}

// Request describes one snapshot.
type Request struct {
	// DataClass selects what to read, e.g. "critical"; the source's configuration maps it to
	// tables, queries or endpoints.
	DataClass string
	// Method is Full or Incremental.
	Method Method
	// Cursor is the cursor of the last committed snapshot of this class; required for
	// Incremental, ignored for Full.
	Cursor []byte
	// Range, when not zero, limits the snapshot to customers in the range, so that a large
	// backup can be split into tasks that many workers share.
	Range CustomerRange
	// Shared, when set, is a token from Exporter.Export: the snapshot reads the exact view the
	// exporter holds, so that several tasks of one backup see the same data and report the same
	// cursor. Method and Cursor must match those given to Export.
	Shared string
}

// Validate checks the request's fields that do not depend on the source.
func (r Request) Validate() error {
	if r.DataClass == "" {
		return fmt.Errorf("%w: request has no data class", ErrInvalidRequest)
	}
	switch r.Method {
	case Full:
	case Incremental:
		if len(r.Cursor) == 0 {
			return fmt.Errorf("%w: incremental snapshot of %q without a cursor (run a full one first)", ErrInvalidRequest, r.DataClass)
		}
	default:
		return fmt.Errorf("%w: unknown method %q", ErrInvalidRequest, r.Method)
	}
	return r.Range.Validate()
}

// Record is one item of customer data read from a source.
type Record struct {
	// Tenant and CustomerID say whose data it is (and so which data key encrypts it).
	Tenant     string
	CustomerID string
	// Key is the record's stable key within (tenant, customer, data class); a later record with
	// the same key is a newer version. Connectors document how they build it.
	Key string
	// ContentType is the MIME type of the bytes, e.g. "application/json".
	ContentType string
	// Data holds the bytes. It is nil for tombstones and when Open is set.
	Data []byte
	// Open, when set, streams the bytes of a record too large to hold in memory. It may be called
	// until the snapshot is closed, while Next reads further records on another goroutine (the
	// worker reads the next batch while it stores this one); the reader must be closed.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// Deleted marks a tombstone: the record was deleted at the source.
	Deleted bool
}

// Body returns a reader of the record's bytes, whichever way the source supplied them.
func (r Record) Body(ctx context.Context) (io.ReadCloser, error) {
	if r.Open != nil {
		return r.Open(ctx)
	}
	return io.NopCloser(bytes.NewReader(r.Data)), nil
}

// Exporter is implemented by sources that can hold one consistent view open while several tasks
// read parts of it (PostgreSQL's exported snapshots).
type Exporter interface {
	// Export opens a view for req (its Range and Shared are ignored) and returns it. Pass its
	// Token as Request.Shared to every task's Snapshot; close it once every task has opened its
	// snapshot (or finished).
	Export(ctx context.Context, req Request) (Export, error)
}

// Export is a consistent view held open for the tasks of one backup.
type Export interface {
	// Token identifies the view to Snapshot (Request.Shared).
	Token() string
	// Cursor is the cursor every snapshot of this view reports.
	Cursor() []byte
	// Close releases the view; safe to call twice.
	Close() error
}

// Splitter is implemented by sources that can propose customer ranges of similar size.
type Splitter interface {
	// Split proposes at most n ranges that together cover every customer of the class exactly
	// once (see Ranges).
	Split(ctx context.Context, dataClass string, n int) ([]CustomerRange, error)
}

// Named errors, matched with errors.Is.
var (
	// ErrPermanent matches every error that retrying cannot fix.
	ErrPermanent = errors.New("permanent source error")
	// ErrUnknownClass: the source has no configuration for the request's data class.
	ErrUnknownClass = permanent("unknown data class")
	// ErrInvalidRequest: the request is malformed (no class, unknown method, bad range...).
	ErrInvalidRequest = permanent("invalid request")
	// ErrInvalidCursor: the cursor is corrupt, belongs to another source, class or mode, or no
	// longer lets the source find every change (for one, it is older than the source can look
	// back). The remedy is a full snapshot.
	ErrInvalidCursor = permanent("invalid cursor: run a full snapshot")
	// ErrMalformed: the source sent data that does not follow its documented format.
	ErrMalformed = permanent("malformed data from source")
	// ErrUnauthorized: the source refused the configured credentials.
	ErrUnauthorized = permanent("source refused the credentials")
	// ErrTooLarge: the snapshot went past a configured bound (pages, records, bytes).
	ErrTooLarge = permanent("snapshot exceeds a configured bound")
	// ErrCursorNotReady is returned by Snapshot.Cursor before Next returned io.EOF.
	ErrCursorNotReady = errors.New("source: cursor requested before the snapshot was read to the end")
)

type permanentError struct{ msg string }

func permanent(msg string) error               { return &permanentError{msg: msg} }
func (e *permanentError) Error() string        { return "source: " + e.msg }
func (e *permanentError) Is(target error) bool { return target == ErrPermanent }
