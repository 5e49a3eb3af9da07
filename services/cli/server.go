package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/node"
	"github.com/custos-dev/custos/pkg/status"
	"github.com/custos-dev/custos/pkg/telemetry"
)

// serverDir is where `custos server` keeps its state by default, and where the other commands
// look for its configuration when the working directory has no custos.yaml.
const serverDir = ".custos"

type serverOpts struct {
	dir, nats, admin, name string
}

func serverCmd() *cobra.Command {
	var o serverOpts
	cmd := &cobra.Command{
		Use:   "server [--dir .custos]",
		Short: "Run Custos on one machine: broker, worker, scheduler, metrics and status page in one process",
		Long: `server runs everything a single machine needs in one process: an embedded NATS server
(JetStream on disk under --dir, encrypted at rest, every write synced), a worker, the scheduler
with the RPO monitor, and an admin listener with /metrics, /healthz and the status page (/).

The first start writes --dir/custos.yaml, policy.yaml and the key files; later starts reuse them,
so edit them to add targets or change the policy. Stopping (SIGTERM, Ctrl-C) drains the worker;
a kill loses nothing either: every acknowledged event is on disk and is backed up after the
restart. Other custos commands run in the same directory find --dir/custos.yaml on their own.

Production runs the same worker and scheduler binaries against an external NATS cluster
(docs/operations.md).`,
		Example: `  custos server                      # state in ./.custos, broker on 127.0.0.1:4222
  custos restore --all --out restored   # in the same directory: no --config needed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServer(cmd.Context(), o) },
	}
	cmd.Flags().StringVar(&o.dir, "dir", serverDir, "directory for all state (created on first start)")
	cmd.Flags().StringVar(&o.nats, "nats", "127.0.0.1:4222", "broker listen address, written into the configuration on first start")
	cmd.Flags().StringVar(&o.admin, "admin", "127.0.0.1:9464", "admin listener: /metrics, /healthz and the status page at /")
	cmd.Flags().StringVar(&o.name, "name", "server", "worker and scheduler name in logs, claims and metrics")
	return cmd
}

// serverConfig is the configuration a first start writes: one local disk target, the policy
// beside it, the key file created on first use.
func serverConfig(natsURL string) string {
	return `# Written by 'custos server' on its first start; edit it and restart to change it.
# docs/configuration.md describes every key.
nats:
  url: ` + natsURL + `
keys:
  file: keys/custos.key
  create: true
policy: policy.yaml
targets:
  - name: primary
    kind: fs
    path: targets/primary
  - name: secondary
    kind: fs
    path: targets/secondary
worker:
  spool_dir: spool
  drain_timeout: 30s
`
}

// serverPolicy is the policy a first start writes: the default policy's classes on two local
// disks. One machine cannot hold an off-site copy; the policy says so instead of pretending.
func serverPolicy() string {
	return `# Written by 'custos server' on its first start: the default policy's classes (seed 002) on
# this machine's two disk targets. Add an off-site target (s3, gcs, azure) to meet 3-2-1 and
# remove the overrides. docs/policy.md describes every key.
version: 1
tenant: default
timezone: UTC
targets:
  - {name: primary, kind: fs}
  - {name: secondary, kind: fs, offsite: true}
classes:
  critical:
    schedules:
      - {name: daily, cron: "0 2 * * *", method: incremental}
      - {name: monthly-full, cron: "0 2 1 * *", method: full}
    retention: {min: 30d, daily: 30}
    targets: [primary, secondary]
    immutability: {mode: none}
    rpo: 48h
    rto: 48h
    override_321: "single machine: two local disks, no off-site copy yet"
  important:
    schedules:
      - {name: weekly, cron: "0 3 * * 0", method: incremental}
      - {name: monthly-full, cron: "0 3 1 * *", method: full}
    retention: {min: 90d, weekly: 13}
    targets: [primary, secondary]
    immutability: {mode: none}
    rpo: 7d
    rto: 72h
    override_321: "single machine: two local disks, no off-site copy yet"
  non_essential:
    schedules:
      - {name: monthly, cron: "0 4 1 * *", method: full}
    retention: {min: 180d, monthly: 6}
    targets: [primary, secondary]
    immutability: {mode: none}
    rpo: 30d
    rto: 7d
    override_321: "single machine: two local disks, no off-site copy yet"
    override_rpo: "seed 002 3.1 fixes monthly backups and 4.1 a 30-day RPO; months of 31 days leave a 31-day gap"
`
}

// writeOnce writes path with text unless it exists.
func writeOnce(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// initServerDir creates the state directory on first start; later starts keep what is there.
func initServerDir(o serverOpts) error {
	for _, d := range []string{"keys", "nats", "spool", "targets/primary", "targets/secondary"} {
		if err := os.MkdirAll(filepath.Join(o.dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := writeOnce(filepath.Join(o.dir, "custos.yaml"), serverConfig("nats://"+o.nats)); err != nil {
		return err
	}
	return writeOnce(filepath.Join(o.dir, "policy.yaml"), serverPolicy())
}

func runServer(ctx context.Context, o serverOpts) error {
	if err := initServerDir(o); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	cfg, err := config.Load(filepath.Join(o.dir, "custos.yaml"))
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(telemetry.LogConfig{Format: cfg.Telemetry.LogFormat})
	if err != nil {
		return err
	}
	log = log.With("server", o.name)
	host, port, err := natsListen(cfg.NATS.URL)
	if err != nil {
		return err
	}
	storeKey, err := devstack.LoadOrCreateStoreKey(filepath.Join(o.dir, "keys", "jetstream.key"))
	if err != nil {
		return err
	}
	ns, err := devstack.StartNATS(filepath.Join(o.dir, "nats"), host, port, devstack.WithStoreKey(storeKey), devstack.WithSyncAlways())
	if err != nil {
		return err
	}
	defer ns.Stop()
	log.Info("broker listening", "url", ns.URL())
	// The key file is made here, once, so the worker and the commands that follow never race to.
	if _, err := keys.LoadOrCreateKeyFile(cfg.Path(cfg.Keys.File)); err != nil {
		return err
	}

	// Traces and metrics; the MeterProvider is installed before anything creates instruments.
	metrics, stopObserving, err := node.Observe(ctx, cfg, "custos-server", o.name)
	if err != nil {
		return err
	}
	defer stopObserving()

	w, err := node.StartWorker(ctx, cfg, o.name, log)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			w.Stop(context.Background()) //nolint:errcheck // an earlier error is returned
		}
	}()
	s, err := node.StartScheduler(ctx, cfg, w.Parts().JS, cfg.Policy(), o.name, log)
	if err != nil {
		return err
	}
	defer s.Stop(context.Background())

	parts := w.Parts()
	page := status.Handler(func(ctx context.Context) (status.Page, error) {
		classTargets := map[string][]string{}
		for n, c := range cfg.Classes {
			classTargets[n] = cfg.TargetNames(c.Targets)
		}
		var all []string
		for _, t := range cfg.Targets {
			all = append(all, t.Name)
		}
		return status.Collect(ctx, status.Sources{Policy: cfg.Policy(), Index: parts.Index, Snapshots: parts.Snapshots,
			JS: parts.JS, ClassTargets: classTargets, Targets: cfg.TargetNames(all)})
	})
	admin := telemetry.NewAdmin(telemetry.AdminConfig{Listen: o.admin, Metrics: metrics.Handler(),
		Healthy: func(context.Context) error {
			if !parts.JS.Conn().IsConnected() {
				return errors.New("not connected to the broker")
			}
			return nil
		},
		Handlers: map[string]http.Handler{"/": page, "/status": page},
		Logger:   log.With("component", "admin")})
	if err := admin.Start(ctx); err != nil {
		return err
	}
	defer admin.Stop(context.Background())
	say("custos server ready: broker %s, status page http://%s/, state in %s", ns.URL(), o.admin, o.dir)

	<-ctx.Done()
	log.Info("signal received; draining")
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.Worker.DrainTimeout+30*time.Second)
	defer cancel()
	stopped = true
	return w.Stop(stopCtx)
}

// natsListen is the host and port the embedded broker listens on: the configuration's URL.
func natsListen(raw string) (string, int, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", 0, fmt.Errorf("server: nats.url %q is not a nats://host:port URL", raw)
	}
	host, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", 0, fmt.Errorf("server: nats.url %q: %w", raw, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("server: nats.url %q: bad port", raw)
	}
	return host, port, nil
}

// findConfig resolves --config when it was not given: custos.yaml in the working directory,
// else $CUSTOS_CONFIG, else the configuration `custos server` wrote under .custos/.
func findConfig(cmd *cobra.Command) {
	f := cmd.Flags().Lookup("config")
	if f == nil || f.Changed {
		return
	}
	if _, err := os.Stat(f.Value.String()); err == nil {
		return
	}
	for _, p := range []string{os.Getenv("CUSTOS_CONFIG"), filepath.Join(serverDir, "custos.yaml")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			f.Value.Set(p) //nolint:errcheck // a string flag takes any value
			return
		}
	}
}
