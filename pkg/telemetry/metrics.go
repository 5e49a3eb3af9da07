package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"
)

// Metrics is the process's MeterProvider, read on demand by a Prometheus scrape. Every Custos
// package records into the global MeterProvider (or one injected in its Config), so installing
// this one makes all their instruments appear on /metrics: OTel names translate to Prometheus
// ones ("custos.events.acked" with unit "{event}" becomes custos_events_acked_total, unit "s"
// adds _seconds; docs/metrics.md lists them).
type Metrics struct {
	provider *metric.MeterProvider
	registry *prometheus.Registry
}

// NewMetrics builds the MeterProvider with a Prometheus exporter on its own registry (not
// client_golang's global one, so tests can build several). The resource (service.name,
// service.instance.id) becomes the target_info metric. It does not install the provider
// globally: see Install.
func NewMetrics(ctx context.Context, cfg Config) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// Exemplars are taken only from sampled spans (the SDK's default trace-based filter): a
	// histogram bucket then links to a trace that exists.
	mp := metric.NewMeterProvider(metric.WithReader(exp), metric.WithResource(res))
	return &Metrics{provider: mp, registry: reg}, nil
}

// Provider is the MeterProvider to inject into packages' Configs.
func (m *Metrics) Provider() *metric.MeterProvider { return m.provider }

// Install makes the provider the global MeterProvider, for packages that default to it.
func (m *Metrics) Install() { otel.SetMeterProvider(m.provider) }

// Handler serves the metrics in the Prometheus text format, or OpenMetrics when the scraper
// asks for it (Accept: application/openmetrics-text): only OpenMetrics carries exemplars.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError})
}

// Shutdown stops the provider; later scrapes see no Custos metrics. Safe twice.
func (m *Metrics) Shutdown(ctx context.Context) error {
	if err := m.provider.Shutdown(ctx); err != nil && !errors.Is(err, metric.ErrReaderShutdown) {
		return err
	}
	return nil
}
