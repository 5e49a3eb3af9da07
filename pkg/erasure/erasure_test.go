package erasure_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const cust = "p0123456789abcdef0123456789abcdef"

func request(now time.Time, state string) erasure.Request {
	return erasure.Request{V: 1, ID: erasure.NewID(cust, "e1"), Customer: cust, RequestedBy: "dpo",
		EventID: "e1", RequestedAt: now, DueAt: now.Add(time.Hour), State: state, Updated: now}
}

// The request's states move only by compare-and-set: a repeated request keeps the first, a
// cancel after the claim fails, a stale claim is due again.
func TestStoreLifecycle(t *testing.T) {
	ctx := context.Background()
	st, err := erasure.Open(ctx, natstest.Start(t).JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if _, _, err := st.Get(ctx, cust); !errors.Is(err, erasure.ErrNotFound) {
		t.Fatalf("Get before a request: %v", err)
	}
	first, rev, err := st.Create(ctx, request(now, erasure.StatePending))
	if err != nil {
		t.Fatal(err)
	}
	again := request(now.Add(time.Minute), erasure.StatePending)
	again.RequestedBy = "someone-else"
	if kept, _, err := st.Create(ctx, again); err != nil || kept.RequestedBy != "dpo" {
		t.Fatalf("a repeated request replaced the pending one: %+v, %v", kept, err)
	}
	if due, _, err := st.Due(ctx, now, time.Minute); err != nil || len(due) != 0 {
		t.Fatalf("Due before due_at = %d, %v", len(due), err)
	}
	if due, _, err := st.Due(ctx, now.Add(time.Hour), time.Minute); err != nil || len(due) != 1 {
		t.Fatalf("Due at due_at = %d, %v", len(due), err)
	}

	// A worker claims it; a stale revision loses.
	claimed := first
	claimed.State, claimed.Updated = erasure.StateExecuting, now.Add(time.Hour)
	rev2, err := st.Update(ctx, claimed, rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, claimed, rev); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("update with a stale revision: %v, want ErrKeyExists", err)
	}
	if _, err := st.Cancel(ctx, cust, "op", now); !errors.Is(err, erasure.ErrNotPending) {
		t.Fatalf("cancel after the claim: %v, want ErrNotPending", err)
	}
	// An executor that stopped updating is taken over once stale, not before.
	if due, _, _ := st.Due(ctx, now.Add(time.Hour+30*time.Second), time.Minute); len(due) != 0 {
		t.Fatal("a fresh claim is due again")
	}
	due, revs, err := st.Due(ctx, now.Add(time.Hour+2*time.Minute), time.Minute)
	if err != nil || len(due) != 1 || revs[0] != rev2 {
		t.Fatalf("stale claim: %d due, %v", len(due), err)
	}

	// A cancelled request is replaced by a new one.
	other := "p" + "fedcba9876543210fedcba9876543210"
	r := request(now, erasure.StatePending)
	r.Customer = other
	if _, _, err := st.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if c, err := st.Cancel(ctx, other, "op", now); err != nil || c.State != erasure.StateCancelled {
		t.Fatalf("cancel: %+v, %v", c, err)
	}
	r.RequestedBy = "dpo-2"
	if n, _, err := st.Create(ctx, r); err != nil || n.RequestedBy != "dpo-2" || n.State != erasure.StatePending {
		t.Fatalf("a new request after a cancel: %+v, %v", n, err)
	}
}

func TestPolicyValidate(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key := base64.StdEncoding.EncodeToString(pub)
	for name, p := range map[string]erasure.Policy{
		"unknown mode":     {UnknownCustomer: "forget"},
		"negative grace":   {Grace: -time.Second},
		"no name":          {Requesters: []erasure.Requester{{PublicKey: key}}},
		"repeated name":    {Requesters: []erasure.Requester{{Name: "a", PublicKey: key}, {Name: "a", PublicKey: key}}},
		"short public key": {Requesters: []erasure.Requester{{Name: "a", PublicKey: "AAAA"}}},
	} {
		if p.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (erasure.Policy{UnknownCustomer: "block", Grace: time.Hour, Requesters: []erasure.Requester{{Name: "a", PublicKey: key}}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// Authentication fails closed on every malformed signature header.
func TestAuthenticate(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	p := erasure.Policy{Requesters: []erasure.Requester{{Name: "dpo", PublicKey: base64.StdEncoding.EncodeToString(pub)}}}
	f := erasure.RequestFields{EventID: "e1", Tenant: "t", CustomerID: "c", RequestedBy: "dpo", Time: time.Now()}
	signed := nats.Header{}
	erasure.SignRequest(signed, f, "dpo", priv)
	if ok, err := p.Authenticate(signed, f); !ok || err != nil {
		t.Fatalf("good signature: %v, %v", ok, err)
	}
	if ok, err := (erasure.Policy{}).Authenticate(nats.Header{}, f); ok || err != nil {
		t.Fatalf("no requesters configured: %v, %v; want accepted, unverified", ok, err)
	}
	twice := nats.Header{}
	for k, v := range signed {
		twice[k] = append(v, v...)
	}
	notBy := f
	notBy.RequestedBy = "someone"
	garbled := nats.Header{}
	garbled.Set(erasure.HeaderSigner, "dpo")
	garbled.Set(erasure.HeaderSignature, "not base64!")
	for name, c := range map[string]struct {
		hdr nats.Header
		f   erasure.RequestFields
	}{
		"unsigned":              {nats.Header{}, f},
		"headers given twice":   {twice, f},
		"signer not requester":  {signed, notBy},
		"garbled signature":     {garbled, f},
		"signature of a change": {signed, erasure.RequestFields{EventID: "e1", Tenant: "t", CustomerID: "c2", RequestedBy: "dpo", Time: f.Time}},
	} {
		if ok, err := p.Authenticate(c.hdr, c.f); ok || !errors.Is(err, erasure.ErrUnauthenticated) {
			t.Errorf("%s: %v, %v; want ErrUnauthenticated", name, ok, err)
		}
	}
}
