package postgres_test

import (
	"context"
	"errors"
	"io"
	"log"

	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/postgres"
)

// A class read from two tables, incrementally by updated_at, and a full backup shared out as
// four tasks that read one exported snapshot.
func Example() {
	src, err := postgres.New(postgres.Config{
		DSN: "postgres://custos@db.internal/shop?sslmode=verify-full",
		Classes: map[string]postgres.Class{
			"critical": {Tenant: "acme", Tables: []postgres.Table{
				{Name: "orders", Table: "orders", CustomerColumn: "customer_id", KeyColumns: []string{"id"},
					ChangeColumn: "updated_at", DeletedColumn: "deleted_at"},
				{Name: "invoices", Schema: "billing", Table: "invoices", CustomerColumn: "customer_id",
					KeyColumns: []string{"year", "number"}, ChangeColumn: "updated_at"},
			}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()

	exp, err := src.Export(ctx, source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		log.Fatal(err)
	}
	defer exp.Close()
	ranges, err := src.Split(ctx, "critical", 4)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range ranges { // each would be a task on any worker
		snap, err := src.Snapshot(ctx, source.Request{DataClass: "critical", Method: source.Full, Range: r, Shared: exp.Token()})
		if err != nil {
			log.Fatal(err)
		}
		for {
			rec, err := snap.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				log.Fatal(err)
			}
			_ = rec // encrypt under rec's customer key, pack, replicate
		}
		snap.Close()
	}
	// Once every task is durable, store exp.Cursor() for the next incremental.
	_ = exp.Cursor()
}
