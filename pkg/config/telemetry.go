package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Telemetry says how a service reports: traces (exporter, endpoint), the admin listener that
// serves /metrics and /healthz, and the log format.
type Telemetry struct {
	// Exporter is the trace exporter: otlp-grpc, otlp-http, stdout or none.
	Exporter string `yaml:"exporter"`
	Endpoint string `yaml:"endpoint"`
	// Insecure sends traces without TLS to a host:port Endpoint (a URL's scheme decides alone).
	Insecure bool `yaml:"insecure"`
	// MetricsListen is the worker's admin listener, host:port, or "off". Default
	// 127.0.0.1:9464. SchedulerMetricsListen is the scheduler's (default 127.0.0.1:9465), so
	// both can run on one host from one file.
	MetricsListen          string `yaml:"metrics_listen"`
	SchedulerMetricsListen string `yaml:"scheduler_metrics_listen"`
	// LogFormat is json or text; empty means JSON unless standard error is a terminal.
	LogFormat string `yaml:"log_format"`
}

// Alerts says where alerts go.
type Alerts struct {
	// WebhookURL receives Alertmanager-compatible webhook notifications (an RPO breach and its
	// end); empty sends none. http:// or https://.
	WebhookURL string `yaml:"webhook_url"`
}

// ListenOr returns listen, or def when listen is empty.
func ListenOr(listen, def string) string {
	if strings.TrimSpace(listen) == "" {
		return def
	}
	return strings.TrimSpace(listen)
}

func (c *Config) validateTelemetry() []error {
	var errs []error
	t := c.Telemetry
	for _, l := range []struct{ key, val string }{
		{"telemetry.metrics_listen", t.MetricsListen}, {"telemetry.scheduler_metrics_listen", t.SchedulerMetricsListen},
	} {
		v := strings.TrimSpace(l.val)
		if v == "" || v == "off" {
			continue
		}
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s %q: want host:port (127.0.0.1:9464, :9464) or off", l.key, l.val))
		}
	}
	switch strings.ToLower(strings.TrimSpace(t.LogFormat)) {
	case "", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("telemetry.log_format %q: want json or text", t.LogFormat))
	}
	if w := c.Alerts.WebhookURL; w != "" {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL may hold a token: do not repeat it.
			errs = append(errs, errors.New("alerts.webhook_url: want an http:// or https:// URL"))
		}
	}
	return errs
}
