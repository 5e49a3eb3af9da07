package node

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/alert"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// Scheduler is a running scheduler with the RPO monitor beside it: both read the policy, and an
// RPO breach is the other half of "was the schedule kept".
type Scheduler struct {
	svc *schedule.Service
	mon *rpo.Monitor
	log *slog.Logger
}

// StartScheduler starts the scheduler of policy p as replica name, and the RPO monitor, whose
// alerts go to the webhook cfg names (none: they are logged and counted only).
func StartScheduler(ctx context.Context, cfg *config.Config, js jetstream.JetStream, p *policy.Policy, name string, log *slog.Logger) (*Scheduler, error) {
	notifier, err := Notifier(cfg, name, log)
	if err != nil {
		return nil, err
	}
	svc, err := schedule.New(js, schedule.Config{Policy: p, Replica: name, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := svc.Start(ctx); err != nil {
		return nil, err
	}
	s := &Scheduler{svc: svc, log: log}
	// Setup is not cut short by an early SIGTERM: Stop handles it.
	setup := context.WithoutCancel(ctx)
	fail := func(err error) (*Scheduler, error) {
		svc.Stop(context.Background()) //nolint:errcheck // the start error is returned
		return nil, err
	}
	index, err := catalog.Open(setup, js, 1)
	if err != nil {
		return fail(err)
	}
	snaps, err := snapshot.Open(setup, js, 1)
	if err != nil {
		return fail(err)
	}
	s.mon, err = rpo.New(rpo.Config{Index: index, Snapshots: snaps, Policy: p, Logger: log.With("component", "rpo"),
		Notifier: notifier})
	if err != nil {
		return fail(err)
	}
	if err := s.mon.Start(setup); err != nil {
		return fail(err)
	}
	return s, nil
}

// Notifier is the webhook of alerts.webhook_url, or a notifier that drops alerts.
func Notifier(cfg *config.Config, receiver string, log *slog.Logger) (alert.Notifier, error) {
	if cfg.Alerts.WebhookURL == "" {
		return alert.Nop{}, nil
	}
	if receiver == "" {
		receiver = "custos"
	}
	return alert.NewWebhook(alert.WebhookConfig{URL: cfg.Alerts.WebhookURL, Receiver: receiver,
		Logger: log.With("component", "alert")})
}

// Stats are the scheduler's counters.
func (s *Scheduler) Stats() schedule.Stats { return s.svc.Stats() }

// Stop stops the monitor and the scheduler.
func (s *Scheduler) Stop(ctx context.Context) error {
	err := errors.Join(s.mon.Stop(ctx), s.svc.Stop(ctx))
	st := s.svc.Stats()
	s.log.Info("scheduler exited", "fired", st.Fired, "skipped", st.Skipped, "taken_over", st.TakenOver, "errors", st.Errors)
	return err
}
