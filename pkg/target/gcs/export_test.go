package gcs

import (
	"context"
	"net/http"
)

// NewWithHooks is New with an HTTP transport the test controls (emulator endpoints only) and a
// List page size (0 for the default).
func NewWithHooks(ctx context.Context, cfg Config, transport http.RoundTripper, pageSize int) (*Target, error) {
	return newTarget(ctx, cfg, hooks{transport: transport, pageSize: pageSize})
}
