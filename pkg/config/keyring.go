package config

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/awskms"
)

// OpenKeyring opens the KEK backend keys.backend names and the pseudonym key in keys.file. With
// create (keys.create), a missing key file, and with another backend a missing first KEK
// version, is created.
func (c *Config) OpenKeyring(ctx context.Context, create bool) (*keys.Keyring, error) {
	path := c.Path(c.Keys.File)
	switch c.Keys.Backend {
	case "", "file":
		r, err := keys.OpenFileRing(path, create)
		if err != nil {
			return nil, err
		}
		return keys.NewKeyring(r, r.LocalKMS()), nil
	default:
		p, err := keys.LoadPseudonyms(path, create)
		if err != nil {
			return nil, err
		}
		r, err := c.openExternalRing(ctx, create)
		if err != nil {
			return nil, err
		}
		return keys.NewKeyring(r, p), nil
	}
}

func (c *Config) openExternalRing(ctx context.Context, create bool) (keys.Ring, error) {
	switch c.Keys.Backend {
	case "pkcs11":
		p := c.Keys.PKCS11
		pin := os.Getenv("CUSTOS_PKCS11_PIN")
		if p.PINFile != "" {
			b, err := os.ReadFile(c.Path(p.PINFile))
			if err != nil {
				return nil, fmt.Errorf("keys.pkcs11.pin_file: %w", err)
			}
			pin = strings.TrimSpace(string(b))
		}
		return openPKCS11(ctx, p.Module, p.TokenLabel, p.LabelPrefix, pin, create)
	case "aws_kms":
		a := c.Keys.AWSKMS
		return awskms.Open(ctx, awskms.Config{Endpoint: a.Endpoint, Region: a.Region, Alias: a.Alias}, create)
	}
	return nil, fmt.Errorf("keys.backend %q: want file, pkcs11 or aws_kms", c.Keys.Backend)
}
