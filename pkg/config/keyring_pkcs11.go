//go:build cgo

package config

import (
	"context"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/pkcs11kms"
)

// openPKCS11 opens the KEK ring on a PKCS#11 token; the vendor's library is loaded through cgo.
func openPKCS11(ctx context.Context, module, token, prefix, pin string, create bool) (keys.Ring, error) {
	return pkcs11kms.Open(ctx, pkcs11kms.Config{Module: module, TokenLabel: token, PIN: pin, LabelPrefix: prefix}, create)
}
