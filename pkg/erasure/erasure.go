// Package erasure holds the lifecycle of a customer erasure (docs/design.md section 12): the
// authenticated request, the grace period in which an operator can cancel it, and the signed
// deletion certificate that says what was destroyed, where and when.
//
// A request's state lives in the KV bucket CUSTOS_ERASURES under the customer's pseudonym:
//
//	pending   -> executing -> done        (the key is destroyed, the certificate signed)
//	pending   -> cancelled                (by an operator, within the grace period)
//	recorded                               (the customer was unknown: nothing held, no tombstone)
//
// Every move is a compare-and-set on the entry's revision, so a cancel and an execution can
// never both win, and two workers never destroy twice.
package erasure

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/broker"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket holding erasure requests and certificates.
const Bucket = "CUSTOS_ERASURES"

// States of a request.
const (
	StatePending   = "pending"
	StateExecuting = "executing"
	StateDone      = "done"
	StateCancelled = "cancelled"
	// StateRecorded is a request for a customer Custos never held: recorded, certified, and it
	// does not block a customer that appears later (unless Policy.UnknownCustomer is "block").
	StateRecorded = "recorded"
)

// Named errors.
var (
	ErrNotFound = errors.New("erasure: no erasure request for this customer")
	// ErrNotPending means a cancel came after the request started or ended.
	ErrNotPending = errors.New("erasure: request is no longer pending")
	// ErrUnauthenticated means a deletion request's signature is missing, unknown or wrong.
	ErrUnauthenticated = errors.New("erasure: deletion request not authenticated")
	// ErrBadCertificate means a certificate's signature does not verify.
	ErrBadCertificate = errors.New("erasure: certificate signature does not verify")
)

// Policy is how erasures are carried out.
type Policy struct {
	// Grace delays the destruction after the request; an operator can cancel within it.
	Grace time.Duration `yaml:"grace"`
	// UnknownCustomer is "record" (default: a request for a customer with no data key is
	// recorded and certified, and a later customer with that id is backed up normally) or
	// "block" (the key is destroyed before it exists: that customer is never backed up).
	UnknownCustomer string `yaml:"unknown_customer"`
	// Requesters, when set, are the only identities whose signed requests are carried out.
	Requesters []Requester `yaml:"requesters"`
}

// Requester is an identity allowed to request erasures: a name and its Ed25519 public key
// (standard base64).
type Requester struct {
	Name      string `yaml:"name"`
	PublicKey string `yaml:"public_key"`
}

// Validate checks the policy.
func (p Policy) Validate() error {
	switch p.UnknownCustomer {
	case "", "record", "block":
	default:
		return fmt.Errorf("erasure.unknown_customer %q: want record or block", p.UnknownCustomer)
	}
	if p.Grace < 0 {
		return errors.New("erasure.grace must not be negative")
	}
	seen := map[string]bool{}
	for _, r := range p.Requesters {
		if r.Name == "" || seen[r.Name] {
			return fmt.Errorf("erasure.requesters: empty or repeated name %q", r.Name)
		}
		seen[r.Name] = true
		if k, err := base64.StdEncoding.DecodeString(r.PublicKey); err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("erasure.requesters %s: public_key must be a base64 Ed25519 public key", r.Name)
		}
	}
	return nil
}

// Blocks reports whether a request for an unknown customer destroys its key beforehand.
func (p Policy) Blocks() bool { return p.UnknownCustomer == "block" }

// Request is the state of one customer's erasure.
type Request struct {
	V           int       `json:"v"`
	ID          string    `json:"id"`
	Customer    string    `json:"customer"` // pseudonym
	Classes     string    `json:"classes,omitempty"`
	RequestedBy string    `json:"requested_by"`
	Verified    bool      `json:"verified"` // RequestedBy was checked against a signature
	LegalBasis  string    `json:"legal_basis,omitempty"`
	EventID     string    `json:"event_id"`
	RequestedAt time.Time `json:"requested_at"`
	DueAt       time.Time `json:"due_at"`
	State       string    `json:"state"`
	Updated     time.Time `json:"updated"`
	CancelledBy string    `json:"cancelled_by,omitempty"`
	// Certificate is the signed deletion certificate, once done or recorded.
	Certificate *Signed `json:"certificate,omitempty"`
}

// NewID gives the id of the request for a customer and an event: stable, so that a redelivered
// request names the same erasure.
func NewID(customer, eventID string) string {
	s := sha256.Sum256([]byte("custos-erasure-id-v1\x00" + customer + "\x00" + eventID))
	return "er-" + hex.EncodeToString(s[:10])
}

// Store keeps requests in CUSTOS_ERASURES.
type Store struct {
	kv jetstream.KeyValue
}

// Open binds the bucket, creating it when missing.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Custos erasure requests and deletion certificates",
		History: 5, Storage: jetstream.FileStorage, Replicas: max(1, replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("erasure: open %s: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

// Get returns a customer's request and its revision.
func (s *Store) Get(ctx context.Context, customer string) (Request, uint64, error) {
	e, err := s.kv.Get(ctx, customer)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Request{}, 0, ErrNotFound
	}
	if err != nil {
		return Request{}, 0, fmt.Errorf("erasure: read request: %w", err)
	}
	var r Request
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Request{}, 0, fmt.Errorf("erasure: corrupt request record: %w", err)
	}
	return r, e.Revision(), nil
}

// Create stores a new request; when the customer already has one that is pending, executing
// or done, that one is kept and returned (a repeated request changes nothing). A cancelled or
// recorded one is replaced.
func (s *Store) Create(ctx context.Context, r Request) (Request, uint64, error) {
	for {
		cur, rev, err := s.Get(ctx, r.Customer)
		switch {
		case errors.Is(err, ErrNotFound):
			b, _ := json.Marshal(r)
			rev, err := s.kv.Create(ctx, r.Customer, b)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			if err != nil {
				return Request{}, 0, fmt.Errorf("erasure: record request: %w", err)
			}
			return r, rev, nil
		case err != nil:
			return Request{}, 0, err
		case cur.State == StateCancelled || cur.State == StateRecorded:
			rev, err := s.put(ctx, r, rev)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return r, rev, err
		default:
			return cur, rev, nil
		}
	}
}

// Update moves a request to its new state if nobody changed it since revision rev; it fails
// with jetstream.ErrKeyExists otherwise.
func (s *Store) Update(ctx context.Context, r Request, rev uint64) (uint64, error) {
	return s.put(ctx, r, rev)
}

func (s *Store) put(ctx context.Context, r Request, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	n, err := s.kv.Update(ctx, r.Customer, b, rev)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("erasure: update request: %w", err)
	}
	return n, err
}

// Cancel cancels a pending request.
func (s *Store) Cancel(ctx context.Context, customer, by string, now time.Time) (Request, error) {
	for {
		r, rev, err := s.Get(ctx, customer)
		if err != nil {
			return Request{}, err
		}
		if r.State != StatePending {
			return r, fmt.Errorf("%w (state %s)", ErrNotPending, r.State)
		}
		r.State, r.CancelledBy, r.Updated = StateCancelled, by, now.UTC()
		if _, err := s.put(ctx, r, rev); errors.Is(err, jetstream.ErrKeyExists) {
			continue
		} else if err != nil {
			return Request{}, err
		}
		return r, nil
	}
}

// Due returns the pending requests due at now, and executing ones whose executor seems gone
// (no update for stale), with their revisions.
func (s *Store) Due(ctx context.Context, now time.Time, stale time.Duration) ([]Request, []uint64, error) {
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("erasure: list requests: %w", err)
	}
	var out []Request
	var revs []uint64
	for k := range lister.Keys() {
		r, rev, err := s.Get(ctx, k)
		if err != nil {
			continue
		}
		if (r.State == StatePending && !r.DueAt.After(now)) ||
			(r.State == StateExecuting && now.Sub(r.Updated) > stale) {
			out = append(out, r)
			revs = append(revs, rev)
		}
	}
	return out, revs, nil
}
