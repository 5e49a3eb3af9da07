package postgres

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/pkg/source"
)

// changeTypes are the change column types a cursor may hold, by pg_typeof text. The cast written
// into SQL comes from this table, never from a cursor, so a forged cursor cannot inject SQL.
var changeTypes = map[string]string{
	"smallint":                    "smallint",
	"integer":                     "integer",
	"bigint":                      "bigint",
	"numeric":                     "numeric",
	"date":                        "date",
	"timestamp without time zone": "timestamp without time zone",
	"timestamp with time zone":    "timestamp with time zone",
}

func quote(id string) string { return pgx.Identifier{id}.Sanitize() }

// col is a column of the relation, always aliased t.
func col(id string) string { return "t." + quote(id) }

// relation is the FROM item for a table or query, aliased t.
func relation(tb Table) string {
	if tb.Query != "" {
		q := strings.TrimSpace(tb.Query)
		q = strings.TrimRight(q, "; \t\n")
		return "(" + q + ") AS t"
	}
	schema := tb.Schema
	if schema == "" {
		schema = "public"
	}
	return pgx.Identifier{schema, tb.Table}.Sanitize() + " AS t"
}

// deletedExpr is true for soft-deleted rows: DeletedColumn neither NULL nor false.
func deletedExpr(tb Table) string {
	if tb.DeletedColumn == "" {
		return "false"
	}
	return "(coalesce((" + col(tb.DeletedColumn) + ")::text, 'false') <> 'false')"
}

// rowQuery yields, per row: customer, tenant, deleted, key columns..., the row's JSON.
type rowQuery struct {
	sql  string
	args []any
}

// xminWindow selects row versions written by transactions in [lo, hi) (64-bit, full xids),
// expressed on the 32-bit xmin column. hi-lo < 2^31 is checked by the caller.
type xminWindow struct{ lo, hi int64 }

func (w xminWindow) predicate(args *[]any) string {
	lo, hi := uint32(w.lo), uint32(w.hi)
	*args = append(*args, int64(lo), int64(hi))
	a, b := "$"+strconv.Itoa(len(*args)-1), "$"+strconv.Itoa(len(*args))
	x := "(t.xmin::text::bigint)"
	// 0, 1 and 2 are the invalid, bootstrap and frozen transaction ids: never "recent".
	if lo <= hi {
		return fmt.Sprintf("(%s >= 3 AND %s >= %s::bigint AND %s < %s::bigint)", x, x, a, x, b)
	}
	return fmt.Sprintf("(%s >= 3 AND (%s >= %s::bigint OR %s < %s::bigint))", x, x, a, x, b)
}

// buildRowQuery returns the query streaming one table's records. lower is the change column
// bound (nil: none); xw the xmin window (nil: none); full leaves soft-deleted rows out.
func buildRowQuery(tb Table, full bool, lower *bound, xw *xminWindow, rng source.CustomerRange) (rowQuery, error) {
	var sel []string
	sel = append(sel, "("+col(tb.CustomerColumn)+")::text")
	if tb.TenantColumn != "" {
		sel = append(sel, "("+col(tb.TenantColumn)+")::text")
	} else {
		sel = append(sel, "NULL::text")
	}
	sel = append(sel, deletedExpr(tb))
	for _, k := range tb.KeyColumns {
		sel = append(sel, "("+col(k)+")::text")
	}
	from := relation(tb)
	switch {
	case tb.ValueColumn != "":
		// As stored, not cast: the driver then returns a bytea's bytes rather than its hex text,
		// and the column's type (checked by the reader) says what the bytes are.
		sel = append(sel, col(tb.ValueColumn))
	case len(tb.Columns) == 0:
		sel = append(sel, "row_to_json(t)::text")
	default:
		cols := make([]string, len(tb.Columns))
		for i, c := range tb.Columns {
			cols[i] = col(c)
		}
		// row_to_json of a sub-select keeps the configured order and names.
		from += " CROSS JOIN LATERAL (SELECT row_to_json(r)::text AS doc FROM (SELECT " + strings.Join(cols, ", ") + ") AS r) AS j"
		sel = append(sel, "j.doc")
	}

	var where []string
	var args []any
	if full {
		where = append(where, "NOT "+deletedExpr(tb))
	}
	cust := "(" + col(tb.CustomerColumn) + ")::text COLLATE \"C\""
	if rng.From != "" {
		args = append(args, rng.From)
		where = append(where, cust+" >= $"+strconv.Itoa(len(args)))
	}
	if rng.To != "" {
		args = append(args, rng.To)
		where = append(where, cust+" < $"+strconv.Itoa(len(args)))
	}
	if lower != nil {
		typ, ok := changeTypes[lower.Type]
		if !ok {
			return rowQuery{}, fmt.Errorf("%w: change column type %q", source.ErrInvalidCursor, lower.Type)
		}
		args = append(args, lower.Value)
		c := col(tb.ChangeColumn)
		// NULL change values are never "older than the cursor": read them every time rather than
		// never.
		where = append(where, fmt.Sprintf("(%s > $%d::text::%s OR %s IS NULL)", c, len(args), typ, c))
	}
	if xw != nil {
		where = append(where, xw.predicate(&args))
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + from
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return rowQuery{sql: q, args: args}, nil
}

// maxChangeQuery reads the largest committed change value of a table and its type.
func maxChangeQuery(tb Table) string {
	c := col(tb.ChangeColumn)
	return "SELECT max(" + c + ")::text, pg_typeof(max(" + c + "))::text FROM " + relation(tb)
}

// customersQuery lists the distinct customer ids of a class's tables, as text in "C" order.
func customersQuery(tables []Table) string {
	parts := make([]string, len(tables))
	for i, tb := range tables {
		parts[i] = "SELECT (" + col(tb.CustomerColumn) + ")::text COLLATE \"C\" AS c FROM " + relation(tb)
	}
	return strings.Join(parts, " UNION ")
}
