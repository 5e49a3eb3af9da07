// Package node assembles the long-running parts of Custos from a runtime configuration: a
// worker with its repairer, scrub and staging cleanup (what custos-worker runs), and the
// scheduler with the RPO monitor (what custos-scheduler runs). The binaries and `custos server`
// (which runs both beside an embedded broker) share this one assembly, so they cannot drift.
package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/custos-dev/custos/pkg/alert"
	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/scrub"
	"github.com/custos-dev/custos/pkg/worker"
)

// stopper is anything node starts and stops again.
type stopper interface{ Stop(context.Context) error }

// Worker is a running worker and its companions.
type Worker struct {
	parts *config.Parts
	w     *worker.Worker
	log   *slog.Logger
	// others stop after the worker drained, last started first.
	others []stopper
	closes []func() error
}

// StartWorker opens what cfg names (broker, keys, index, targets, sources) as worker name and
// starts the worker, its repairer, the staging cleanup and, when configured, the scrub. It
// refuses to start with a key file that does not match the backups, or when a class cannot
// reach its min_replicas. Stop undoes everything.
func StartWorker(ctx context.Context, cfg *config.Config, name string, log *slog.Logger) (_ *Worker, err error) {
	parts, err := cfg.Open(ctx, name, log)
	if err != nil {
		return nil, err
	}
	n := &Worker{parts: parts, log: log, closes: []func() error{parts.Close}}
	defer func() {
		if err != nil {
			n.stopOthers(context.Background()) //nolint:errcheck // the start error is returned
		}
	}()
	// A worker with another key file would write backups no restore with the right one can
	// find: refuse to start.
	if err := parts.Repository().CheckKey(ctx); err != nil {
		return nil, err
	}
	classes := map[string]worker.Class{}
	for c, cl := range cfg.Classes {
		classes[c] = worker.Class{Targets: cfg.TargetNames(cl.Targets), MinReplicas: cl.MinReplicas, Retain: cl.Retain,
			SnapshotTasks: cl.SnapshotTasks}
	}
	sources, closeSources, err := cfg.OpenSources(log)
	if err != nil {
		return nil, err
	}
	n.closes = append(n.closes, closeSources)
	notifier, err := Notifier(cfg, name, log)
	if err != nil {
		return nil, err
	}
	wc := cfg.Worker
	n.w, err = worker.New(worker.Deps{JS: parts.JS, Keys: parts.Keys, Pseudonyms: parts.KMS, Index: parts.Index, Repairs: parts.Repairs,
		Snapshots: parts.Snapshots, Records: parts.Records, Sources: sources, KEKs: parts.KMS},
		WorkerConfig(cfg, classes, parts, notifier, log))
	if err != nil {
		return nil, err
	}
	rep, err := repair.New(repair.Config{Queue: parts.Repairs, Targets: parts.Targets, Index: parts.Index,
		Interval: wc.RepairInterval, SpoolDir: cfg.Path(wc.SpoolDir), Logger: log.With("component", "repairer")})
	if err != nil {
		return nil, err
	}
	// A target may be down: start if every class still reaches min_replicas (repairs catch
	// the others up), and remove staging files that killed writers left on fs targets.
	if err := cfg.CheckReachable(ctx, parts.Targets, log); err != nil {
		return nil, err
	}
	staging := config.StagingCleanup{Logger: log.With("component", "staging-cleanup")}.Loop(parts.Targets)
	if err := staging.Start(ctx); err != nil {
		return nil, err
	}
	n.others = append(n.others, staging)
	if err := n.w.Start(ctx); err != nil {
		return nil, err
	}
	if _, err := audit.RecordPolicyFile(ctx, parts.JS, cfg.Path(cfg.PolicyFile), time.Now()); err != nil {
		log.Error("the policy in force is not recorded in the audit log (the next start tries again)", "err", err)
	}
	if err := rep.Start(ctx); err != nil {
		n.w.Stop(context.Background()) //nolint:errcheck // the start error is returned
		return nil, err
	}
	n.others = append(n.others, rep)
	if every := wc.ScrubEvery(); every > 0 {
		names, retain := map[string][]string{}, map[string]time.Duration{}
		for c, cl := range classes {
			names[c], retain[c] = cl.Targets, cl.Retain
		}
		scr, err := scrub.New(scrub.Config{Interval: every, Rate: wc.ScrubBytesPerSecond(), Logger: log.With("component", "scrub"),
			Verify: repository.VerifyConfig{Index: parts.Index, Catalog: parts.Index, Keys: parts.Keys,
				Opener: parts.Repository().Opener, Targets: parts.Targets,
				Classes: repository.ClassTargets(parts.Targets, names), PutOptions: repository.RetainOptions(retain, nil),
				SpoolDir: cfg.Path(wc.SpoolDir)}})
		if err == nil {
			err = scr.Start(ctx)
		}
		if err != nil {
			n.w.Stop(context.Background()) //nolint:errcheck // the start error is returned
			return nil, err
		}
		n.others = append(n.others, scr)
	}
	return n, nil
}

// WorkerConfig is the worker.Config cfg describes; failed drills go to notifier.
func WorkerConfig(cfg *config.Config, classes map[string]worker.Class, parts *config.Parts, notifier alert.Notifier, log *slog.Logger) worker.Config {
	wc := cfg.Worker
	return worker.Config{
		Classes: classes, Targets: parts.Targets, Logger: log,
		MaxInFlight: wc.MaxInFlight, MaxInFlightBytes: wc.MaxInFlightBytes, PackMaxBytes: wc.PackMaxBytes, PackMaxItems: wc.PackMaxItems,
		PackMaxDelay: wc.PackMaxDelay, AckWait: wc.AckWait, MaxDeliver: wc.MaxDeliver,
		MaxInlineBytes: wc.MaxInlineBytes, SpoolDir: cfg.Path(wc.SpoolDir), DrainTimeout: wc.DrainTimeout,
		ReplicaGrace: wc.ReplicaGrace, MaxRecordBytes: wc.MaxRecordBytes, TaskConcurrency: wc.TaskConcurrency,
		CommitInterval: wc.CommitInterval, UpdateConsumer: wc.UpdateConsumer,
		Erasure: cfg.Erasure, ErasureInterval: wc.ErasureInterval,
		AuditCheckpointInterval: wc.AuditCheckpointEvery(), AuditCommitInterval: wc.AuditCommitInterval,
		Drill: DrillConfig(cfg, notifier, log), // restore drills (docs/drills.md)
	}
}

// DrillConfig runs the policy's drills and tells notifier of each failure (firing) and of each
// pass (resolved), per class and target.
func DrillConfig(cfg *config.Config, notifier alert.Notifier, log *slog.Logger) worker.DrillConfig {
	notify := func(firing bool) drill.AlertFunc {
		return func(ctx context.Context, r drill.Result) {
			a := alert.Alert{Name: "CustosDrillFailed", Firing: firing,
				Labels: map[string]string{"class": r.Class, "target": r.Target, "severity": "high"},
				Annotations: map[string]string{"summary": "restore drill of " + r.Class + " from " + r.Target + " failed",
					"description": r.Reason, "runbook_url": "docs/operations.md#custosdrillfailed"}}
			if err := notifier.Notify(ctx, a); err != nil {
				log.WarnContext(ctx, "drill alert not delivered", "class", r.Class, "target", r.Target, "err", err)
			}
		}
	}
	return worker.DrillConfig{Policy: cfg.Policy(), Alert: notify(true), Resolve: notify(false)}
}

// Parts are what the worker opened; they stay open until Stop.
func (n *Worker) Parts() *config.Parts { return n.parts }

// Stats are the worker's counters.
func (n *Worker) Stats() worker.Stats { return n.w.Stats() }

// Stop drains the worker (held events finish or are handed back), then stops its companions and
// closes what StartWorker opened.
func (n *Worker) Stop(ctx context.Context) error {
	err := n.w.Stop(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	s := n.w.Stats()
	n.log.Info("worker exited", "events", s.Events, "packs", s.Packs, "items", s.Items, "dead_lettered", s.DeadLettered)
	return errors.Join(err, n.stopOthers(ctx))
}

func (n *Worker) stopOthers(ctx context.Context) error {
	var errs []error
	for i := len(n.others) - 1; i >= 0; i-- {
		errs = append(errs, n.others[i].Stop(ctx))
	}
	n.others = nil
	for i := len(n.closes) - 1; i >= 0; i-- {
		errs = append(errs, n.closes[i]())
	}
	n.closes = nil
	return errors.Join(errs...)
}
