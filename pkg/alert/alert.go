// Package alert sends Custos alerts (an RPO breach, a failed restore drill) to people: a
// Notifier takes an Alert each time its state is known, and the Webhook notifier POSTs the
// Alertmanager webhook payload (version "4") to a configured URL once per change of state,
// firing once and resolved once, never repeated while the condition holds.
//
// Alerts carry class, target and kind labels, never a customer id or pseudonym.
package alert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Status of an alert.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Label names every Custos alert uses.
const (
	LabelName     = "alertname"
	LabelSeverity = "severity"
)

// Errors.
var (
	// ErrBadAlert is returned for an alert without a name.
	ErrBadAlert = errors.New("alert: an alert needs a name")
	// ErrBadURL is returned by NewWebhook for a URL that is not http(s)://host/...
	ErrBadURL = errors.New("alert: webhook_url must be an http:// or https:// URL")
	// ErrDelivery is returned when the webhook did not accept a notification after retries.
	ErrDelivery = errors.New("alert: webhook delivery failed")
)

// Alert is the state of one alert. Name and Labels identify it: the same name and labels are
// the same alert, firing or resolved.
type Alert struct {
	// Name is the alertname label, e.g. "CustosRPOBreach".
	Name string
	// Labels identify the alert (class, target, severity...). Never customer data.
	Labels map[string]string
	// Annotations describe it for people (summary, description).
	Annotations map[string]string
	// Firing is true while the condition holds, false once it is resolved.
	Firing bool
	// StartsAt is when the condition began; zero means when it was first seen firing.
	StartsAt time.Time
	// EndsAt is when it was resolved; zero means now (for a resolved alert).
	EndsAt time.Time
}

// Notifier receives the state of alerts. Callers may report a state as often as they like
// (every check); a notifier tells people only about changes.
type Notifier interface {
	Notify(ctx context.Context, a Alert) error
}

// Nop is a Notifier that drops every alert: alerts are not configured.
type Nop struct{}

// Notify does nothing.
func (Nop) Notify(context.Context, Alert) error { return nil }

// Clock is the notifier's source of time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// WebhookConfig configures a Webhook. URL is required.
type WebhookConfig struct {
	URL string
	// Receiver is the payload's receiver field. Default "custos".
	Receiver string
	// RetryMax is how many times a failed POST is retried (connection errors, 5xx, 429).
	// Default 4. RetryWaitMin and RetryWaitMax bound the exponential backoff between tries
	// (defaults 1 s and 30 s).
	RetryMax     int
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// Timeout bounds one POST. Default 10 s.
	Timeout time.Duration
	Clock   Clock
	Logger  *slog.Logger
}

// Webhook posts Alertmanager-compatible notifications. It remembers which alerts it has told
// about as firing, so it posts once when an alert starts firing and once when it is resolved.
// A delivery that fails is not remembered: the next Notify of the same state tries again.
type Webhook struct {
	cfg    WebhookConfig
	client *retryablehttp.Client

	// mu is held for a whole Notify, delivery included: two checks reporting the same change
	// at once must not both post it. Notifications are rare, so serializing them costs nothing.
	mu     sync.Mutex
	firing map[string]time.Time // fingerprint -> StartsAt of alerts delivered as firing
}

// NewWebhook validates cfg and returns a Webhook.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, ErrBadURL
	}
	if cfg.Receiver == "" {
		cfg.Receiver = "custos"
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 4
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = time.Second
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		cfg.RetryWaitMax = max(30*time.Second, cfg.RetryWaitMin)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := retryablehttp.NewClient()
	// No keep-alive: notifications are rare, and an idle connection would outlive Stop.
	c.HTTPClient = &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}
	c.RetryMax, c.RetryWaitMin, c.RetryWaitMax = cfg.RetryMax, cfg.RetryWaitMin, cfg.RetryWaitMax
	// Its own logger would print the URL, which may hold a token.
	c.Logger = nil
	return &Webhook{cfg: cfg, client: c, firing: map[string]time.Time{}}, nil
}

// Payload is the body of an Alertmanager webhook notification (version 4).
type Payload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []PayloadAlert    `json:"alerts"`
}

// PayloadAlert is one alert of a Payload.
type PayloadAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Notify posts a firing alert that was not firing, or a resolved alert that was; any other
// call does nothing and returns nil. An error matches ErrDelivery (or ErrBadAlert).
func (w *Webhook) Notify(ctx context.Context, a Alert) error {
	if a.Name == "" {
		return ErrBadAlert
	}
	labels := maps.Clone(a.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelName] = a.Name
	fp := fingerprint(labels)

	w.mu.Lock()
	defer w.mu.Unlock()
	started, firing := w.firing[fp]
	if a.Firing == firing {
		return nil // no change: people have been told
	}
	now := w.cfg.Clock.Now().UTC()
	pa := PayloadAlert{Labels: labels, Annotations: a.Annotations, Fingerprint: fp}
	if pa.Annotations == nil {
		pa.Annotations = map[string]string{}
	}
	if a.Firing {
		pa.Status, pa.StartsAt = StatusFiring, a.StartsAt.UTC()
		if a.StartsAt.IsZero() {
			pa.StartsAt = now
		}
	} else {
		pa.Status, pa.StartsAt, pa.EndsAt = StatusResolved, started, a.EndsAt.UTC()
		if a.EndsAt.IsZero() {
			pa.EndsAt = now
		}
	}
	if err := w.post(ctx, pa); err != nil {
		w.cfg.Logger.WarnContext(ctx, "alert notification not delivered; it is sent again at the next check",
			"alert", a.Name, "status", pa.Status, "err", err)
		return err
	}
	if a.Firing {
		w.firing[fp] = pa.StartsAt
	} else {
		delete(w.firing, fp)
	}
	w.cfg.Logger.InfoContext(ctx, "alert notification delivered", "alert", a.Name, "status", pa.Status)
	return nil
}

func (w *Webhook) post(ctx context.Context, pa PayloadAlert) error {
	p := Payload{
		Version: "4", GroupKey: "{}:" + pa.Fingerprint, Status: pa.Status, Receiver: w.cfg.Receiver,
		GroupLabels: map[string]string{LabelName: pa.Labels[LabelName]}, CommonLabels: pa.Labels,
		CommonAnnotations: pa.Annotations, Alerts: []PayloadAlert{pa},
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDelivery, err)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDelivery, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "custos-alert/1")
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDelivery, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: webhook answered %s", ErrDelivery, resp.Status)
	}
	return nil
}

// fingerprint identifies an alert by its labels, as Alertmanager does (a stable hash).
func fingerprint(labels map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
