package node

import (
	"context"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/telemetry"
)

// Observe sets up the traces and metrics of one process of service (custos-worker,
// custos-scheduler, custos-server) named instance ("" for host-pid): the trace exporter the
// configuration names and a MeterProvider installed as the global one before anything creates
// instruments, so every package records into it. It returns the metrics, to serve at /metrics,
// and what flushes and stops both.
func Observe(ctx context.Context, cfg *config.Config, service, instance string) (*telemetry.Metrics, func(), error) {
	tcfg := telemetry.Config{ServiceName: service, InstanceID: instance, Exporter: cfg.Telemetry.Exporter,
		Endpoint: cfg.Telemetry.Endpoint, Insecure: cfg.Telemetry.Insecure}
	shutdown, err := telemetry.Setup(ctx, tcfg)
	if err != nil {
		return nil, nil, err
	}
	metrics, err := telemetry.NewMetrics(ctx, tcfg)
	if err != nil {
		shutdown(context.Background()) //nolint:errcheck // the setup error is returned
		return nil, nil, err
	}
	metrics.Install()
	return metrics, func() {
		metrics.Shutdown(context.Background()) //nolint:errcheck // at exit
		shutdown(context.Background())         //nolint:errcheck // at exit
	}, nil
}
