// Package rpo watches the recovery point objective of every data class: how old the newest
// committed backup of the class is, against the RPO the policy sets (seed 002, 4.1; seed 003:
// monitoring and alerts for backup failures).
//
// The Monitor exports, per class, the gauges custos_rpo_age_seconds{class} and
// custos_rpo_breached{class} (0 or 1), and on a breach logs a WARN and adds one to
// custos_alerts_total{kind="rpo_breach",severity="critical"}, once per breach: the alert fires
// again only after the class has met its RPO in between. A configured alert.Notifier gets the
// state of every class at every check (alert CustosRPOBreach); a webhook notifier posts once
// when a breach starts and once when it ends.
package rpo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/custos-dev/custos/pkg/alert"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// Index is the part of the catalog the monitor reads; *catalog.Index implements it.
type Index interface {
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
}

var _ Index = (*catalog.Index)(nil)

// Clock is the monitor's source of time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// Snapshots lists committed snapshots; *snapshot.Store implements it.
type Snapshots interface {
	List(ctx context.Context, class string) ([]snapshot.Snapshot, error)
}

// WithSnapshots adds one stand-in pack record per complete committed snapshot to packs, so
// Compute counts a snapshot that stored nothing new (every record unchanged) as a backup.
func WithSnapshots(packs []catalog.PackRecord, snaps []snapshot.Snapshot) []catalog.PackRecord {
	out := slices.Clone(packs)
	for _, sn := range snaps {
		if !sn.Partial {
			out = append(out, catalog.PackRecord{Class: sn.Class, Committed: sn.Committed, NewestEvent: sn.Time})
		}
	}
	return out
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Status is the RPO state of one class (or of one customer in one class).
type Status struct {
	Class string
	RPO   time.Duration
	// Newest is when the newest backup was committed; zero when there is none.
	Newest time.Time
	// Age is now - Newest; 0 when there is no backup.
	Age time.Duration
	// Breached is true when Age exceeds RPO, or when the class has no backup at all.
	Breached bool
}

// committedAt is when a pack was written: its commit time, or its newest event for an entry
// that has no commit time.
func committedAt(r catalog.PackRecord) time.Time {
	if r.Committed.IsZero() {
		return r.NewestEvent
	}
	return r.Committed
}

// Compute returns the status of every class of p, in policy order, from the indexed packs. A
// class with no pack is in breach: there is nothing to restore. It depends on nothing but its
// arguments.
func Compute(p *policy.Policy, packs []catalog.PackRecord, now time.Time) []Status {
	newest := map[string]time.Time{}
	for _, r := range packs {
		if at := committedAt(r); at.After(newest[r.Class]) {
			newest[r.Class] = at
		}
	}
	out := make([]Status, 0, len(p.Classes))
	for _, c := range p.Classes {
		s := Status{Class: c.Name, RPO: c.RPO, Newest: newest[c.Name]}
		if s.Newest.IsZero() {
			s.Breached = true
		} else {
			s.Age = max(now.Sub(s.Newest), 0)
			s.Breached = s.Age > c.RPO
		}
		out = append(out, s)
	}
	return out
}

// ForCustomer returns, for each class of p in which a customer has backed-up items, the
// status of that customer's newest backup: the latest commit time of the packs holding its
// items (recs, from catalog.Index.Customer). packs gives the commit times. Classes where the
// customer has no item are left out: no data is not a breach. A quiet customer's backup ages
// like any other; compare Newest with the customer's last change where that matters.
func ForCustomer(p *policy.Policy, recs []catalog.CustomerRecord, packs []catalog.PackRecord, now time.Time) []Status {
	byID := make(map[string]catalog.PackRecord, len(packs))
	for _, r := range packs {
		byID[r.Pack] = r
	}
	var mine []catalog.PackRecord
	for _, cr := range recs {
		if r, ok := byID[cr.Pack]; ok && len(cr.Items) > 0 {
			mine = append(mine, r)
		}
	}
	var out []Status
	for _, s := range Compute(p, mine, now) {
		if !s.Newest.IsZero() {
			out = append(out, s)
		}
	}
	return out
}

// Config configures a Monitor. Index and Policy are required.
type Config struct {
	Index  Index
	Policy *policy.Policy
	// Snapshots, when set, lists snapshots read from sources: a committed complete snapshot is
	// a backup of its class at its commit time, even when nothing changed and it stored no pack.
	Snapshots Snapshots
	// Interval between checks. Default 1 minute.
	Interval time.Duration
	// Logger, Clock and MeterProvider default to a discarding logger, the wall clock and the
	// global meter provider.
	Logger        *slog.Logger
	Clock         Clock
	MeterProvider metric.MeterProvider
	// Notifier, when set, is told every class's state (AlertName) after each check.
	Notifier alert.Notifier
}

// AlertName is the alertname of an RPO breach; its labels are class and severity.
const AlertName = "CustosRPOBreach"

// Attribute values of custos_alerts_total for an RPO breach.
const (
	AlertKind     = "rpo_breach"
	AlertSeverity = "critical"
)

// Monitor checks every class's RPO each Interval. It has the lifecycle of every Custos
// long-running part: New, Start, Stop (safe before Start and twice).
type Monitor struct {
	cfg    Config
	alerts metric.Int64Counter

	mu       sync.Mutex
	status   map[string]Status // by class, from the last check
	breached map[string]bool   // classes whose breach has been alerted
	loop     periodic.Loop
}

// New validates cfg and returns a stopped Monitor.
func New(cfg Config) (*Monitor, error) {
	if cfg.Index == nil || cfg.Policy == nil {
		return nil, errors.New("rpo: Index and Policy are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	m := &Monitor{cfg: cfg, status: map[string]Status{}, breached: map[string]bool{}}
	m.loop = periodic.Loop{Interval: cfg.Interval,
		Run: func(ctx context.Context) error {
			_, err := m.Check(ctx)
			return err
		},
		OnError: func(err error) { m.cfg.Logger.Warn("rpo check failed", "err", err) }}
	meter := cfg.MeterProvider.Meter("github.com/custos-dev/custos/pkg/rpo")
	var err error
	if m.alerts, err = meter.Int64Counter("custos.alerts",
		metric.WithDescription("Alerts raised, by kind and severity; an RPO breach counts once per breach"),
		metric.WithUnit("{alert}")); err != nil {
		return nil, fmt.Errorf("rpo: metric: %w", err)
	}
	if _, err = meter.Float64ObservableGauge("custos.rpo.age",
		metric.WithDescription("Age of the newest committed backup of a class; absent while the class has none"),
		metric.WithUnit("s"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			m.mu.Lock()
			defer m.mu.Unlock()
			for c, s := range m.status {
				if !s.Newest.IsZero() {
					o.Observe(s.Age.Seconds(), metric.WithAttributes(attribute.String("class", c)))
				}
			}
			return nil
		})); err != nil {
		return nil, fmt.Errorf("rpo: metric: %w", err)
	}
	if _, err = meter.Int64ObservableGauge("custos.rpo.breached",
		metric.WithDescription("1 while the newest backup of a class is older than its RPO (or there is none), else 0"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			m.mu.Lock()
			defer m.mu.Unlock()
			for c, s := range m.status {
				var v int64
				if s.Breached {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(attribute.String("class", c)))
			}
			return nil
		})); err != nil {
		return nil, fmt.Errorf("rpo: metric: %w", err)
	}
	return m, nil
}

// Start checks at once, then every Interval until Stop. A no-op when already started.
func (m *Monitor) Start(ctx context.Context) error { return m.loop.Start(ctx) }

// Stop ends the loop and waits for the check in progress. Safe twice and before Start.
func (m *Monitor) Stop(ctx context.Context) error { return m.loop.Stop(ctx) }

// Check reads the index once, updates the gauges, and alerts on every class that has entered a
// breach since the previous check. When the index cannot be read the gauges keep their last
// values and the error is returned.
func (m *Monitor) Check(ctx context.Context) ([]Status, error) {
	packs, err := m.cfg.Index.Packs(ctx)
	if err != nil {
		return nil, fmt.Errorf("rpo: %w", err)
	}
	if m.cfg.Snapshots != nil {
		snaps, err := m.cfg.Snapshots.List(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("rpo: %w", err)
		}
		packs = WithSnapshots(packs, snaps)
	}
	now := m.cfg.Clock.Now()
	st := Compute(m.cfg.Policy, packs, now)
	m.record(ctx, st)
	m.notify(ctx, st, now)
	return st, nil
}

// notify tells the notifier every class's state; it posts only changes. A failed delivery is
// logged by the notifier and tried again at the next check, so it does not fail the check.
func (m *Monitor) notify(ctx context.Context, st []Status, now time.Time) {
	if m.cfg.Notifier == nil {
		return
	}
	for _, s := range st {
		a := alert.Alert{Name: AlertName, Firing: s.Breached,
			Labels: map[string]string{"class": s.Class, alert.LabelSeverity: AlertSeverity}}
		if s.Breached {
			a.StartsAt = now
			if !s.Newest.IsZero() {
				a.StartsAt = s.Newest.Add(s.RPO)
			}
			a.Annotations = map[string]string{"summary": "RPO of class " + s.Class + " breached",
				"description": breachText(s)}
		}
		_ = m.cfg.Notifier.Notify(ctx, a)
	}
}

func breachText(s Status) string {
	if s.Newest.IsZero() {
		return "The class has no committed backup; its RPO is " + policy.FormatDuration(s.RPO) + "."
	}
	return "The newest backup is " + policy.FormatDuration(s.Age.Round(time.Second)) + " old; the RPO is " +
		policy.FormatDuration(s.RPO) + "."
}

// record updates the gauges and counts and logs every class that entered a breach.
func (m *Monitor) record(ctx context.Context, st []Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range st {
		m.status[s.Class] = s
		switch {
		case s.Breached && !m.breached[s.Class]:
			m.breached[s.Class] = true
			m.alerts.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", AlertKind),
				attribute.String("severity", AlertSeverity)))
			if s.Newest.IsZero() {
				m.cfg.Logger.Warn("RPO breached: the class has no committed backup", "class", s.Class,
					"rpo", policy.FormatDuration(s.RPO))
			} else {
				m.cfg.Logger.Warn("RPO breached: the newest backup is older than the RPO", "class", s.Class,
					"age", s.Age.Round(time.Second), "rpo", policy.FormatDuration(s.RPO), "newest", s.Newest)
			}
		case !s.Breached && m.breached[s.Class]:
			delete(m.breached, s.Class)
			m.cfg.Logger.Info("RPO met again", "class", s.Class, "age", s.Age.Round(time.Second),
				"rpo", policy.FormatDuration(s.RPO))
		}
	}
}
