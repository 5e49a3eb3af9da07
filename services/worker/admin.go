package main

import (
	"context"
	"log/slog"

	"github.com/custos-dev/custos/pkg/telemetry"
)

const defaultName = "custos-worker"

// startAdmin serves /metrics and /healthz on listen ("off": nothing). A listener that cannot
// bind is logged as an error and the worker runs on: backups matter more than their metrics.
func startAdmin(ctx context.Context, listen string, m *telemetry.Metrics, healthy func(context.Context) error, log *slog.Logger) *telemetry.Admin {
	a := telemetry.NewAdmin(telemetry.AdminConfig{Listen: listen, Metrics: m.Handler(), Healthy: healthy,
		Logger: log.With("component", "admin")})
	if listen == telemetry.AdminOff {
		return a
	}
	if err := a.Start(ctx); err != nil {
		log.ErrorContext(ctx, "no /metrics: the admin listener did not start", "listen", listen, "err", err)
	}
	return a
}
