// Command custos-worker consumes Custos trigger events and writes encrypted packs to the
// configured targets. Run as many as needed, on any machines, against one NATS cluster; they
// share the work. SIGTERM drains: held events finish or are handed back, none is lost.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/node"
	"github.com/custos-dev/custos/pkg/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "custos-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", "custos.yaml", "configuration file")
	name := flag.String("name", defaultName, "worker name in logs, the NATS connection and metrics (service.instance.id)")
	jsonLogs := flag.Bool("json-logs", false, "log JSON lines (overrides telemetry.log_format)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file until exit")
	memProfile := flag.String("memprofile", "", "write a profile of the allocations made until exit to this file")
	flag.Parse()
	if *memProfile != "" {
		defer writeAllocs(*memProfile)
	}
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

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	logFormat := cfg.Telemetry.LogFormat
	if *jsonLogs {
		logFormat = telemetry.LogFormatJSON
	}
	baseLog, err := telemetry.NewLogger(telemetry.LogConfig{Format: logFormat})
	if err != nil {
		return err
	}
	log := baseLog.With("worker", *name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Workers started without --name share the default: their instance id is host-pid then.
	instance := *name
	if instance == defaultName {
		instance = ""
	}
	// Traces and metrics; the MeterProvider is installed before anything creates instruments.
	metrics, stopObserving, err := node.Observe(ctx, cfg, "custos-worker", instance)
	if err != nil {
		return err
	}
	defer stopObserving()

	// A key file that does not match the backups, or a class that cannot reach min_replicas,
	// stops the start (pkg/node); a broker that cannot answer yet is waited for.
	n, err := node.StartWhenAvailable(ctx, log, "worker", func(ctx context.Context) (*node.Worker, error) {
		return node.StartWorker(ctx, cfg, *name, log)
	})
	if err != nil {
		return err
	}
	parts := n.Parts()
	admin := startAdmin(ctx, config.ListenOr(cfg.Telemetry.MetricsListen, telemetry.DefaultWorkerAdminListen),
		metrics, func(context.Context) error {
			if !parts.JS.Conn().IsConnected() {
				return errors.New("not connected to NATS")
			}
			return nil
		}, log)
	defer admin.Stop(context.Background())
	<-ctx.Done()
	log.Info("signal received; draining")
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.Worker.DrainTimeout+30*time.Second)
	defer cancel()
	return n.Stop(stopCtx)
}

// writeAllocs writes the allocations profile to path; a failure only loses the profile.
func writeAllocs(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "custos-worker: memprofile:", err)
	}
}
