// Command custos-worker consumes Custos trigger events and writes encrypted packs to the
// configured targets. Run as many as needed, on any machines, against one NATS cluster; they
// share the work. SIGTERM drains: held events finish or are handed back, none is lost.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/scrub"
	"github.com/custos-dev/custos/pkg/telemetry"
	"github.com/custos-dev/custos/pkg/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "custos-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", "custos.yaml", "configuration file")
	name := flag.String("name", "custos-worker", "worker name in logs and NATS connection")
	jsonLogs := flag.Bool("json-logs", false, "log JSON lines instead of text")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file until exit")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *jsonLogs {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h).With("worker", *name)

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	shutdown, err := telemetry.Setup(ctx, telemetry.Config{
		ServiceName: "custos-worker", Exporter: cfg.Telemetry.Exporter, Endpoint: cfg.Telemetry.Endpoint})
	if err != nil {
		return err
	}
	defer shutdown(context.Background())

	parts, err := cfg.Open(ctx, *name, log)
	if err != nil {
		return err
	}
	defer parts.Close()
	// A worker with another key file would write backups no restore with the right one can
	// find: refuse to start.
	if err := parts.Repository().CheckKey(ctx); err != nil {
		return err
	}

	classes := map[string]worker.Class{}
	for n, c := range cfg.Classes {
		classes[n] = worker.Class{Targets: cfg.TargetNames(c.Targets), MinReplicas: c.MinReplicas, Retain: c.Retain,
			SnapshotTasks: c.SnapshotTasks}
	}
	sources, closeSources, err := cfg.OpenSources(log)
	if err != nil {
		return err
	}
	defer closeSources()
	wc := cfg.Worker
	w, err := worker.New(worker.Deps{JS: parts.JS, Keys: parts.Keys, Pseudonyms: parts.KMS, Index: parts.Index, Repairs: parts.Repairs,
		Snapshots: parts.Snapshots, Records: parts.Records, Sources: sources, KEKs: parts.KMS},
		worker.Config{
			Classes: classes, Targets: parts.Targets, Logger: log,
			MaxInFlight: wc.MaxInFlight, PackMaxBytes: wc.PackMaxBytes, PackMaxItems: wc.PackMaxItems,
			PackMaxDelay: wc.PackMaxDelay, AckWait: wc.AckWait, MaxDeliver: wc.MaxDeliver,
			MaxInlineBytes: wc.MaxInlineBytes, SpoolDir: cfg.Path(wc.SpoolDir), DrainTimeout: wc.DrainTimeout,
			ReplicaGrace: wc.ReplicaGrace, MaxRecordBytes: wc.MaxRecordBytes, TaskConcurrency: wc.TaskConcurrency,
			CommitInterval: wc.CommitInterval, UpdateConsumer: wc.UpdateConsumer,
			Erasure: cfg.Erasure, ErasureInterval: wc.ErasureInterval,
		})
	if err != nil {
		return err
	}
	rep, err := repair.New(repair.Config{Queue: parts.Repairs, Targets: parts.Targets, Index: parts.Index,
		Interval: wc.RepairInterval, SpoolDir: cfg.Path(wc.SpoolDir), Logger: log.With("component", "repairer")})
	if err != nil {
		return err
	}
	// A target may be down: start if every class still reaches min_replicas (repairs catch
	// the others up), and remove staging files that killed writers left on fs targets.
	if err := cfg.CheckReachable(ctx, parts.Targets, log); err != nil {
		return err
	}
	staging := config.StagingCleanup{Logger: log.With("component", "staging-cleanup")}.Loop(parts.Targets)
	if err := staging.Start(ctx); err != nil {
		return err
	}
	defer staging.Stop(context.Background())
	if err := w.Start(ctx); err != nil {
		return err
	}
	if err := rep.Start(ctx); err != nil {
		return err
	}
	defer rep.Stop(context.Background())
	if every := wc.ScrubEvery(); every > 0 {
		names, retain := map[string][]string{}, map[string]time.Duration{}
		for n, c := range classes {
			names[n], retain[n] = c.Targets, c.Retain
		}
		scr, err := scrub.New(scrub.Config{Interval: every, Rate: wc.ScrubBytesPerSecond(), Logger: log.With("component", "scrub"),
			Verify: repository.VerifyConfig{Index: parts.Index, Catalog: parts.Index, Keys: parts.Keys,
				Opener: parts.Repository().Opener, Targets: parts.Targets,
				Classes: repository.ClassTargets(parts.Targets, names), PutOptions: repository.RetainOptions(retain, nil),
				SpoolDir: cfg.Path(wc.SpoolDir)}})
		if err != nil {
			return err
		}
		if err := scr.Start(ctx); err != nil {
			return err
		}
		defer scr.Stop(context.Background())
	}
	<-ctx.Done()
	log.Info("signal received; draining")
	stopCtx, cancel := context.WithTimeout(context.Background(), wc.DrainTimeout+30e9)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	s := w.Stats()
	log.Info("worker exited", "events", s.Events, "packs", s.Packs, "items", s.Items, "dead_lettered", s.DeadLettered)
	return nil
}
