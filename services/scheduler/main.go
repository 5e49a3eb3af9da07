// Command custos-scheduler publishes the schedule ticks and compliance deadlines of a Custos
// policy as they fall due. Run one or more replicas against one NATS cluster: each tick is
// published exactly once, by one of them (docs/policy.md). SIGTERM stops it cleanly.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "custos-scheduler:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", "custos.yaml", "runtime configuration file (NATS URL and credentials, telemetry)")
	policyPath := flag.String("policy", "", "policy file; empty for the built-in default policy (seed 002)")
	name := flag.String("name", "", "replica name in claims, logs and the NATS connection; default host-pid-random")
	jsonLogs := flag.Bool("json-logs", false, "log JSON lines instead of text")
	flag.Parse()

	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *jsonLogs {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	p := policy.Default()
	if *policyPath != "" {
		if p, err = policy.Load(*policyPath); err != nil {
			return err
		}
	} else {
		log.Info("no --policy: using the built-in default policy (seed 002)")
	}
	for _, w := range p.Warnings {
		log.Warn("policy: " + w.Error())
	}
	for _, c := range p.Classes {
		if _, ok := cfg.Classes[c.Name]; !ok {
			log.Warn("policy class is not in the runtime configuration: workers will dead-letter its ticks", "class", c.Name)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	shutdown, err := telemetry.Setup(ctx, telemetry.Config{
		ServiceName: "custos-scheduler", Exporter: cfg.Telemetry.Exporter, Endpoint: cfg.Telemetry.Endpoint})
	if err != nil {
		return err
	}
	defer shutdown(context.Background())

	connName := "custos-scheduler"
	if *name != "" {
		connName += " " + *name
	}
	opts := []nats.Option{nats.Name(connName), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") })}
	nc, err := cfg.ConnectNATS(opts...)
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	svc, err := schedule.New(js, schedule.Config{Policy: p, Replica: *name, Logger: log})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	// The RPO monitor runs beside the scheduler: both read the policy, and an RPO breach is the
	// other half of "was the schedule kept".
	// Setup is not cut short by an early SIGTERM: the stop path below handles it.
	setup := context.WithoutCancel(ctx)
	index, err := catalog.Open(setup, js, 1)
	if err != nil {
		return err
	}
	snaps, err := snapshot.Open(setup, js, 1)
	if err != nil {
		return err
	}
	mon, err := rpo.New(rpo.Config{Index: index, Snapshots: snaps, Policy: p, Logger: log.With("component", "rpo")})
	if err != nil {
		return err
	}
	if err := mon.Start(setup); err != nil {
		return err
	}
	defer mon.Stop(context.Background())
	<-ctx.Done()
	log.Info("signal received; stopping")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Stop(stopCtx); err != nil {
		return err
	}
	st := svc.Stats()
	log.Info("scheduler exited", "fired", st.Fired, "skipped", st.Skipped, "taken_over", st.TakenOver, "errors", st.Errors)
	return nil
}
