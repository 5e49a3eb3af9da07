package rclone

import (
	"context"
	"fmt"
	"maps"

	rfs "github.com/rclone/rclone/fs"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/registry"
)

// Importing the package registers the kind: the worker and the admin CLI import it for that.
// rclone's own log lines below errors (notices of files removed after a failed upload, say) are
// silenced: every failure reaches the caller as an error, which the services log.
func init() {
	registry.Register(Kind, registry.Kind{Validate: ValidateSpec, Open: OpenSpec})
	rfs.GetConfig(context.Background()).LogLevel = rfs.LogLevelError
}

// ValidateSpec checks a target of the runtime configuration without reading secrets or reaching
// the remote: a supported backend, options the backend has, no secret among them, the required
// ones present.
func ValidateSpec(s registry.Spec) error {
	opts := maps.Clone(s.Options)
	delete(opts, SecretsFileOption)
	_, _, err := Config{Label: s.Name, Backend: s.Provider, Root: s.Path, Options: opts}.check()
	return err
}

// OpenSpec opens a target of the runtime configuration, with secrets from the environment and
// the secrets file (FromSpec). A secrets file that cannot be read is a configuration error
// (permanent).
func OpenSpec(ctx context.Context, s registry.Spec) (target.Target, error) {
	cfg, err := FromSpec(s, nil)
	if err != nil {
		return nil, fmt.Errorf("rclone: %s: %w: %w", s.Name, target.ErrPermanent, err)
	}
	return New(ctx, cfg)
}
