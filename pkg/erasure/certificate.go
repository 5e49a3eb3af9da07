package erasure

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Certificate says what an erasure destroyed, where and when. It holds pseudonyms and key
// version ids, never a raw customer id or key material.
type Certificate struct {
	V           int       `json:"v"`
	ID          string    `json:"id"`
	Customer    string    `json:"customer"`
	Classes     string    `json:"classes,omitempty"` // empty: every class
	RequestedBy string    `json:"requested_by"`
	Verified    bool      `json:"requester_verified"`
	LegalBasis  string    `json:"legal_basis,omitempty"`
	EventID     string    `json:"event_id"`
	RequestedAt time.Time `json:"requested_at"`
	ErasedAt    time.Time `json:"erased_at"`
	// Key is what happened to the customer's data key: "destroyed", or "never_created" for a
	// customer Custos held nothing of.
	Key string `json:"key"`
	// WrappedBy are the KEK versions that may still hold a wrapped copy of the destroyed key in
	// locked manifests and envelopes: the erasure of those copies completes when they are
	// destroyed (custos keys rotate, then keys destroy-retired). KEKActive is the version
	// active at the erasure.
	KEKActive string   `json:"kek_active,omitempty"`
	WrappedBy []string `json:"kek_versions_to_destroy,omitempty"`
	// Targets hold the erasure record; TargetsQueued missed it and are queued for repair.
	Targets       []string `json:"targets,omitempty"`
	TargetsQueued int      `json:"targets_queued,omitempty"`
	// Broker says what the broker holds afterwards.
	Broker string `json:"broker"`
}

// Signed is a certificate with its Ed25519 signature over the exact certificate bytes.
type Signed struct {
	Certificate json.RawMessage `json:"certificate"`
	Signature   string          `json:"signature"`  // standard base64
	PublicKey   string          `json:"public_key"` // standard base64
}

const certDomain = "custos-deletion-certificate-v1\n"

// Sign signs c with key.
func Sign(c Certificate, key ed25519.PrivateKey) (*Signed, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(key, append([]byte(certDomain), b...))
	return &Signed{Certificate: b, Signature: base64.StdEncoding.EncodeToString(sig),
		PublicKey: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))}, nil
}

// Verify checks the signature against pub (the signer's known key; the certificate's own
// public_key field is not trusted) and returns the certificate.
func (s *Signed) Verify(pub ed25519.PublicKey) (Certificate, error) {
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || !ed25519.Verify(pub, append([]byte(certDomain), s.Certificate...), sig) {
		return Certificate{}, ErrBadCertificate
	}
	var c Certificate
	if err := json.Unmarshal(s.Certificate, &c); err != nil {
		return Certificate{}, fmt.Errorf("%w: %v", ErrBadCertificate, err)
	}
	return c, nil
}

// KeyFingerprint names a public key: 16 hex digits of its SHA-256.
func KeyFingerprint(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// Headers of an authenticated deletion request.
const (
	HeaderSigner    = "Custos-Signer"
	HeaderSignature = "Custos-Signature"
)

// RequestFields are the fields of a deletion request a signature covers.
type RequestFields struct {
	EventID, Tenant, CustomerID, Class, RequestedBy string
	Time                                            time.Time
}

func (f RequestFields) message() []byte {
	var b strings.Builder
	b.WriteString("custos-deletion-request-v1\n")
	for _, v := range []string{f.EventID, f.Tenant, f.CustomerID, f.Class, f.RequestedBy, f.Time.UTC().Format(time.RFC3339Nano)} {
		fmt.Fprintf(&b, "%d:%s\n", len(v), v)
	}
	return []byte(b.String())
}

// SignRequest sets the signature headers of a deletion request made by signer; f.RequestedBy
// must be signer.
func SignRequest(hdr nats.Header, f RequestFields, signer string, key ed25519.PrivateKey) {
	hdr.Set(HeaderSigner, signer)
	hdr.Set(HeaderSignature, base64.StdEncoding.EncodeToString(ed25519.Sign(key, f.message())))
}

// Authenticate checks a deletion request's signature against the policy's requesters. With no
// requester configured every request is accepted, unverified. The signer must be the request's
// requested_by, so the certificate's requester is the identity that signed.
func (p Policy) Authenticate(hdr nats.Header, f RequestFields) (verified bool, err error) {
	if len(p.Requesters) == 0 {
		return false, nil
	}
	if len(hdr.Values(HeaderSigner)) != 1 || len(hdr.Values(HeaderSignature)) != 1 {
		return false, fmt.Errorf("%w: exactly one %s and one %s header are required", ErrUnauthenticated, HeaderSigner, HeaderSignature)
	}
	signer := hdr.Get(HeaderSigner)
	if signer != f.RequestedBy {
		return false, fmt.Errorf("%w: signer is not requested_by", ErrUnauthenticated)
	}
	for _, r := range p.Requesters {
		if r.Name != signer {
			continue
		}
		pub, _ := base64.StdEncoding.DecodeString(r.PublicKey)
		sig, err := base64.StdEncoding.DecodeString(hdr.Get(HeaderSignature))
		if err != nil || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, f.message(), sig) {
			return false, fmt.Errorf("%w: bad signature", ErrUnauthenticated)
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: unknown signer", ErrUnauthenticated)
}
