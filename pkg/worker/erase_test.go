package worker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repository"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func deletion(id, customer, by string) *custosv1.DeletionRequest {
	return &custosv1.DeletionRequest{Meta: &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", CustomerId: customer},
		RequestedBy: by, LegalBasis: "gdpr_art17"}
}

func (b *bundle) erasure(customer string) erasure.Request {
	b.t.Helper()
	st, err := erasure.Open(context.Background(), b.ns.JS, 1)
	if err != nil {
		b.t.Fatal(err)
	}
	r, _, err := st.Get(context.Background(), b.kms.Pseudonym("t1", customer))
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// An erasure waits out its grace period: cancelled within it, nothing is destroyed; not
// cancelled, it is carried out by the worker's pass once due, with a signed certificate.
func TestErasureGracePeriodCancelAndCertificate(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	b := setup(t, func(c *Config) {
		c.Clock, c.Erasure.Grace, c.ErasureInterval = clock.Now, time.Hour, 50*time.Millisecond
	})
	w := b.startWorker()
	ctx := context.Background()
	for _, c := range []string{"stay", "go"} {
		if _, err := b.producer.PublishPostTransaction(ctx, postTx("pt-"+c, c, "critical", "k", []byte(c))); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	for _, c := range []string{"stay", "go"} {
		if _, err := b.producer.PublishDeletionRequest(ctx, deletion("del-"+c, c, "dpo")); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	for _, c := range []string{"stay", "go"} {
		if r := b.erasure(c); r.State != erasure.StatePending || !r.DueAt.Equal(clock.Now().Add(time.Hour).UTC()) && r.DueAt.Before(clock.Now()) {
			t.Fatalf("%s: request %+v, want pending for an hour", c, r)
		}
		if _, err := b.keys.Lookup(ctx, b.kms.Pseudonym("t1", c)); err != nil {
			t.Fatalf("%s: key gone during the grace period: %v", c, err)
		}
	}
	st, err := erasure.Open(ctx, b.ns.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cancel(ctx, b.kms.Pseudonym("t1", "stay"), "operator-1", clock.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour + time.Second)
	waitFor(t, 20*time.Second, "the due erasure", func() bool { return b.erasure("go").State == erasure.StateDone })
	if _, err := b.keys.Lookup(ctx, b.kms.Pseudonym("t1", "go")); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("erased customer's key: %v, want ErrDestroyed", err)
	}
	if r := b.erasure("stay"); r.State != erasure.StateCancelled || r.CancelledBy != "operator-1" {
		t.Fatalf("cancelled request = %+v", r)
	}
	if _, err := b.keys.Lookup(ctx, b.kms.Pseudonym("t1", "stay")); err != nil {
		t.Fatalf("a cancelled erasure destroyed the key: %v", err)
	}
	if _, err := st.Cancel(ctx, b.kms.Pseudonym("t1", "go"), "late", clock.Now()); !errors.Is(err, erasure.ErrNotPending) {
		t.Fatalf("cancel after the erasure: %v, want ErrNotPending", err)
	}

	r := b.erasure("go")
	pub := b.kms.SigningKey(keys.PurposeErasureCertificate).Public().(ed25519.PublicKey)
	c, err := r.Certificate.Verify(pub)
	if err != nil {
		t.Fatalf("certificate does not verify: %v", err)
	}
	if c.Customer != b.kms.Pseudonym("t1", "go") || c.Key != "destroyed" || len(c.Targets) != 3 || c.RequestedBy != "dpo" || c.ID != r.ID {
		t.Fatalf("certificate %+v", c)
	}
	if strings.Contains(string(r.Certificate.Certificate), `"go"`) {
		t.Fatal("certificate holds the raw customer id")
	}
	// A changed certificate, or one checked against another key, does not verify.
	forged := *r.Certificate
	forged.Certificate = []byte(strings.Replace(string(forged.Certificate), "dpo", "dp0", 1))
	if _, err := forged.Verify(pub); !errors.Is(err, erasure.ErrBadCertificate) {
		t.Fatalf("forged certificate: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := r.Certificate.Verify(other); !errors.Is(err, erasure.ErrBadCertificate) {
		t.Fatalf("certificate under another key: %v", err)
	}
	// Every target holds the signed certificate, which verifies without the broker.
	for _, tg := range b.targets {
		certs, err := repository.ReadCertificates(ctx, tg, b.kms.Pseudonym("t1", "go"))
		if err != nil || len(certs[r.ID]) == 0 {
			t.Fatalf("%s: certificate %s not in the target (%v)", tg.Name(), r.ID, err)
		}
		var stored erasure.Signed
		if err := json.Unmarshal(certs[r.ID], &stored); err != nil {
			t.Fatal(err)
		}
		if _, err := stored.Verify(pub); err != nil {
			t.Fatalf("%s: stored certificate: %v", tg.Name(), err)
		}
	}
	if st := w.Stats(); st.Erased != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A request for a customer Custos never held is recorded and certified, and does not stop a
// customer with that id from being backed up later.
func TestErasureOfUnknownCustomerDoesNotBlock(t *testing.T) {
	b := setup(t)
	b.startWorker()
	ctx := context.Background()
	if _, err := b.producer.PublishDeletionRequest(ctx, deletion("del-new", "newcomer", "dpo")); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	r := b.erasure("newcomer")
	if r.State != erasure.StateRecorded || r.Certificate == nil {
		t.Fatalf("request %+v, want recorded with a certificate", r)
	}
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("pt-new", "newcomer", "critical", "k", []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	rep, out := b.restoreAll()
	if !rep.OK() || len(rep.Erased) != 0 {
		t.Fatalf("restore %+v", rep)
	}
	b.checkRestored(out, map[string][]byte{"newcomer/k": []byte("hello")})
}

// With requesters configured, only signed requests from a listed identity are carried out; the
// others are dead-lettered (sealed) and nothing is destroyed.
func TestErasureRequiresSignedRequests(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	b := setup(t, func(c *Config) {
		c.Erasure.Requesters = []erasure.Requester{{Name: "dpo", PublicKey: base64.StdEncoding.EncodeToString(pub)}}
	})
	w := b.startWorker()
	ctx := context.Background()
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("pt-1", "c1", "critical", "k", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	for _, tc := range []struct {
		id   string
		opts []producer.PublishOption
	}{
		{"unsigned", nil},
		{"stranger", []producer.PublishOption{producer.WithSignature("dpo", stranger)}},
	} {
		if _, err := b.producer.PublishDeletionRequest(ctx, deletion(tc.id, "c1", "dpo"), tc.opts...); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSettled()
	if _, err := b.keys.Lookup(ctx, b.kms.Pseudonym("t1", "c1")); err != nil {
		t.Fatalf("an unauthenticated request destroyed the key: %v", err)
	}
	dl := b.dlq()
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for _, m := range dl {
		if !strings.Contains(m.Header.Get(HeaderDLQReason), "not authenticated") ||
			m.Header.Get(deadletter.HeaderScope) != b.kms.Pseudonym("t1", "c1") {
			t.Fatalf("dead letter reason %q scope %q", m.Header.Get(HeaderDLQReason), m.Header.Get(deadletter.HeaderScope))
		}
	}
	if _, err := b.producer.PublishDeletionRequest(ctx, deletion("signed", "c1", "dpo"), producer.WithSignature("dpo", priv)); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	r := b.erasure("c1")
	if r.State != erasure.StateDone || !r.Verified || r.RequestedBy != "dpo" {
		t.Fatalf("request %+v, want done by the verified dpo", r)
	}
	// The erased customer's dead letters are gone: purged, and sealed under the destroyed key.
	if dl := b.dlq(); len(dl) != 0 {
		t.Fatalf("%d dead letters of the erased customer remain", len(dl))
	}
	if st := w.Stats(); st.Erased != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// With unknown_customer: block, a request for a customer never seen destroys its key before it
// exists: that id is never backed up.
func TestErasureOfUnknownCustomerBlocksWhenPolicySaysSo(t *testing.T) {
	b := setup(t, func(c *Config) { c.Erasure.UnknownCustomer = "block" })
	w := b.startWorker()
	ctx := context.Background()
	if _, err := b.producer.PublishDeletionRequest(ctx, deletion("del-block", "future", "dpo")); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	if r := b.erasure("future"); r.State != erasure.StateDone {
		t.Fatalf("request %+v, want done", r)
	}
	if _, err := b.keys.Lookup(ctx, b.kms.Pseudonym("t1", "future")); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("key of the blocked customer: %v, want ErrDestroyed", err)
	}
	if _, err := b.producer.PublishPostTransaction(ctx, postTx("pt-future", "future", "critical", "k", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	if st := w.Stats(); st.Items != 0 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v, want nothing stored and one dead letter", st)
	}
}
