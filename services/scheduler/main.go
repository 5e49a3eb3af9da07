// Command custos-scheduler publishes the schedule ticks and compliance deadlines of a Custos
// policy as they fall due. Run one or more replicas against one NATS cluster: each tick is
// published exactly once, by one of them (docs/policy.md). SIGTERM stops it cleanly.
package main

import (
	"cmp"
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

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/node"
	"github.com/custos-dev/custos/pkg/policy"
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
	policyPath := flag.String("policy", "", "deprecated: name the policy file in the configuration's policy: key instead; when both are given they must be the same file")
	name := flag.String("name", "", "replica name in claims, logs and the NATS connection; default host-pid-random")
	jsonLogs := flag.Bool("json-logs", false, "log JSON lines (overrides telemetry.log_format)")
	flag.Parse()

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	logFormat := cfg.Telemetry.LogFormat
	if *jsonLogs {
		logFormat = telemetry.LogFormatJSON
	}
	log, err := telemetry.NewLogger(telemetry.LogConfig{Format: logFormat})
	if err != nil {
		return err
	}
	p, err := schedulerPolicy(cfg, *policyPath, log)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Traces and metrics; the MeterProvider is installed before anything creates instruments.
	metrics, stopObserving, err := node.Observe(ctx, cfg, "custos-scheduler", *name)
	if err != nil {
		return err
	}
	defer stopObserving()

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
	// Started before the broker, or while a cluster elects its leaders, the scheduler waits.
	nc, err := node.StartWhenAvailable(ctx, log, "broker connection", func(context.Context) (*nats.Conn, error) {
		return cfg.ConnectNATS(opts...)
	})
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := audit.RecordPolicyFile(ctx, js, cmp.Or(cfg.Path(cfg.PolicyFile), *policyPath), time.Now()); err != nil {
		log.Error("the policy in force is not recorded in the audit log (the next start tries again)", "err", err)
	}
	admin := startAdmin(ctx, config.ListenOr(cfg.Telemetry.SchedulerMetricsListen, telemetry.DefaultSchedulerAdminListen),
		metrics, nc, log)
	defer admin.Stop(context.Background())

	svc, err := node.StartWhenAvailable(ctx, log, "scheduler", func(ctx context.Context) (*node.Scheduler, error) {
		return node.StartScheduler(ctx, cfg, js, p, *name, log)
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("signal received; stopping")
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return svc.Stop(stopCtx)
}

// schedulerPolicy returns the policy the scheduler runs: the one the runtime configuration names
// (so the scheduler and the workers share one truth), or the built-in default when it names
// none. The older --policy flag is accepted only alone, or naming the same file.
func schedulerPolicy(cfg *config.Config, flagPath string, log *slog.Logger) (*policy.Policy, error) {
	p, err := cfg.PolicyOr(flagPath)
	switch {
	case err != nil:
		return nil, err
	case p == nil:
		p = cfg.Policy()
		log.Info("the configuration names no policy file: using the built-in default policy (seed 002)")
	case !cfg.PolicyFromFile():
		log.Warn("--policy is deprecated: name the policy in the configuration (policy: FILE) so that workers check their classes against it")
	}
	for _, w := range p.Warnings {
		log.Warn("policy: " + w.Error())
	}
	for _, c := range p.Classes {
		if _, ok := cfg.Classes[c.Name]; !ok {
			log.Warn("policy class is not in the runtime configuration: workers will dead-letter its ticks", "class", c.Name)
		}
	}
	return p, nil
}
