package config_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/internal/pgtest"
	"github.com/custos-dev/custos/pkg/source"
)

// base is a valid configuration without sources or classes.
const base = "nats: {url: u}\nkeys: {file: k}\ntargets: [{name: primary, kind: fs, path: p}]\n"

const withSources = base + `
sources:
  - name: shop
    kind: postgres
    dsn_env: CUSTOS_CONFIG_TEST_NEVER_SET
    in_flight_wait: 30s
    max_conns: 8
    classes:
      critical:
        tenant: acme
        incremental: column
        tables:
          - name: orders
            schema: public
            table: orders
            columns: [id, customer_id, total, updated_at]
            customer_column: customer_id
            key_columns: [id]
            change_column: updated_at
            deleted_column: deleted_at
          - name: invoices
            query: SELECT * FROM billing.invoices
            customer_column: customer_id
            key_columns: [year, number]
            tenant_column: tenant
            change_column: updated_at
  - name: crm
    kind: http
    tenant: acme
    auth_header: Authorization
    auth_env: CUSTOS_CONFIG_TEST_NEVER_SET_EITHER
    page_size: 200
    classes:
      important: {url: "https://crm.internal/custos/export"}
classes:
  critical: {targets: [primary], source: shop, snapshot_tasks: 8}
  important: {targets: [primary], source: crm}
  events: {targets: [primary]}
`

// Sources load as written; the environment variables they name need not be set until the
// sources are opened.
func TestLoadSources(t *testing.T) {
	t.Parallel()
	c, err := config.Load(writeConfig(t, withSources))
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Source{
		{Name: "shop", Kind: "postgres", DSNEnv: "CUSTOS_CONFIG_TEST_NEVER_SET", InFlightWait: 30 * time.Second, MaxConns: 8,
			Classes: map[string]config.SourceClass{"critical": {Tenant: "acme", Incremental: "column", Tables: []config.SourceTable{
				{Name: "orders", Schema: "public", Table: "orders", Columns: []string{"id", "customer_id", "total", "updated_at"},
					CustomerColumn: "customer_id", KeyColumns: []string{"id"}, ChangeColumn: "updated_at", DeletedColumn: "deleted_at"},
				{Name: "invoices", Query: "SELECT * FROM billing.invoices", CustomerColumn: "customer_id",
					KeyColumns: []string{"year", "number"}, TenantColumn: "tenant", ChangeColumn: "updated_at"},
			}}}},
		{Name: "crm", Kind: "http", Tenant: "acme", AuthHeader: "Authorization", AuthEnv: "CUSTOS_CONFIG_TEST_NEVER_SET_EITHER", PageSize: 200,
			Classes: map[string]config.SourceClass{"important": {URL: "https://crm.internal/custos/export"}}},
	}
	if !reflect.DeepEqual(c.Sources, want) {
		t.Errorf("sources\n got %+v\nwant %+v", c.Sources, want)
	}
	for name, want := range map[string]struct {
		source string
		tasks  int
	}{"critical": {"shop", 8}, "important": {"crm", 0}, "events": {"", 0}} {
		if cl := c.Classes[name]; cl.Source != want.source || cl.SnapshotTasks != want.tasks {
			t.Errorf("classes.%s: source %q, snapshot_tasks %d; want %q, %d", name, cl.Source, cl.SnapshotTasks, want.source, want.tasks)
		}
	}
}

func TestSourcesErrors(t *testing.T) {
	t.Parallel()
	const pg = "{name: db, kind: postgres, dsn_env: DB_DSN, classes: {critical: {tenant: acme, tables: [{name: t, table: t, customer_column: c, key_columns: [k], change_column: u}]}}}"
	const api = "{name: api, kind: http, classes: {critical: {url: 'https://api.internal/export'}}}"
	uses := func(src string) string { return "classes: {critical: {targets: [primary], source: " + src + "}}\n" }
	for _, tc := range []struct {
		name    string
		yaml    string
		want    []string
		notWant string // a secret the error must not repeat
	}{
		{"source without name", "sources: [" + strings.Replace(pg, "name: db, ", "", 1) + "]\n" + uses("db"),
			[]string{"sources[0]: name is required", `classes.critical: unknown source "db"`}, ""},
		{"duplicate source", "sources: [" + pg + ", " + pg + "]\n" + uses("db"), []string{`sources[1]: duplicate name "db"`}, ""},
		{"unknown kind", "sources: [" + strings.Replace(pg, "kind: postgres", "kind: mysql", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": unknown kind "mysql" (supported: postgres, http)`}, ""},
		{"no kind", "sources: [" + strings.Replace(pg, "kind: postgres, ", "", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": unknown kind ""`}, ""},
		{"postgres without dsn_env", "sources: [" + strings.Replace(pg, "dsn_env: DB_DSN, ", "", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": dsn_env is required for kind postgres`}, ""},
		{"DSN in dsn_env", "sources: [" + strings.Replace(pg, "dsn_env: DB_DSN", "dsn_env: 'postgres://custos:s3cret@db/shop'", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": dsn_env must be the name of an environment variable`}, "s3cret"},
		{"http without url", "sources: [" + strings.Replace(api, "url: 'https://api.internal/export'", "url: ''", 1) + "]\n" + uses("api"),
			[]string{`sources[0] "api": classes.critical: url is required for kind http`}, ""},
		{"unknown source", "sources: [" + pg + "]\n" + uses("nope"), []string{`classes.critical: unknown source "nope"`}, ""},
		{"source lacks the class", "sources: [" + strings.Replace(pg, "{critical:", "{important:", 1) + "]\n" + uses("db"),
			[]string{`classes.critical: source "db" has no class "critical"`}, ""},
		{"negative snapshot_tasks", "sources: [" + pg + "]\nclasses: {critical: {targets: [primary], source: db, snapshot_tasks: -1}}\n",
			[]string{"classes.critical: snapshot_tasks must not be negative"}, ""},
		{"source without classes", "sources: [{name: db, kind: postgres, dsn_env: DB_DSN}]\nclasses: {critical: {targets: [primary]}}\n",
			[]string{`sources[0] "db": no classes`}, ""},
		{"postgres class without tables", "sources: [{name: db, kind: postgres, dsn_env: DB_DSN, classes: {critical: {tenant: acme}}}]\n" + uses("db"),
			[]string{`sources[0] "db": classes.critical: tables are required for kind postgres`}, ""},
		{"unknown incremental", "sources: [" + strings.Replace(pg, "tenant: acme", "tenant: acme, incremental: wal", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": classes.critical: unknown incremental "wal" (supported: column, xmin)`}, ""},
		{"http setting on postgres", "sources: [" + strings.Replace(pg, "dsn_env: DB_DSN", "dsn_env: DB_DSN, tenant: acme, page_size: 10", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": tenant, page_size: not a setting of kind postgres`}, ""},
		{"postgres setting on http", "sources: [" + strings.Replace(api, "{url:", "{tenant: acme, url:", 1) + "]\n" + uses("api"),
			[]string{`sources[0] "api": classes.critical.tenant: not a setting of kind http`}, ""},
		{"auth_header without auth_env", "sources: [" + strings.Replace(api, "kind: http", "kind: http, auth_header: Authorization", 1) + "]\n" + uses("api"),
			[]string{`sources[0] "api": auth_header and auth_env go together`}, ""},
		{"token in auth_env", "sources: [" + strings.Replace(api, "kind: http", "kind: http, auth_header: Authorization, auth_env: 'Bearer t0ken'", 1) + "]\n" + uses("api"),
			[]string{`sources[0] "api": auth_env must be the name of an environment variable`}, "t0ken"},
		{"negative max_conns", "sources: [" + strings.Replace(pg, "dsn_env: DB_DSN", "dsn_env: DB_DSN, max_conns: -1", 1) + "]\n" + uses("db"),
			[]string{`sources[0] "db": in_flight_wait, max_conns and page_size must not be negative`}, ""},
		{"unknown table field", "sources: [" + strings.Replace(pg, "customer_column", "customer_col", 1) + "]\n" + uses("db"),
			[]string{"customer_col"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, base+tc.yaml)
			c, err := config.Load(path)
			if err == nil {
				t.Fatalf("Load accepted %q: %+v", tc.yaml, c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q repeats the secret %q", err, tc.notWant)
			}
		})
	}
}

// A class with a postgres source gets a source that reads it; classes without one are absent.
func TestOpenSourcesPostgres(t *testing.T) {
	dsn := pgtest.StartDatabase(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	for _, sql := range []string{
		`CREATE TABLE orders (id int PRIMARY KEY, customer_id text NOT NULL, total int NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO orders (id, customer_id, total) VALUES (1, 'c-1', 12), (2, 'c-2', 30)`,
	} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Setenv("CUSTOS_CONFIG_TEST_DSN", dsn)
	c, err := config.Load(writeConfig(t, base+`
sources:
  - name: shop
    kind: postgres
    dsn_env: CUSTOS_CONFIG_TEST_DSN
    max_conns: 2
    classes:
      critical:
        tenant: acme
        tables: [{name: orders, table: orders, customer_column: customer_id, key_columns: [id], change_column: updated_at}]
classes:
  critical: {targets: [primary], source: shop}
  events: {targets: [primary]}
`))
	if err != nil {
		t.Fatal(err)
	}
	srcs, closeSources, err := c.OpenSources(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := closeSources(); err != nil {
			t.Error(err)
		}
	}()
	if _, ok := srcs["events"]; ok || len(srcs) != 1 {
		t.Fatalf("sources by class: %v", srcs)
	}
	src := srcs["critical"]
	if _, ok := src.(source.Splitter); !ok {
		t.Errorf("postgres source %T is not a source.Splitter", src)
	}
	snap, err := src.Snapshot(t.Context(), source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var got []string
	for {
		rec, err := snap.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", rec.Tenant, rec.CustomerID, rec.Key))
	}
	slices.Sort(got)
	if want := []string{"acme c-1 orders/1", "acme c-2 orders/2"}; !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

// An http source sends the credential from auth_env in auth_header.
func TestOpenSourcesHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "k-123" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"records": [{"customer_id": "c-1", "key": "tickets/%s", "data": {}}], "watermark": "w1"}`, r.URL.Query().Get("limit"))
	}))
	defer srv.Close()
	t.Setenv("CUSTOS_CONFIG_TEST_API_KEY", "k-123")
	c, err := config.Load(writeConfig(t, base+`
sources:
  - {name: crm, kind: http, tenant: acme, auth_header: X-Api-Key, auth_env: CUSTOS_CONFIG_TEST_API_KEY, page_size: 7,
     classes: {important: {url: "`+srv.URL+`/export"}}}
classes:
  important: {targets: [primary], source: crm}
`))
	if err != nil {
		t.Fatal(err)
	}
	srcs, closeSources, err := c.OpenSources(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSources()
	snap, err := srcs["important"].Snapshot(t.Context(), source.Request{DataClass: "important", Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	rec, err := snap.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Tenant != "acme" || rec.CustomerID != "c-1" || rec.Key != "tickets/7" {
		t.Fatalf("record %+v", rec)
	}
	if _, err := snap.Next(t.Context()); !errors.Is(err, io.EOF) {
		t.Fatalf("second Next = %v, want io.EOF", err)
	}
}

// A missing or empty variable fails the open with its name, never a DSN or credential; sources
// opened before the failing one are closed (TestMain checks for leaked goroutines).
func TestOpenSourcesEnvErrors(t *testing.T) {
	const dsn = "postgres://custos:s3cret@127.0.0.1:1/shop?sslmode=disable"
	const yaml = base + `
sources:
  - {name: first, kind: postgres, dsn_env: CUSTOS_CONFIG_TEST_FIRST_DSN,
     classes: {critical: {tenant: acme, tables: [{name: t, table: t, customer_column: c, key_columns: [k], change_column: u}]}}}
  - {name: second, kind: postgres, dsn_env: CUSTOS_CONFIG_TEST_SECOND_DSN,
     classes: {important: {tenant: acme, tables: [{name: t, table: t, customer_column: c, key_columns: [k], change_column: u}]}}}
  - {name: api, kind: http, auth_header: Authorization, auth_env: CUSTOS_CONFIG_TEST_TOKEN,
     classes: {bulk: {url: "https://api.internal/export"}}}
classes:
  critical: {targets: [primary], source: first}
  important: {targets: [primary], source: second}
  bulk: {targets: [primary], source: api}
`
	c, err := config.Load(writeConfig(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTOS_CONFIG_TEST_FIRST_DSN", dsn)
	t.Setenv("CUSTOS_CONFIG_TEST_SECOND_DSN", "")
	t.Setenv("CUSTOS_CONFIG_TEST_TOKEN", "")
	for _, tc := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"unset", func() { os.Unsetenv("CUSTOS_CONFIG_TEST_SECOND_DSN") },
			"source second: environment variable CUSTOS_CONFIG_TEST_SECOND_DSN (dsn_env) is not set or empty"},
		{"empty", func() { os.Setenv("CUSTOS_CONFIG_TEST_SECOND_DSN", "") },
			"source second: environment variable CUSTOS_CONFIG_TEST_SECOND_DSN (dsn_env) is not set or empty"},
		{"malformed DSN", func() { os.Setenv("CUSTOS_CONFIG_TEST_SECOND_DSN", "postgres://custos:s3cret@db:port/shop") },
			"source second: "},
		{"no credential", func() { os.Setenv("CUSTOS_CONFIG_TEST_SECOND_DSN", dsn) },
			"source api: environment variable CUSTOS_CONFIG_TEST_TOKEN (auth_env) is not set or empty"},
	} {
		tc.setup()
		srcs, closeSources, err := c.OpenSources(nil)
		if err == nil {
			closeSources()
			t.Fatalf("%s: OpenSources succeeded: %v", tc.name, srcs)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "postgres://") {
			t.Errorf("%s: error %q shows a DSN", tc.name, err)
		}
	}
}
