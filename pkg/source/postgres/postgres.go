// Package postgres is the PostgreSQL source: it reads the tables or queries configured for a data
// class as JSON records, in one consistent REPEATABLE READ READ ONLY transaction per snapshot,
// full or incremental (by a change column, or by xmin). docs/sources.md states the guarantees.
//
// Each row becomes one record: CustomerID from CustomerColumn, Key "<table name>/<key column
// values, path-escaped, joined by '/'>", ContentType "application/json", Data the row as a JSON
// object (row_to_json: columns in table or configured order, so equal rows give equal bytes).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/custos-dev/custos/pkg/source"
)

// Source reads data classes from one PostgreSQL database.
type Source struct {
	cfg  Config
	pool *pgxpool.Pool
}

var (
	_ source.Source   = (*Source)(nil)
	_ source.Exporter = (*Source)(nil)
	_ source.Splitter = (*Source)(nil)
)

// New validates cfg and prepares a connection pool (connections open lazily).
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's message may quote the DSN, password included: say only that it is malformed.
		return nil, fmt.Errorf("%w: postgres: the DSN does not parse", source.ErrInvalidRequest)
	}
	pc.MaxConns = cfg.MaxConns
	rp := pc.ConnConfig.RuntimeParams
	rp["application_name"] = cfg.ApplicationName
	// Change values round-trip through text in cursors: fix the formats so that they parse back
	// the same whatever the server's defaults.
	rp["DateStyle"] = "ISO, YMD"
	rp["TimeZone"] = "UTC"
	rp["extra_float_digits"] = "3"
	// Defence in depth: a backup reader never writes.
	rp["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: pool: %w", err)
	}
	return &Source{cfg: cfg, pool: pool}, nil
}

// Close closes the pool. Snapshots and exports must be closed first.
func (s *Source) Close() error {
	s.pool.Close()
	return nil
}

func (s *Source) class(name string) (Class, Mode, error) {
	cl, ok := s.cfg.Classes[name]
	if !ok {
		return Class{}, "", fmt.Errorf("%w: postgres: %q", source.ErrUnknownClass, name)
	}
	mode := cl.Incremental
	if mode == "" {
		mode = ByColumn
	}
	return cl, mode, nil
}

// Snapshot opens a consistent read of req.DataClass.
func (s *Source) Snapshot(ctx context.Context, req source.Request) (source.Snapshot, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	cl, mode, err := s.class(req.DataClass)
	if err != nil {
		return nil, err
	}
	var prev *cursor
	if req.Method == source.Incremental {
		c, err := decodeCursor(req.Cursor, req.DataClass, mode)
		if err != nil {
			return nil, err
		}
		prev = &c
	}
	var sh *shared
	if req.Shared != "" {
		v, err := decodeShared(req.Shared)
		if err != nil {
			return nil, err
		}
		if v.Class != req.DataClass || v.Method != string(req.Method) {
			return nil, fmt.Errorf("%w: shared snapshot token is for class %q %s, not %q %s", source.ErrInvalidRequest, v.Class, v.Method, req.DataClass, req.Method)
		}
		sh = &v
	}

	sctx, cancel := context.WithCancel(ctx)
	snap := &snapshot{cancel: cancel, ctx: sctx, class: cl, mode: mode, req: req, prev: prev}
	if err := snap.open(s, sh); err != nil {
		_ = snap.Close()
		return nil, err
	}
	return snap, nil
}

// begin acquires a connection and opens the read-only repeatable-read transaction; with a
// snapshot id it imports that exported snapshot.
func (s *Source) begin(ctx context.Context, snapshotID string) (*pgxpool.Conn, pgx.Tx, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: connect: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, nil, fmt.Errorf("postgres: begin: %w", err)
	}
	if snapshotID != "" {
		// A literal is required here; snapshotIDRE vetted it.
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshotID+"'"); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			conn.Release()
			return nil, nil, fmt.Errorf("postgres: import shared snapshot (has its export been closed?): %w", err)
		}
	}
	return conn, tx, nil
}

// snapshotXids returns the (64-bit) xmin and xmax of the transaction's snapshot.
func snapshotXids(ctx context.Context, tx pgx.Tx) (xmin, xmax int64, err error) {
	err = tx.QueryRow(ctx, "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint FROM pg_current_snapshot() AS s").Scan(&xmin, &xmax)
	if err != nil {
		err = fmt.Errorf("postgres: read snapshot: %w", err)
	}
	return xmin, xmax, err
}

// nextCursor works out, before the snapshot is taken, the ByColumn position the snapshot will
// report (see the "safe point" in docs/sources.md):
//
//  1. read the largest committed change value V of every table;
//  2. list every transaction open now in this database (other than backup readers and
//     autovacuum);
//  3. wait until they have all ended.
//
// A transaction that starts after step 2 writes change values above V (the Config contract of
// ChangeColumn), so "change > V" finds it next time; one open at step 2 has ended before the
// snapshot is taken, so the snapshot sees it. If step 3 times out, the position is held back at
// prev (nil: read everything next time).
func (s *Source) nextCursor(ctx context.Context, class string, cl Class, prev *cursor) (cursor, error) {
	c := cursor{V: cursorVersion, Class: class, Mode: ByColumn, Tables: map[string]*bound{}}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return c, fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Release()
	for _, tb := range cl.Tables {
		var v, typ *string
		if err := conn.QueryRow(ctx, maxChangeQuery(tb)).Scan(&v, &typ); err != nil {
			return c, fmt.Errorf("postgres: table %q: read change column: %w", tb.Name, err)
		}
		if typ == nil || changeTypes[*typ] == "" {
			t := "unknown"
			if typ != nil {
				t = *typ
			}
			return c, fmt.Errorf("%w: postgres: table %q: change column type %s is not supported (use a timestamp, date or integer)", source.ErrInvalidRequest, tb.Name, t)
		}
		if v != nil {
			c.Tables[tb.Name] = &bound{Value: *v, Type: *typ}
		}
	}
	// Sessions are left out only when pg_stat_activity positively shows them irrelevant (another
	// database, a backup reader, autovacuum): a column hidden from an unprivileged role is NULL,
	// the comparison is not true, and the session is waited for.
	var open []string
	err = conn.QueryRow(ctx, `SELECT coalesce(array_agg(l.virtualxid), '{}') FROM pg_locks AS l
		WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid()
		AND l.pid NOT IN (SELECT a.pid FROM pg_stat_activity AS a
			WHERE a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
			OR a.application_name = $1 OR a.backend_type = 'autovacuum worker')`,
		s.cfg.ApplicationName).Scan(&open)
	if err != nil {
		return c, fmt.Errorf("postgres: list open transactions: %w", err)
	}
	deadline := time.Now().Add(s.cfg.InFlightWait)
	wait := 10 * time.Millisecond
	for len(open) > 0 {
		var still []string
		if err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(virtualxid), '{}') FROM pg_locks
			WHERE locktype = 'virtualxid' AND granted AND virtualxid = ANY($1)`, open).Scan(&still); err != nil {
			return c, fmt.Errorf("postgres: watch open transactions: %w", err)
		}
		open = still
		if len(open) == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.cfg.Logger.Warn("postgres source: transactions still open after the in-flight wait; cursor not advanced",
				"class", class, "open_transactions", len(open), "waited", s.cfg.InFlightWait)
			held := cursor{V: cursorVersion, Class: class, Mode: ByColumn, Tables: map[string]*bound{}, HeldBack: true}
			if prev != nil {
				held.Tables = prev.Tables
			}
			return held, nil
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 250*time.Millisecond)
	}
	return c, nil
}

// Export holds one snapshot open for the tasks of a backup (pg_export_snapshot). The returned
// Export's Token goes into every task's Request.Shared; close it once every task has opened its
// snapshot.
func (s *Source) Export(ctx context.Context, req source.Request) (source.Export, error) {
	req.Range, req.Shared = source.CustomerRange{}, ""
	if err := req.Validate(); err != nil {
		return nil, err
	}
	cl, mode, err := s.class(req.DataClass)
	if err != nil {
		return nil, err
	}
	var prev *cursor
	if req.Method == source.Incremental {
		c, err := decodeCursor(req.Cursor, req.DataClass, mode)
		if err != nil {
			return nil, err
		}
		prev = &c
	}
	var next cursor
	if mode == ByColumn {
		if next, err = s.nextCursor(ctx, req.DataClass, cl, prev); err != nil {
			return nil, err
		}
	}
	conn, tx, err := s.begin(ctx, "")
	if err != nil {
		return nil, err
	}
	e := &export{conn: conn, tx: tx}
	var id string
	if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&id); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("postgres: export snapshot: %w", err)
	}
	if mode == ByXmin {
		xmin, xmax, err := snapshotXids(ctx, tx)
		if err != nil {
			_ = e.Close()
			return nil, err
		}
		if prev != nil {
			if _, err := prev.window(xmax); err != nil {
				_ = e.Close()
				return nil, err
			}
		}
		next = cursor{V: cursorVersion, Class: req.DataClass, Mode: ByXmin, Xmin: xmin}
	}
	e.cursor = next.encode()
	e.token = shared{Snapshot: id, Class: req.DataClass, Method: string(req.Method), Cursor: e.cursor}.token()
	return e, nil
}

type export struct {
	conn   *pgxpool.Conn
	tx     pgx.Tx
	token  string
	cursor []byte
	once   sync.Once
}

func (e *export) Token() string  { return e.token }
func (e *export) Cursor() []byte { return e.cursor }
func (e *export) Close() error {
	e.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.tx.Rollback(ctx)
		e.conn.Release()
	})
	return nil
}

// Split proposes up to n customer ranges holding about as many customers each.
func (s *Source) Split(ctx context.Context, dataClass string, n int) ([]source.CustomerRange, error) {
	cl, _, err := s.class(dataClass)
	if err != nil {
		return nil, err
	}
	if n <= 1 {
		return source.Ranges(nil), nil
	}
	fractions := make([]float64, n-1)
	for i := range fractions {
		fractions[i] = float64(i+1) / float64(n)
	}
	var points []*string
	err = s.pool.QueryRow(ctx, "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY u.c) FROM ("+customersQuery(cl.Tables)+") AS u", fractions).Scan(&points)
	if err != nil {
		return nil, fmt.Errorf("postgres: split class %q: %w", dataClass, err)
	}
	var ps []string
	for _, p := range points {
		if p != nil {
			ps = append(ps, *p)
		}
	}
	return source.Ranges(ps), nil
}

type snapshot struct {
	ctx    context.Context
	cancel context.CancelFunc
	class  Class
	mode   Mode
	req    source.Request
	prev   *cursor

	conn   *pgxpool.Conn
	tx     pgx.Tx
	xw     *xminWindow
	next   []byte
	table  int
	rows   pgx.Rows
	nkeys  int
	ctype  string // the content type of the current table's records
	done   bool
	err    error
	closed bool
}

func (sn *snapshot) open(s *Source, sh *shared) error {
	ctx := sn.ctx
	var next cursor
	if sn.mode == ByColumn && sh == nil {
		var err error
		if next, err = s.nextCursor(ctx, sn.req.DataClass, sn.class, sn.prev); err != nil {
			return err
		}
	}
	id := ""
	if sh != nil {
		id = sh.Snapshot
	}
	conn, tx, err := s.begin(ctx, id)
	if err != nil {
		return err
	}
	sn.conn, sn.tx = conn, tx
	if sn.mode == ByXmin {
		xmin, xmax, err := snapshotXids(ctx, tx)
		if err != nil {
			return err
		}
		if sn.prev != nil {
			w, err := sn.prev.window(xmax)
			if err != nil {
				return err
			}
			sn.xw = &w
		}
		next = cursor{V: cursorVersion, Class: sn.req.DataClass, Mode: ByXmin, Xmin: xmin}
	}
	if sh != nil {
		sn.next = sh.Cursor
	} else {
		sn.next = next.encode()
	}
	return nil
}

// Next streams the next row as a record.
func (sn *snapshot) Next(ctx context.Context) (source.Record, error) {
	if sn.err != nil {
		return source.Record{}, sn.err
	}
	if sn.closed {
		return source.Record{}, errors.New("postgres: snapshot is closed")
	}
	if sn.done {
		return source.Record{}, io.EOF
	}
	if err := ctx.Err(); err != nil {
		sn.err = err
		sn.cancel()
		return source.Record{}, err
	}
	// The caller's ctx bounds this call; cancelling it ends the snapshot.
	stop := context.AfterFunc(ctx, sn.cancel)
	defer stop()
	rec, err := sn.next1()
	if err != nil && err != io.EOF {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		sn.err = err
	}
	return rec, err
}

func (sn *snapshot) next1() (source.Record, error) {
	for {
		if sn.rows == nil {
			if sn.table == len(sn.class.Tables) {
				sn.done = true
				return source.Record{}, io.EOF
			}
			tb := sn.class.Tables[sn.table]
			var lower *bound
			if sn.prev != nil && sn.mode == ByColumn {
				lower = sn.prev.Tables[tb.Name]
			}
			q, err := buildRowQuery(tb, sn.req.Method == source.Full, lower, sn.xw, sn.req.Range)
			if err != nil {
				return source.Record{}, err
			}
			rows, err := sn.tx.Query(sn.ctx, q.sql, q.args...)
			if err != nil {
				return source.Record{}, fmt.Errorf("postgres: table %q: %w", tb.Name, err)
			}
			ctype, err := contentType(tb, rows.FieldDescriptions())
			if err != nil {
				rows.Close()
				return source.Record{}, fmt.Errorf("%w: postgres: table %q: %v", source.ErrInvalidRequest, tb.Name, err)
			}
			sn.rows, sn.nkeys, sn.ctype = rows, len(tb.KeyColumns), ctype
		}
		tb := sn.class.Tables[sn.table]
		if !sn.rows.Next() {
			err := sn.rows.Err()
			sn.rows.Close()
			sn.rows = nil
			if err != nil {
				return source.Record{}, fmt.Errorf("postgres: table %q: %w", tb.Name, err)
			}
			sn.table++
			continue
		}
		var cust, tenant *string
		var doc []byte // scanned as bytes: a string would be copied once more into the record
		var deleted bool
		keys := make([]*string, sn.nkeys)
		dest := []any{&cust, &tenant, &deleted}
		for i := range keys {
			dest = append(dest, &keys[i])
		}
		dest = append(dest, &doc)
		if err := sn.rows.Scan(dest...); err != nil {
			return source.Record{}, fmt.Errorf("postgres: table %q: scan: %w", tb.Name, err)
		}
		// Error texts name columns, never values: values may be customer data.
		if cust == nil {
			return source.Record{}, fmt.Errorf("%w: postgres: table %q: a row has NULL in customer column %q", source.ErrMalformed, tb.Name, tb.CustomerColumn)
		}
		rec := source.Record{Tenant: sn.class.Tenant, CustomerID: *cust, ContentType: sn.ctype, Deleted: deleted}
		if tb.TenantColumn != "" {
			if tenant == nil || *tenant == "" {
				return source.Record{}, fmt.Errorf("%w: postgres: table %q: a row has no tenant in column %q", source.ErrMalformed, tb.Name, tb.TenantColumn)
			}
			rec.Tenant = *tenant
		}
		var key strings.Builder
		key.WriteString(tb.Name)
		for i, k := range keys {
			if k == nil {
				return source.Record{}, fmt.Errorf("%w: postgres: table %q: a row has NULL in key column %q", source.ErrMalformed, tb.Name, tb.KeyColumns[i])
			}
			key.WriteByte('/')
			key.WriteString(url.PathEscape(*k))
		}
		rec.Key = key.String()
		if !deleted {
			rec.Data = doc
			if rec.Data == nil { // a NULL value column: an empty record, not a tombstone
				rec.Data = []byte{}
			}
		}
		return rec, nil
	}
}

// contentType is the content type of a table's records, from the type of the value column
// (the last one of the row query) when the table sets one; the row's JSON otherwise.
func contentType(tb Table, fields []pgconn.FieldDescription) (string, error) {
	if tb.ValueColumn == "" {
		return "application/json", nil
	}
	if len(fields) == 0 {
		return "", fmt.Errorf("value column %q: no result columns", tb.ValueColumn)
	}
	switch oid := fields[len(fields)-1].DataTypeOID; oid {
	case pgtype.JSONOID, pgtype.JSONBOID:
		return "application/json", nil
	case pgtype.TextOID, pgtype.VarcharOID:
		return "text/plain; charset=utf-8", nil
	case pgtype.ByteaOID:
		return "application/octet-stream", nil
	default:
		return "", fmt.Errorf("value column %q has type oid %d: use json, jsonb, text, varchar or bytea (or Columns for the row's JSON)", tb.ValueColumn, oid)
	}
}

// Cursor returns the position to store once this snapshot commits.
func (sn *snapshot) Cursor() ([]byte, error) {
	if !sn.done {
		return nil, source.ErrCursorNotReady
	}
	return sn.next, nil
}

// Close ends the transaction and returns the connection.
func (sn *snapshot) Close() error {
	if sn.closed {
		return nil
	}
	sn.closed = true
	if sn.rows != nil {
		sn.rows.Close()
		sn.rows = nil
	}
	if sn.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = sn.tx.Rollback(ctx)
		cancel()
	}
	if sn.conn != nil {
		sn.conn.Release()
	}
	sn.cancel()
	return nil
}
