package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/internal/pgtest"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// db is a fresh database with a writer pool for the test to change data through.
type db struct {
	dsn string
	w   *pgxpool.Pool
}

func newDB(t testing.TB, srv *pgtest.Server, schema string) db {
	t.Helper()
	dsn := srv.CreateDatabase(t)
	w, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	if schema != "" {
		if _, err := w.Exec(context.Background(), schema); err != nil {
			t.Fatalf("schema: %v", err)
		}
	}
	return db{dsn: dsn, w: w}
}

func (d db) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := d.w.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func newSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func jsonField(t testing.TB, rec source.Record, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(rec.Data, &m); err != nil {
		t.Fatalf("record %q: data %q is not a JSON object: %v", rec.Key, rec.Data, err)
	}
	v, _ := m[field].(string)
	return v
}

const itemsSchema = `CREATE TABLE items (
	customer_id text NOT NULL,
	key text NOT NULL,
	value text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	deleted boolean NOT NULL DEFAULT false,
	PRIMARY KEY (customer_id, key))`

// TestConformance runs the source suite in three configurations: a timestamp change column with
// soft deletes, a query with a sequence change column and hard deletes, and xmin.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)

	t.Run("UpdatedAtSoftDelete", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
			d := newDB(t, srv, itemsSchema)
			s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"critical": {
				Tenant: "acme",
				Tables: []Table{{Name: "items", Table: "items", CustomerColumn: "customer_id",
					KeyColumns: []string{"key"}, ChangeColumn: "updated_at", DeletedColumn: "deleted"}},
			}}})
			return sourcetest.Harness{
				Source: s, Class: "critical", Tenant: "acme", Tombstones: true,
				Put: func(t testing.TB, c, k, v string) {
					d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ($1, $2, $3)
						ON CONFLICT (customer_id, key) DO UPDATE SET value = excluded.value, updated_at = now(), deleted = false`, c, k, v)
				},
				Delete: func(t testing.TB, c, k string) {
					d.exec(t, `UPDATE items SET deleted = true, updated_at = now() WHERE customer_id = $1 AND key = $2`, c, k)
				},
				RecordKey: func(k string) string { return "items/" + url.PathEscape(k) },
				Value:     func(t testing.TB, rec source.Record) string { return jsonField(t, rec, "value") },
			}
		})
	})

	t.Run("QuerySequenceHardDelete", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
			d := newDB(t, srv, `CREATE SEQUENCE docs_version;
				CREATE TABLE docs (
					tenant text NOT NULL, cust bigint NOT NULL, path text NOT NULL, body text NOT NULL,
					version bigint NOT NULL DEFAULT nextval('docs_version'),
					PRIMARY KEY (cust, path))`)
			s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"important": {
				// The query turns numeric customer ids into the suite's "cust-007" form.
				Tables: []Table{{Name: "docs", Query: "SELECT tenant, 'cust-' || lpad(cust::text, 3, '0') AS cust, path, body, version FROM docs;",
					TenantColumn: "tenant", CustomerColumn: "cust", KeyColumns: []string{"path"},
					Columns: []string{"path", "body"}, ChangeColumn: "version"}},
			}}})
			// Customer ids are numbers in the table: the suite's "cust-007" is stored as 7.
			num := func(c string) int64 {
				var n int64
				for _, r := range strings.TrimPrefix(c, "cust-") {
					n = n*10 + int64(r-'0')
				}
				return n
			}
			return sourcetest.Harness{
				Source: s, Class: "important", Tenant: "globex",
				Put: func(t testing.TB, c, k, v string) {
					d.exec(t, `INSERT INTO docs (tenant, cust, path, body) VALUES ('globex', $1, $2, $3)
						ON CONFLICT (cust, path) DO UPDATE SET body = excluded.body, version = nextval('docs_version')`, num(c), k, v)
				},
				Delete: func(t testing.TB, c, k string) {
					d.exec(t, `DELETE FROM docs WHERE cust = $1 AND path = $2`, num(c), k)
				},
				RecordKey: func(k string) string { return "docs/" + url.PathEscape(k) },
				Value: func(t testing.TB, rec source.Record) string {
					// Columns are exactly path and body, in that order.
					if !strings.HasPrefix(string(rec.Data), `{"path":`) || strings.Contains(string(rec.Data), "version") {
						t.Errorf("row JSON %s does not follow Columns", rec.Data)
					}
					return jsonField(t, rec, "body")
				},
			}
		})
	})

	t.Run("Xmin", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
			d := newDB(t, srv, `CREATE TABLE kv (c text, k text, v text, PRIMARY KEY (c, k))`)
			s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"non_essential": {
				Tenant: "initech", Incremental: ByXmin,
				Tables: []Table{{Name: "kv", Table: "kv", CustomerColumn: "c", KeyColumns: []string{"k"}}},
			}}})
			return sourcetest.Harness{
				Source: s, Class: "non_essential", Tenant: "initech", Overlap: true,
				Put: func(t testing.TB, c, k, v string) {
					d.exec(t, `INSERT INTO kv VALUES ($1, $2, $3) ON CONFLICT (c, k) DO UPDATE SET v = excluded.v`, c, k, v)
				},
				Delete: func(t testing.TB, c, k string) {
					d.exec(t, `DELETE FROM kv WHERE c = $1 AND k = $2`, c, k)
				},
				RecordKey: func(k string) string { return "kv/" + url.PathEscape(k) },
				Value:     func(t testing.TB, rec source.Record) string { return jsonField(t, rec, "v") },
			}
		})
	})
}

// readAll runs a snapshot to its end and returns the records by key and the cursor.
func readAll(t testing.TB, s *Source, req source.Request) (map[string]source.Record, []byte) {
	t.Helper()
	ctx := context.Background()
	snap, err := s.Snapshot(ctx, req)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Close()
	out := map[string]source.Record{}
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out[rec.CustomerID+" "+rec.Key] = rec
	}
	c, err := snap.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	return out, c
}

// TestInFlightTransaction: a transaction that took its change value (now()) before a later
// write committed, and commits only after the snapshot started, is not lost. With time to wait
// the snapshot waits for it and contains it; without, the cursor is held back and the next
// incremental contains it.
func TestInFlightTransaction(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	ctx := context.Background()
	cfg := func(dsn string, wait time.Duration) Config {
		return Config{DSN: dsn, InFlightWait: wait, Classes: map[string]Class{"critical": {Tenant: "acme",
			Tables: []Table{{Name: "items", Table: "items", CustomerColumn: "customer_id", KeyColumns: []string{"key"}, ChangeColumn: "updated_at"}}}}}
	}
	// open starts a transaction that writes key "slow" with updated_at = its start time, then
	// commits a later write "fast" from another session.
	open := func(t *testing.T, d db) pgx.Tx {
		tx, err := d.w.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		if _, err := tx.Exec(ctx, `INSERT INTO items (customer_id, key, value) VALUES ('c1', 'slow', 'x')`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ('c1', 'fast', 'y')`)
		return tx
	}

	t.Run("Waits", func(t *testing.T) {
		d := newDB(t, srv, itemsSchema)
		s := newSource(t, cfg(d.dsn, time.Minute))
		d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ('c0', 'seed', 's')`)
		_, c0 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full})
		tx := open(t, d)
		committed := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			committed <- tx.Commit(ctx)
		}()
		defer func() {
			if err := <-committed; err != nil {
				t.Error(err)
			}
		}()
		start := time.Now()
		got, c1 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c0})
		if time.Since(start) < 250*time.Millisecond {
			t.Errorf("snapshot did not wait for the open transaction")
		}
		if len(got) != 2 || got["c1 items/slow"].Key == "" || got["c1 items/fast"].Key == "" {
			t.Errorf("incremental = %v, want slow and fast", keysOf(got))
		}
		again, _ := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c1})
		if len(again) != 0 {
			t.Errorf("next incremental = %v, want nothing", keysOf(again))
		}
	})

	// A reader without privileges to see other users' sessions in full must still wait for them.
	t.Run("WaitsAsUnprivilegedRole", func(t *testing.T) {
		d := newDB(t, srv, itemsSchema+`; CREATE ROLE reader LOGIN; GRANT SELECT ON items TO reader`)
		s := newSource(t, cfg(strings.Replace(d.dsn, "//"+pgtest.Superuser+"@", "//reader@", 1), time.Minute))
		d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ('c0', 'seed', 's')`)
		_, c0 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full})
		tx := open(t, d)
		committed := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			committed <- tx.Commit(ctx)
		}()
		defer func() {
			if err := <-committed; err != nil {
				t.Error(err)
			}
		}()
		got, _ := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c0})
		if got["c1 items/slow"].Key == "" {
			t.Errorf("incremental = %v: the open transaction's row is missing", keysOf(got))
		}
	})

	t.Run("HeldBack", func(t *testing.T) {
		d := newDB(t, srv, itemsSchema)
		s := newSource(t, cfg(d.dsn, 100*time.Millisecond))
		d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ('c0', 'seed', 's')`)
		_, c0 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full})
		tx := open(t, d)
		got, c1 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c0})
		if len(got) != 1 || got["c1 items/fast"].Key == "" {
			t.Errorf("incremental = %v, want fast only", keysOf(got))
		}
		var cur cursor
		if err := json.Unmarshal(c1, &cur); err != nil || !cur.HeldBack {
			t.Errorf("cursor %s is not marked held back", c1)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		next, _ := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c1})
		if next["c1 items/slow"].Key == "" {
			t.Errorf("the late transaction's row is lost: next incremental = %v", keysOf(next))
		}
	})

	t.Run("Xmin", func(t *testing.T) {
		d := newDB(t, srv, itemsSchema)
		c := cfg(d.dsn, time.Minute)
		cl := c.Classes["critical"]
		cl.Incremental = ByXmin
		c.Classes["critical"] = cl
		s := newSource(t, c)
		d.exec(t, `INSERT INTO items (customer_id, key, value) VALUES ('c0', 'seed', 's')`)
		_, c0 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full})
		tx := open(t, d)
		got, c1 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c0})
		if len(got) != 1 || got["c1 items/fast"].Key == "" {
			t.Errorf("incremental = %v, want fast only", keysOf(got))
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		next, _ := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c1})
		if next["c1 items/slow"].Key == "" {
			t.Errorf("the late transaction's row is lost: next incremental = %v", keysOf(next))
		}
	})
}

func keysOf(m map[string]source.Record) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestHostileIdentifiers: names from configuration are quoted, never spliced into SQL.
func TestHostileIdentifiers(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	d := newDB(t, srv, `CREATE SCHEMA "s""; DROP TABLE canary; --";
		CREATE TABLE canary (x int);
		CREATE TABLE "s""; DROP TABLE canary; --"."t""x" ("cu""st" text, "k; DROP TABLE canary" text, "when" timestamptz DEFAULT now());
		INSERT INTO "s""; DROP TABLE canary; --"."t""x" VALUES ('c/1', 'a/b c', now())`)
	s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"critical": {Tenant: "acme",
		Tables: []Table{{Name: "odd", Schema: `s"; DROP TABLE canary; --`, Table: `t"x`,
			CustomerColumn: `cu"st`, KeyColumns: []string{"k; DROP TABLE canary"}, ChangeColumn: "when"}}}}})
	got, c := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full, Range: source.CustomerRange{From: "c", To: "d"}})
	rec, ok := got["c/1 odd/a%2Fb%20c"]
	if !ok || len(got) != 1 {
		t.Fatalf("records = %v", keysOf(got))
	}
	if !strings.Contains(string(rec.Data), `"cu\"st":"c/1"`) {
		t.Errorf("row JSON %s", rec.Data)
	}
	if _, c2 := readAll(t, s, source.Request{DataClass: "critical", Method: source.Incremental, Cursor: c}); len(c2) == 0 {
		t.Error("no cursor")
	}
	d.exec(t, "SELECT * FROM canary") // still there
}

func TestConfigAndInputErrors(t *testing.T) {
	t.Parallel()
	good := Table{Name: "t", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "u"}
	for name, cfg := range map[string]Config{
		"no DSN":            {Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{good}}}},
		"no classes":        {DSN: "postgres://localhost/x"},
		"bad name":          {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{{Name: "Bad/Name", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "u"}}}}},
		"no tenant":         {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tables: []Table{good}}}},
		"no change column":  {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{{Name: "t", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}}}}}},
		"xmin on query":     {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Incremental: ByXmin, Tables: []Table{{Name: "t", Query: "SELECT 1", CustomerColumn: "c", KeyColumns: []string{"k"}}}}}},
		"table and query":   {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{{Name: "t", Table: "t", Query: "SELECT 1", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "u"}}}}},
		"duplicate names":   {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{good, good}}}},
		"columns and value": {DSN: "postgres://localhost/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{{Name: "t", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "u", Columns: []string{"v"}, ValueColumn: "v"}}}}},
		"bad DSN":           {DSN: "postgres://user:s3cretpw@[bad/x", Classes: map[string]Class{"a": {Tenant: "x", Tables: []Table{good}}}},
	} {
		_, err := New(cfg)
		if !errors.Is(err, source.ErrInvalidRequest) {
			t.Errorf("%s: New = %v, want ErrInvalidRequest", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("%s: error reveals the password: %v", name, err)
		}
	}

	srv := pgtest.Start(t)
	d := newDB(t, srv, `CREATE TABLE t (c text, k text, u timestamptz DEFAULT now(), f float8 DEFAULT 1);
		INSERT INTO t (c, k) VALUES (NULL, 'x')`)
	s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{
		"a":     {Tenant: "x", Tables: []Table{good}},
		"float": {Tenant: "x", Tables: []Table{{Name: "t", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "f"}}},
		"xmin":  {Tenant: "x", Incremental: ByXmin, Tables: []Table{{Name: "t", Table: "t", CustomerColumn: "c", KeyColumns: []string{"k"}}}},
	}})
	ctx := context.Background()

	snap, err := s.Snapshot(ctx, source.Request{DataClass: "a", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	_, err = snap.Next(ctx)
	snap.Close()
	if !errors.Is(err, source.ErrMalformed) || strings.Contains(err.Error(), "'x'") {
		t.Errorf("NULL customer: %v, want ErrMalformed naming the column only", err)
	}

	if _, err := s.Snapshot(ctx, source.Request{DataClass: "float", Method: source.Full}); !errors.Is(err, source.ErrInvalidRequest) {
		t.Errorf("float change column: %v, want ErrInvalidRequest", err)
	}

	for name, c := range map[string]cursor{
		"future": {V: 1, Class: "xmin", Mode: ByXmin, Xmin: 1 << 40},
		"column": {V: 1, Class: "xmin", Mode: ByColumn},
		"class":  {V: 1, Class: "a", Mode: ByXmin, Xmin: 5},
	} {
		_, err := s.Snapshot(ctx, source.Request{DataClass: "xmin", Method: source.Incremental, Cursor: c.encode()})
		if !errors.Is(err, source.ErrInvalidCursor) {
			t.Errorf("%s cursor: %v, want ErrInvalidCursor", name, err)
		}
	}
	forged := cursor{V: 1, Class: "a", Mode: ByColumn, Tables: map[string]*bound{"t": {Value: "1", Type: "int); DROP TABLE t; --"}}}
	if _, err := s.Snapshot(ctx, source.Request{DataClass: "a", Method: source.Incremental, Cursor: forged.encode()}); !errors.Is(err, source.ErrInvalidCursor) {
		t.Errorf("forged cursor type: %v, want ErrInvalidCursor", err)
	}
	if _, err := s.Snapshot(ctx, source.Request{DataClass: "a", Method: source.Full, Shared: "not-a-token"}); !errors.Is(err, source.ErrInvalidRequest) {
		t.Errorf("bad shared token: %v", err)
	}
}

// TestValueColumn: a table that holds one document per row gives each document back as it is
// stored, with the content type of its column; a column of another type is refused.
func TestValueColumn(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	d := newDB(t, srv, `CREATE TABLE docs (c text, k text, u timestamptz DEFAULT now(),
		js json, jb jsonb, tx text, b bytea, n int)`)
	json := `{"b": 1,  "a": "x\"y"}`
	bin := []byte{0, 0xff, 'x', 0x80, '\\'}
	d.exec(t, `INSERT INTO docs (c, k, js, jb, tx, b, n) VALUES ('c1', 'd1', $1::text::json, $1::text::jsonb, 'plain "text"', $2, 7),
		('c1', 'd2', NULL, NULL, NULL, NULL, NULL)`, json, bin)
	table := func(name, value string) Table {
		return Table{Name: name, Table: "docs", CustomerColumn: "c", KeyColumns: []string{"k"}, ChangeColumn: "u", ValueColumn: value}
	}
	s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{
		"docs": {Tenant: "x", Tables: []Table{table("js", "js"), table("jb", "jb"), table("tx", "tx"), table("b", "b")}},
		"int":  {Tenant: "x", Tables: []Table{table("n", "n")}},
	}})
	got, _ := readAll(t, s, source.Request{DataClass: "docs", Method: source.Full})
	for key, want := range map[string]struct {
		data, ctype string
	}{
		"c1 js/d1": {json, "application/json"},
		"c1 jb/d1": {`{"a": "x\"y", "b": 1}`, "application/json"}, // jsonb keeps PostgreSQL's form
		"c1 tx/d1": {`plain "text"`, "text/plain; charset=utf-8"},
		"c1 b/d1":  {string(bin), "application/octet-stream"},
		"c1 js/d2": {"", "application/json"},
		"c1 b/d2":  {"", "application/octet-stream"},
	} {
		rec, ok := got[key]
		if !ok {
			t.Errorf("%s: missing; got %v", key, keysOf(got))
			continue
		}
		if string(rec.Data) != want.data || rec.Data == nil || rec.ContentType != want.ctype || rec.Deleted {
			t.Errorf("%s: data %q (nil %v), type %q, deleted %v; want %q, %q", key, rec.Data, rec.Data == nil, rec.ContentType, rec.Deleted, want.data, want.ctype)
		}
	}
	if len(got) != 8 {
		t.Errorf("records = %v, want 8", keysOf(got))
	}

	ctx := context.Background()
	snap, err := s.Snapshot(ctx, source.Request{DataClass: "int", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if _, err := snap.Next(ctx); !errors.Is(err, source.ErrInvalidRequest) || !strings.Contains(err.Error(), `value column "n"`) {
		t.Errorf("an int value column: %v, want ErrInvalidRequest naming the column", err)
	}
}

// TestCancelledNext: cancelling the context of a Next ends the snapshot with that error and
// leaves the source usable.
func TestCancelledNext(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	d := newDB(t, srv, itemsSchema+`; INSERT INTO items (customer_id, key, value) SELECT 'c' || (i % 10), 'k' || i, 'v' FROM generate_series(1, 5000) AS i`)
	s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"critical": {Tenant: "acme",
		Tables: []Table{{Name: "items", Table: "items", CustomerColumn: "customer_id", KeyColumns: []string{"key"}, ChangeColumn: "updated_at"}}}}})
	snap, err := s.Snapshot(context.Background(), source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := snap.Next(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := snap.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel = %v, want context.Canceled", err)
	}
	snap.Close()
	got, _ := readAll(t, s, source.Request{DataClass: "critical", Method: source.Full})
	if len(got) != 5000 {
		t.Errorf("after a cancelled snapshot, full = %d records, want 5000", len(got))
	}
}

// TestMemoryBounded streams a table of about 100 MB and checks that the live heap stays far
// below that: rows are streamed, never collected.
// It runs alone: the other tests are parallel and wait until the sequential ones are done.
func TestMemoryBounded(t *testing.T) {
	srv := pgtest.Start(t)
	d := newDB(t, srv, itemsSchema+`; INSERT INTO items (customer_id, key, value)
		SELECT 'c' || (i % 100), 'k' || i, repeat(md5(i::text), 128) FROM generate_series(1, 25000) AS i`)
	s := newSource(t, Config{DSN: d.dsn, Classes: map[string]Class{"critical": {Tenant: "acme",
		Tables: []Table{{Name: "items", Table: "items", CustomerColumn: "customer_id", KeyColumns: []string{"key"}, ChangeColumn: "updated_at"}}}}})
	ctx := context.Background()
	snap, err := s.Snapshot(ctx, source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var n, bytes int
	var peak uint64
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		bytes += len(rec.Data)
		if n%2500 == 0 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	t.Logf("%d records, %d MB of row JSON, peak live heap %d MB", n, bytes>>20, peak>>20)
	if n != 25000 || bytes < 100_000_000 {
		t.Fatalf("read %d records, %d bytes", n, bytes)
	}
	if peak > 32<<20 {
		t.Errorf("live heap reached %d MB while streaming: rows are being held", peak>>20)
	}
}
