package audit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

const pseudo = "p0123456789abcdef0123456789abcdef"

func TestAppendList(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	if got, err := audit.List(ctx, ns.JS, 0); err != nil || len(got) != 0 {
		t.Fatalf("List before the stream exists = %v, %v", got, err)
	}
	log, err := audit.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	entries := []audit.Entry{
		{Time: now, Kind: audit.KindManual, EventID: "m-1", Class: "critical", Reason: "before migration",
			RequestedBy: "ops@example.com", Outcome: audit.OutcomeNoRecords},
		{Time: now, Kind: audit.KindSuspicious, EventID: "s-1", Class: "critical", Customer: pseudo,
			Reason: "mass deletion", DetectedBy: "guard", Severity: "high", Outcome: audit.OutcomeBackedUp, Packs: []string{"abc"}},
	}
	for _, e := range entries {
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// A redelivered event's entry is stored once.
	if err := log.Append(ctx, entries[1]); err != nil {
		t.Fatal(err)
	}
	got, err := audit.List(ctx, ns.JS, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("List = %d entries, %v; want 2", len(got), err)
	}
	if got[1].Customer != pseudo || got[1].Packs[0] != "abc" || got[0].RequestedBy != "ops@example.com" {
		t.Fatalf("entries %+v", got)
	}
	if last, _ := audit.List(ctx, ns.JS, 1); len(last) != 1 || last[0].EventID != "s-1" {
		t.Fatalf("List limit 1 = %+v", last)
	}
}

func TestAppendRefusesRawCustomerID(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	log, err := audit.Open(context.Background(), ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	base := audit.Entry{Time: time.Now(), Kind: audit.KindSuspicious, EventID: "s-1", Class: "critical",
		Reason: "r", DetectedBy: "d", Outcome: audit.OutcomeBackedUp}
	for name, mod := range map[string]func(*audit.Entry){
		"raw customer id": func(e *audit.Entry) { e.Customer = "cust-0042" },
		"unknown kind":    func(e *audit.Entry) { e.Kind = "post_transaction" },
		"no event id":     func(e *audit.Entry) { e.EventID = "" },
		"no outcome":      func(e *audit.Entry) { e.Outcome = "" },
	} {
		e := base
		mod(&e)
		err := log.Append(context.Background(), e)
		if !errors.Is(err, audit.ErrInvalidEntry) {
			t.Errorf("%s: Append = %v, want ErrInvalidEntry", name, err)
		}
		if err != nil && e.Customer != "" && strings.Contains(err.Error(), e.Customer) {
			t.Errorf("%s: error %q repeats the customer value", name, err)
		}
	}
}
