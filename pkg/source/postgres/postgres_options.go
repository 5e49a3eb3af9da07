package postgres

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/internal/pattern"
	"github.com/custos-dev/custos/pkg/source"
)

// Mode says how an incremental snapshot finds changed rows.
type Mode string

const (
	// ByColumn (the default) selects rows whose ChangeColumn is above the cursor: an updated_at
	// timestamp or a monotonically increasing id, set by every insert and update. Uses an index on
	// the column when there is one.
	ByColumn Mode = "column"
	// ByXmin selects rows whose system column xmin (the id of the transaction that wrote the row
	// version) is not older than the cursor. Needs no column, but scans whole tables and has a
	// wraparound caveat (docs/sources.md). Tables only, not queries.
	ByXmin Mode = "xmin"
)

// Config configures a PostgreSQL source.
type Config struct {
	// DSN is a libpq connection string or URL. It may hold a password; it is never logged or put
	// in an error.
	DSN string
	// Classes maps data class names to what to read for them.
	Classes map[string]Class
	// ApplicationName is set on the source's sessions (default "custos-source"). Sessions with
	// this name are read-only backup readers and are not waited for (see InFlightWait).
	ApplicationName string
	// InFlightWait bounds how long a ByColumn snapshot waits for transactions that were open when
	// it started (default one minute). When they are still open after that, the snapshot goes on
	// but its cursor does not advance past the previous one, so nothing they write is lost; the
	// next incremental simply reads more.
	InFlightWait time.Duration
	// MaxConns bounds the source's connection pool (default 4).
	MaxConns int32
	// Logger receives warnings (a held-back cursor); default slog.Default(). No customer data or
	// credentials are logged.
	Logger *slog.Logger
}

// Class is what one data class reads.
type Class struct {
	// Tenant is the tenant of every record, unless a table sets TenantColumn.
	Tenant string
	// Incremental says how incremental snapshots find changes (default ByColumn).
	Incremental Mode
	// Tables are read in order, each streamed.
	Tables []Table
}

// Table is one table or query of a class. Every identifier is quoted, so configuration cannot
// inject SQL; Query is the exception and is trusted SQL by design.
type Table struct {
	// Name prefixes the keys of this table's records ("orders" gives "orders/<key>"). Required:
	// lowercase letters, digits, '_', '-', '.'.
	Name string
	// Schema (default "public") and Table name the table to read...
	Schema string
	Table  string
	// ...or Query is a SELECT whose result columns form the rows (ByColumn mode only). No
	// trailing semicolon needed.
	Query string
	// Columns, when set, are the columns of the row's JSON, in this order; default every column
	// of the table or query in its own order.
	Columns []string
	// ValueColumn, when set, makes each row's record this column's value as stored, rather than
	// the row's JSON: for tables that hold one document per row, whose restore should give the
	// document back byte for byte. Its type must be json, jsonb, text, varchar or bytea, and sets
	// the record's content type (application/json, text/plain or application/octet-stream). A
	// NULL value is an empty record. Not with Columns.
	ValueColumn string
	// CustomerColumn holds the customer id (any type; compared as text). Required.
	CustomerColumn string
	// KeyColumns identify the row within the customer (the primary key, usually). Required.
	KeyColumns []string
	// TenantColumn, when set, holds the tenant instead of Class.Tenant.
	TenantColumn string
	// ChangeColumn is the change marker for ByColumn incrementals: updated_at (timestamp,
	// timestamptz, date) or an increasing id (smallint, integer, bigint, numeric). Every write
	// must set it to a value at least the largest committed one when its transaction started:
	// now(), clock_timestamp() or nextval() do. Required for ByColumn classes.
	ChangeColumn string
	// DeletedColumn, when set, marks soft-deleted rows (a boolean, or a deleted_at timestamp:
	// the row is deleted when the value is neither NULL nor false). Incrementals report such rows
	// as tombstones; full snapshots leave them out. Without it deletions are not visible.
	DeletedColumn string
}

var nameRE = pattern.Lazy(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func (c *Config) withDefaults() Config {
	out := *c
	if out.ApplicationName == "" {
		out.ApplicationName = "custos-source"
	}
	if out.InFlightWait <= 0 {
		out.InFlightWait = time.Minute
	}
	if out.MaxConns <= 0 {
		out.MaxConns = 4
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

func (c *Config) validate() error {
	if c.DSN == "" {
		return fmt.Errorf("%w: postgres: no DSN", source.ErrInvalidRequest)
	}
	if len(c.Classes) == 0 {
		return fmt.Errorf("%w: postgres: no data classes", source.ErrInvalidRequest)
	}
	for name, cl := range c.Classes {
		if err := cl.validate(); err != nil {
			return fmt.Errorf("%w: postgres: class %q: %v", source.ErrInvalidRequest, name, err)
		}
	}
	return nil
}

func (c Class) validate() error {
	switch c.Incremental {
	case "", ByColumn, ByXmin:
	default:
		return fmt.Errorf("unknown incremental mode %q", c.Incremental)
	}
	if len(c.Tables) == 0 {
		return fmt.Errorf("no tables")
	}
	seen := map[string]bool{}
	for i, t := range c.Tables {
		if !nameRE().MatchString(t.Name) {
			return fmt.Errorf("table %d: name %q must match %s", i, t.Name, nameRE())
		}
		if seen[t.Name] {
			return fmt.Errorf("table name %q used twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.validate(c); err != nil {
			return fmt.Errorf("table %q: %v", t.Name, err)
		}
	}
	return nil
}

func (t Table) validate(c Class) error {
	if (t.Table == "") == (strings.TrimSpace(t.Query) == "") {
		return fmt.Errorf("set exactly one of Table and Query")
	}
	if t.Query != "" && t.Schema != "" {
		return fmt.Errorf("Schema is for tables, not queries")
	}
	if t.TenantColumn == "" && c.Tenant == "" {
		return fmt.Errorf("no tenant: set Class.Tenant or TenantColumn")
	}
	if t.CustomerColumn == "" {
		return fmt.Errorf("no CustomerColumn")
	}
	if len(t.KeyColumns) == 0 {
		return fmt.Errorf("no KeyColumns")
	}
	switch c.Incremental {
	case "", ByColumn:
		if t.ChangeColumn == "" {
			return fmt.Errorf("no ChangeColumn (required for incremental mode %q)", ByColumn)
		}
	case ByXmin:
		if t.Query != "" {
			return fmt.Errorf("incremental mode %q reads the xmin of table rows: use a Table, not a Query", ByXmin)
		}
	}
	if t.ValueColumn != "" && len(t.Columns) > 0 {
		return fmt.Errorf("set Columns (the row as JSON) or ValueColumn (one column's value), not both")
	}
	ids := append([]string{t.Schema, t.Table, t.CustomerColumn, t.TenantColumn, t.ChangeColumn, t.DeletedColumn, t.ValueColumn}, t.KeyColumns...)
	ids = append(ids, t.Columns...)
	for _, id := range ids {
		if strings.ContainsRune(id, 0) {
			return fmt.Errorf("identifier with a NUL byte")
		}
	}
	for _, id := range append(append([]string{t.CustomerColumn}, t.KeyColumns...), t.Columns...) {
		if id == "" {
			return fmt.Errorf("empty column name")
		}
	}
	return nil
}
