package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/pkg/telemetry"
)

// startAdmin serves /metrics and /healthz (healthy while NATS is connected) on listen, unless
// it is "off". As in the worker, a listener that cannot bind is logged as an error and the
// scheduler runs on: ticks matter more than their metrics.
func startAdmin(ctx context.Context, listen string, m *telemetry.Metrics, nc *nats.Conn, log *slog.Logger) *telemetry.Admin {
	a := telemetry.NewAdmin(telemetry.AdminConfig{Listen: listen, Metrics: m.Handler(), Logger: log.With("component", "admin"),
		Healthy: func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("not connected to NATS")
			}
			return nil
		}})
	if listen == telemetry.AdminOff {
		return a
	}
	if err := a.Start(ctx); err != nil {
		log.ErrorContext(ctx, "no /metrics: the admin listener did not start", "listen", listen, "err", err)
	}
	return a
}
