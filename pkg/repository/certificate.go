package repository

import (
	"context"
	"fmt"

	"github.com/custos-dev/custos/pkg/target"
)

// CertificatePrefix starts the name of every deletion certificate.
const CertificatePrefix = "certificates/"

// maxCertificate bounds a certificate read back.
const maxCertificate = 64 << 10

// CertificateName is the name of a customer's deletion certificate for erasure id: the signed
// certificate as the worker stored it (docs/design.md section 12). Certificates hold pseudonyms
// and key-version ids only, so they are stored as they are, beside the encrypted record, where
// an auditor can read and verify them without the broker.
func CertificateName(pseudonym, id string) string {
	return CertificatePrefix + shard(pseudonym) + "/" + pseudonym + "/" + id
}

// WriteCertificate writes a signed certificate to every target, create-only (a retried write
// finds its earlier copy), and returns the names of the targets that hold it with the errors of
// the others. A certificate is evidence, not data a restore needs: a target that misses it is
// reported, not queued for repair.
func WriteCertificate(ctx context.Context, targets []target.Target, pseudonym, id string, signed []byte) (held []string, errs []error) {
	for _, t := range targets {
		if err := putOnce(ctx, t, CertificateName(pseudonym, id), signed, target.PutOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
			continue
		}
		held = append(held, t.Name())
	}
	return held, errs
}

// ReadCertificates returns the signed certificates a target holds for a customer, by id.
func ReadCertificates(ctx context.Context, t target.Reader, pseudonym string) (map[string][]byte, error) {
	prefix := CertificatePrefix + shard(pseudonym) + "/" + pseudonym + "/"
	out := map[string][]byte{}
	err := t.List(ctx, prefix, func(info target.Info) error {
		b, err := ReadAll(ctx, t, info.Name, maxCertificate)
		if err != nil {
			return err
		}
		out[info.Name[len(prefix):]] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
