package repository

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Magic opens every catalog object.
const Magic = "CUSTOSC1"

// maxHeader bounds a catalog object's header.
const maxHeader = 4096

// Header is the clear part of a catalog object: the wrapped catalog key and the pseudonym-key
// fingerprint (docs/design.md section 11).
type Header struct {
	V   int    `json:"v"`
	KEK string `json:"kek"`
	DEK []byte `json:"dek"`
	PK  string `json:"pk"`
}

// encode frames body behind h.
func encode(h, body []byte) []byte {
	out := make([]byte, 0, len(Magic)+4+len(h)+len(body))
	out = append(out, Magic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(h)))
	out = append(out, h...)
	return append(out, body...)
}

// Decode splits a catalog object into its header and body.
func Decode(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < len(Magic)+4 || string(b[:len(Magic)]) != Magic {
		return h, nil, fmt.Errorf("%w: not a catalog object", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(b[len(Magic):])
	rest := b[len(Magic)+4:]
	if n > maxHeader || int(n) > len(rest) {
		return h, nil, fmt.Errorf("%w: header of %d bytes", ErrCorrupt, n)
	}
	if err := json.Unmarshal(rest[:n], &h); err != nil || h.V != 1 {
		return h, nil, fmt.Errorf("%w: header", ErrCorrupt)
	}
	return h, rest[n:], nil
}

// Sealer seals catalog objects under the catalog key. It is safe for concurrent use.
type Sealer struct {
	dek    []byte
	header []byte
}

// NewSealer reads (or creates) the catalog key from store. fingerprint is the pseudonym-key
// fingerprint of the key file (keys.LocalKMS.Fingerprint).
func NewSealer(ctx context.Context, store keys.EnvelopeStore, fingerprint string) (*Sealer, error) {
	env, err := store.Envelope(ctx, pack.CatalogScope)
	if err != nil {
		return nil, fmt.Errorf("repository: catalog key: %w", err)
	}
	dek, err := store.DataKey(ctx, pack.CatalogScope)
	if err != nil {
		return nil, fmt.Errorf("repository: catalog key: %w", err)
	}
	h, err := json.Marshal(Header{V: 1, KEK: env.KEK, DEK: env.DEK, PK: fingerprint})
	if err != nil {
		return nil, err
	}
	return &Sealer{dek: dek, header: h}, nil
}

// Manifest seals a pack manifest. m.Keys must hold the wrapped key of every customer it lists.
func (s *Sealer) Manifest(m pack.Manifest) ([]byte, error) {
	for _, c := range m.Customers() {
		if k, ok := m.Keys[c]; !ok || len(k.DEK) == 0 {
			return nil, fmt.Errorf("repository: manifest %s lacks the data key of %s", m.Pack, c)
		}
	}
	body, err := pack.SealManifest(s.dek, m)
	if err != nil {
		return nil, err
	}
	return encode(s.header, body), nil
}

// TaskManifest seals a snapshot task manifest.
func (s *Sealer) TaskManifest(m snapshot.Manifest) ([]byte, error) {
	body, err := snapshot.Seal(s.dek, m)
	if err != nil {
		return nil, err
	}
	return encode(s.header, body), nil
}

func snapshotAAD(job string) []byte   { return crypto.AAD("custos-snapshot", job) }
func erasureAAD(pseudo string) []byte { return crypto.AAD("custos-erasure", pseudo) }

func (s *Sealer) seal(ad []byte, id string, js []byte) ([]byte, error) {
	body, err := crypto.Seal(s.dek, ad, crypto.DeriveNonce(s.dek, id, sha256.Sum256(js)), js)
	if err != nil {
		return nil, err
	}
	return encode(s.header, body), nil
}

// SnapshotRecord seals a committed snapshot's record.
func (s *Sealer) SnapshotRecord(sn snapshot.Snapshot) ([]byte, error) {
	js, err := json.Marshal(sn)
	if err != nil {
		return nil, err
	}
	return s.seal(snapshotAAD(sn.ID), "snapshot:"+sn.ID, js)
}

// Erasure is the content of an erasure record.
type Erasure struct {
	V        int       `json:"v"`
	Customer string    `json:"customer"`
	Erased   time.Time `json:"erased"`
}

// Erasure seals the erasure record of a customer.
func (s *Sealer) Erasure(pseudonym string, at time.Time) ([]byte, error) {
	js, err := json.Marshal(Erasure{V: 1, Customer: pseudonym, Erased: at.UTC().Truncate(time.Second)})
	if err != nil {
		return nil, err
	}
	return s.seal(erasureAAD(pseudonym), "erasure:"+pseudonym, js)
}

// Opener opens catalog objects with the KMS alone: the catalog key comes from each object's
// header. It caches unwrapped catalog keys and is safe for concurrent use.
type Opener struct {
	kms         keys.KMS
	fingerprint string

	sources []target.Reader

	mu        sync.Mutex
	cache     map[string][]byte        // wrapped catalog key → catalog key
	envelopes map[string]keys.Envelope // scope → key envelope of the active KEK, once read
}

// NewOpener returns an Opener; fingerprint is the reader's pseudonym-key fingerprint.
//
// envelopeSources are the targets where key envelopes written by a KEK rotation are looked up
// (docs/design.md section 11, KEK epochs) when a key is wrapped by a KEK the KMS no longer
// holds; without them such a key does not open.
func NewOpener(kms keys.KMS, fingerprint string, envelopeSources ...target.Reader) *Opener {
	return &Opener{kms: kms, fingerprint: fingerprint, cache: map[string][]byte{}, sources: envelopeSources,
		envelopes: map[string]keys.Envelope{}}
}

// KMS returns the KMS the opener unwraps with.
func (o *Opener) KMS() keys.KMS { return o.kms }

// open checks the header and returns the catalog key, its envelope and the body.
func (o *Opener) open(ctx context.Context, b []byte) ([]byte, keys.Envelope, []byte, error) {
	if o.kms == nil {
		return nil, keys.Envelope{}, nil, errors.New("repository: no KMS to open catalog objects with")
	}
	h, body, err := Decode(b)
	if err != nil {
		return nil, keys.Envelope{}, nil, err
	}
	if h.PK != o.fingerprint {
		return nil, keys.Envelope{}, nil, fmt.Errorf("%w (pseudonym-key fingerprint %s, the key file's is %s)", ErrKeyMismatch, h.PK, o.fingerprint)
	}
	env := keys.Envelope{KEK: h.KEK, DEK: h.DEK}
	o.mu.Lock()
	dek, ok := o.cache[string(h.DEK)]
	o.mu.Unlock()
	if !ok {
		if dek, err = o.OpenKey(ctx, pack.CatalogScope, env); err != nil {
			return nil, env, nil, err
		}
		o.mu.Lock()
		o.cache[string(h.DEK)] = dek
		o.mu.Unlock()
	}
	return dek, env, body, nil
}

// CatalogEnvelope returns the wrapped catalog key an object carries, after checking that it
// opens.
func (o *Opener) CatalogEnvelope(ctx context.Context, b []byte) (keys.Envelope, error) {
	_, env, _, err := o.open(ctx, b)
	return env, err
}

// Manifest authenticates and decodes the manifest of pack id.
func (o *Opener) Manifest(ctx context.Context, id string, b []byte) (pack.Manifest, error) {
	dek, _, body, err := o.open(ctx, b)
	if err != nil {
		return pack.Manifest{}, err
	}
	return pack.OpenManifest(dek, id, body)
}

// TaskManifest authenticates and decodes a snapshot task manifest.
func (o *Opener) TaskManifest(ctx context.Context, job string, task int, b []byte) (snapshot.Manifest, error) {
	dek, _, body, err := o.open(ctx, b)
	if err != nil {
		return snapshot.Manifest{}, err
	}
	return snapshot.OpenManifest(dek, job, task, body)
}

// SnapshotRecord authenticates and decodes the record of snapshot job.
func (o *Opener) SnapshotRecord(ctx context.Context, job string, b []byte) (snapshot.Snapshot, error) {
	var sn snapshot.Snapshot
	dek, _, body, err := o.open(ctx, b)
	if err != nil {
		return sn, err
	}
	js, err := crypto.Open(dek, snapshotAAD(job), body)
	if err != nil {
		return sn, err
	}
	if err := json.Unmarshal(js, &sn); err != nil || sn.ID != job {
		return sn, fmt.Errorf("%w: snapshot record %s", ErrCorrupt, job)
	}
	return sn, nil
}

// Erasure authenticates and decodes the erasure record of a customer.
func (o *Opener) Erasure(ctx context.Context, pseudonym string, b []byte) (Erasure, error) {
	var e Erasure
	dek, _, body, err := o.open(ctx, b)
	if err != nil {
		return e, err
	}
	js, err := crypto.Open(dek, erasureAAD(pseudonym), body)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(js, &e); err != nil || e.V != 1 || e.Customer != pseudonym {
		return e, fmt.Errorf("%w: erasure record %s", ErrCorrupt, pseudonym)
	}
	return e, nil
}

// OpenKey unwraps a scope's data key from env, or, when env's KEK is no longer held (destroyed
// after a rotation), from the scope's key envelope under the active KEK in the envelope sources.
func (o *Opener) OpenKey(ctx context.Context, scope string, env keys.Envelope) ([]byte, error) {
	dek, err := env.Open(ctx, o.kms, scope)
	if err == nil || !errors.Is(err, keys.ErrUnwrap) || len(o.sources) == 0 {
		return dek, err
	}
	cur, ok, eerr := o.Envelope(ctx, scope)
	if eerr != nil || !ok {
		return nil, err
	}
	return cur.Open(ctx, o.kms, scope)
}

// Envelope returns the scope's key envelope under the KMS's active KEK, read from the first
// envelope source that holds one; ok is false when none does.
func (o *Opener) Envelope(ctx context.Context, scope string) (keys.Envelope, bool, error) {
	o.mu.Lock()
	e, ok := o.envelopes[scope]
	o.mu.Unlock()
	if ok {
		return e, true, nil
	}
	name := EnvelopeName(o.kms.KeyID(), scope)
	var errs []error
	for _, t := range o.sources {
		b, err := ReadAll(ctx, t, name, maxHeader)
		if errors.Is(err, target.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e, err := DecodeEnvelope(b, scope)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
			continue
		}
		o.mu.Lock()
		o.envelopes[scope] = e
		o.mu.Unlock()
		return e, true, nil
	}
	return keys.Envelope{}, false, errors.Join(errs...)
}
