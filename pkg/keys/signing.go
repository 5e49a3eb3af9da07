package keys

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
)

// Signing-key purposes. Each gives another key, so a signature made for one can never pass
// for another.
const (
	PurposeErasureCertificate = "erasure-certificate"
	PurposeAuditCheckpoint    = "audit-checkpoint"
)

// Signer gives Ed25519 signing keys derived from the pseudonym key. Every process holding the
// key file derives the same key for a purpose, so a certificate signed by one worker verifies
// with the public key any other process computes.
type Signer interface {
	SigningKey(purpose string) ed25519.PrivateKey
}

// SigningKey derives the purpose's Ed25519 key: seed = HKDF-SHA256(pseudonym_key, salt none,
// info "custos-signing-v1:" ‖ purpose, 32 bytes).
func (k *LocalKMS) SigningKey(purpose string) ed25519.PrivateKey {
	seed, err := hkdf.Key(sha256.New, k.pseudonymKey, nil, "custos-signing-v1:"+purpose, ed25519.SeedSize)
	if err != nil {
		panic("keys: hkdf: " + err.Error()) // only for lengths sha256 cannot give
	}
	return ed25519.NewKeyFromSeed(seed)
}

// SigningKey derives the purpose's signing key from the pseudonym key.
func (p pseudonymsOnly) SigningKey(purpose string) ed25519.PrivateKey { return p.k.SigningKey(purpose) }

// SigningKey derives the purpose's signing key from the pseudonym key.
func (k *Keyring) SigningKey(purpose string) ed25519.PrivateKey {
	return k.pseudo.SigningKey(purpose)
}
