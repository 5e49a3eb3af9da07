//go:build !cgo

package config

import (
	"context"
	"errors"

	"github.com/custos-dev/custos/pkg/keys"
)

// openPKCS11 refuses: a build without cgo (the static container image) cannot load a vendor's
// PKCS#11 library.
func openPKCS11(context.Context, string, string, string, string, bool) (keys.Ring, error) {
	return nil, errors.New("keys.backend pkcs11: this binary was built without cgo (CGO_ENABLED=0) and cannot load a PKCS#11 library; use a build with cgo (docs/kms-pkcs11.md)")
}
