// Package harness runs Custos as separate processes for end-to-end tests and benchmarks: an
// embedded JetStream server, worker binaries built from this checkout, and a config file.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/natsauth"
)

// RepoRoot walks up from the working directory to the directory holding go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.work not found above the working directory")
		}
		dir = parent
	}
}

// binary builds one main package of this checkout once per process, into .cache/testbin of the
// checkout (ignored by git). Each build is renamed over the last, so test runs leave one copy of
// each binary behind rather than one per test process; a process already running the previous
// file keeps it, and every process of a run builds the same code.
type binary struct {
	pkg, name string
	once      sync.Once
	path      string
	err       error
}

func (b *binary) build() (string, error) {
	b.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			b.err = err
			return
		}
		dir := filepath.Join(root, ".cache", "testbin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.err = err
			return
		}
		tmp, err := os.CreateTemp(dir, b.name+".*.tmp")
		if err != nil {
			b.err = err
			return
		}
		tmp.Close()
		cmd := exec.Command("go", "build", "-o", tmp.Name(), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			b.err = fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
			return
		}
		b.path = filepath.Join(dir, b.name)
		if err := os.Rename(tmp.Name(), b.path); err != nil {
			os.Remove(tmp.Name())
			b.err = err
		}
	})
	return b.path, b.err
}

var (
	workerBin = &binary{pkg: "./services/worker", name: "custos-worker"}
	cliBin    = &binary{pkg: "./services/cli", name: "custos"}
)

// WorkerBinary builds the worker from this checkout once per process and returns its path.
func WorkerBinary() (string, error) { return workerBin.build() }

// CLIBinary builds the admin CLI from this checkout once per process and returns its path.
func CLIBinary() (string, error) { return cliBin.build() }

// CLI runs the admin CLI on the stack's config with the stack's environment and returns its
// standard output followed by its standard error; a non-zero exit is an error carrying both.
func (s *Stack) CLI(args ...string) (string, error) {
	bin, err := CLIBinary()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, append([]string{"--config", s.Config}, args...)...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), s.env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("custos %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String(), nil
}

// RoleConfig is the config file that connects as role (Options.Auth).
func (s *Stack) RoleConfig(r natsauth.Role) string {
	return filepath.Join(s.Dir, "custos-"+string(r)+".yaml")
}

// CLIAs runs the admin CLI with role's config file (Options.Auth), as CLI does.
func (s *Stack) CLIAs(r natsauth.Role, args ...string) (string, error) {
	return s.CLI(append([]string{"--config", s.RoleConfig(r)}, args...)...)
}

// Stack is a running embedded JetStream server plus a config file for workers.
type Stack struct {
	Dir     string
	NATS    *devstack.NATS
	NC      *nats.Conn
	JS      jetstream.JetStream
	Config  string
	Targets []string
	env     []string // for workers: the clouds' credentials, the PostgreSQL source's DSN
}

// Options shape the config file.
type Options struct {
	Targets      int           // fs targets, default 3
	AckWait      time.Duration // default 2s
	PackMaxDelay time.Duration // default 50ms
	PackMaxBytes int           // default worker default
	MaxInFlight  int
	// TaskConcurrency is how many snapshot tasks one worker runs at once (0: worker default).
	TaskConcurrency int
	// Clouds are extra targets (emulators), named c0, c1, ... after the fs targets.
	Clouds []*devstack.Cloud
	// MinReplicas per class (0: every target); ReplicaGrace and RepairInterval tune the worker.
	MinReplicas    int
	ReplicaGrace   time.Duration
	RepairInterval time.Duration
	// Postgres, when set, backs the "critical" class with a PostgreSQL source: scheduled
	// snapshots of the class read from it.
	Postgres *PostgresSource
	// Keys replaces the keys section (default: a key file created on first use); Extra is
	// appended to the file (an erasure section, say); Env is given to every worker.
	Keys  string
	Extra string
	Env   []string
	// Auth, when set, runs the broker with one NKey user per role (package natsauth): the
	// config file connects as the worker, RoleConfig names another role's, and the harness
	// itself connects as the admin. Streams and buckets must then be made by the admin
	// (custos setup) before workers start.
	Auth *natsauth.Options
}

// PostgresDSNEnv is the environment variable that carries the PostgreSQL source's DSN to worker
// processes (the config file names it in dsn_env; the DSN itself never appears in the file).
const PostgresDSNEnv = "CUSTOS_TEST_PG_DSN"

// PostgresSource is the source of the "critical" class: what the config file's sources section
// says about it.
type PostgresSource struct {
	// DSN is given to workers in $CUSTOS_TEST_PG_DSN.
	DSN string
	// Class says what to read for the class: tenant, tables, incremental mode.
	Class config.SourceClass
	// SnapshotTasks is the class's snapshot_tasks (0: the default).
	SnapshotTasks int
}

// yaml writes the sources section and the lines the critical class adds.
func (p *PostgresSource) yaml() (sources, class string, err error) {
	b, err := yaml.Marshal(map[string][]config.Source{"sources": {{
		Name: "pg", Kind: "postgres", DSNEnv: PostgresDSNEnv,
		Classes: map[string]config.SourceClass{"critical": p.Class},
	}}})
	if err != nil {
		return "", "", err
	}
	class = "    source: pg\n"
	if p.SnapshotTasks > 0 {
		class += fmt.Sprintf("    snapshot_tasks: %d\n", p.SnapshotTasks)
	}
	return string(b), class, nil
}

// Start runs the server and writes dir/custos.yaml.
func Start(dir string, o Options) (*Stack, error) {
	if o.Targets == 0 {
		o.Targets = 3
	}
	if o.AckWait == 0 {
		o.AckWait = 2 * time.Second
	}
	if o.PackMaxDelay == 0 {
		o.PackMaxDelay = 50 * time.Millisecond
	}
	storeKey, err := devstack.LoadOrCreateStoreKey(filepath.Join(dir, "secrets", "jetstream.key"))
	if err != nil {
		return nil, err
	}
	natsOpts := []devstack.NATSOption{devstack.WithStoreKey(storeKey)}
	var auth *natsauth.Set
	if o.Auth != nil {
		if auth, err = natsauth.Generate(filepath.Join(dir, "auth"), *o.Auth); err != nil {
			return nil, err
		}
		natsOpts = append(natsOpts, devstack.WithUsers(auth.ServerUsers()))
	}
	ns, err := devstack.StartNATS(filepath.Join(dir, "nats"), "127.0.0.1", -1, natsOpts...)
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, NATS: ns}
	var b strings.Builder
	keysYAML := o.Keys
	if keysYAML == "" {
		keysYAML = "keys:\n  file: custos.key\n  create: true\n"
	}
	seedLine := ""
	if auth != nil {
		seedLine = "  seed_file: auth/" + string(natsauth.Worker) + natsauth.SeedExt + "\n"
	}
	fmt.Fprintf(&b, "nats:\n  url: %s\n%s%stargets:\n", ns.URL(), seedLine, keysYAML)
	s.env = append(s.env, o.Env...)
	var names []string
	for i := range o.Targets {
		n := fmt.Sprintf("t%d", i)
		names = append(names, n)
		s.Targets = append(s.Targets, filepath.Join(dir, "targets", n))
		fmt.Fprintf(&b, "  - name: %s\n    kind: fs\n    path: targets/%s\n", n, n)
	}
	for i, c := range o.Clouds {
		n := fmt.Sprintf("c%d", i)
		names = append(names, n)
		fmt.Fprintf(&b, "  - name: %s\n%s", n, c.Target)
		// Workers and the CLI use the least-privileged credential the emulator offers.
		if len(c.WorkerEnv) > 0 {
			s.env = append(s.env, c.WorkerEnv...)
		} else {
			s.env = append(s.env, c.Env...)
		}
	}
	var pgClass string
	if o.Postgres != nil {
		sources, class, err := o.Postgres.yaml()
		if err != nil {
			ns.Stop()
			return nil, err
		}
		b.WriteString(sources)
		pgClass = class
		s.env = append(s.env, PostgresDSNEnv+"="+o.Postgres.DSN)
	}
	fmt.Fprintf(&b, "classes:\n")
	for _, c := range []string{"critical", "important", "non_essential"} {
		fmt.Fprintf(&b, "  %s:\n    targets: [%s]\n    min_replicas: %d\n", c, strings.Join(names, ", "), o.MinReplicas)
		if c == "critical" {
			b.WriteString(pgClass)
		}
	}
	fmt.Fprintf(&b, "worker:\n  ack_wait: %s\n  pack_max_delay: %s\n  spool_dir: spool\n  drain_timeout: 20s\n", o.AckWait, o.PackMaxDelay)
	if o.PackMaxBytes > 0 {
		fmt.Fprintf(&b, "  pack_max_bytes: %d\n", o.PackMaxBytes)
	}
	if o.MaxInFlight > 0 {
		fmt.Fprintf(&b, "  max_in_flight: %d\n", o.MaxInFlight)
	}
	if o.TaskConcurrency > 0 {
		fmt.Fprintf(&b, "  task_concurrency: %d\n", o.TaskConcurrency)
	}
	if o.ReplicaGrace > 0 {
		fmt.Fprintf(&b, "  replica_grace: %s\n", o.ReplicaGrace)
	}
	if o.RepairInterval > 0 {
		fmt.Fprintf(&b, "  repair_interval: %s\n", o.RepairInterval)
	}
	b.WriteString(o.Extra)
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o700); err != nil {
		return nil, err
	}
	s.Config = filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(s.Config, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	var connect []nats.Option
	if auth != nil {
		for _, r := range natsauth.Roles {
			text := strings.Replace(b.String(), seedLine, "  seed_file: auth/"+string(r)+natsauth.SeedExt+"\n", 1)
			if err := os.WriteFile(s.RoleConfig(r), []byte(text), 0o600); err != nil {
				return nil, err
			}
		}
		admin, err := natsauth.ConnectOption(filepath.Join(dir, "auth", string(natsauth.Admin)+natsauth.SeedExt))
		if err != nil {
			return nil, err
		}
		connect = append(connect, admin)
	}
	if s.NC, err = nats.Connect(ns.URL(), connect...); err != nil {
		return nil, err
	}
	// The store is encrypted at rest: a test's large object-store writes on a loaded 2-core
	// machine may take longer per chunk than the client's 5 s default.
	if s.JS, err = jetstream.New(s.NC, jetstream.WithDefaultTimeout(30*time.Second)); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops everything. Safe to call twice.
func (s *Stack) Close() {
	if s.NC != nil {
		s.NC.Close()
		s.NC = nil
	}
	if s.NATS != nil {
		s.NATS.Stop()
		s.NATS = nil
	}
}

// Open loads the config and connects the parts, as the CLI does.
func (s *Stack) Open(ctx context.Context) (*config.Parts, *config.Config, error) {
	cfg, err := config.Load(s.Config)
	if err != nil {
		return nil, nil, err
	}
	p, err := cfg.Open(ctx, "harness", nil)
	return p, cfg, err
}

// Worker is a running worker process.
type Worker struct {
	Cmd *exec.Cmd
	Log string
	// exited is closed when the process has exited; err is then its exit status.
	exited chan struct{}
	err    error
}

// StartWorker starts a worker process logging to dir/logs/name.log.
func (s *Stack) StartWorker(bin, name string) (*Worker, error) {
	if err := os.MkdirAll(filepath.Join(s.Dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.Dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"--config", s.Config, "--name", name}
	if d := os.Getenv("CUSTOS_BENCH_PROFILE_DIR"); d != "" { // CPU and allocation profiles of bench workers
		args = append(args, "--cpuprofile", filepath.Join(d, name+".prof"), "--memprofile", filepath.Join(d, name+".allocs.prof"))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	w := &Worker{Cmd: cmd, Log: logPath, exited: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.exited)
		f.Close()
	}()
	return w, nil
}

// Kill sends SIGKILL and waits for the process to go. Safe after it exited, so tests can
// defer it to leave no worker behind when they fail.
func (w *Worker) Kill() {
	_ = w.Cmd.Process.Signal(syscall.SIGKILL)
	<-w.exited
}

// Stop sends SIGTERM and waits up to timeout for a clean exit.
func (w *Worker) Stop(timeout time.Duration) error {
	_ = w.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
		return w.err
	case <-time.After(timeout):
		w.Kill()
		return fmt.Errorf("worker did not exit within %v", timeout)
	}
}

// Settled reports whether every event in the stream is acknowledged or terminated.
func (s *Stack) Settled(ctx context.Context) (bool, error) {
	c, err := s.JS.Consumer(ctx, event.StreamName, "custos-workers")
	if err != nil {
		return false, nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, err
	}
	st, err := s.JS.Stream(ctx, event.StreamName)
	if err != nil {
		return false, err
	}
	return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= st.CachedInfo().State.LastSeq, nil
}

// WaitSettled polls Settled until true or the timeout passes.
func (s *Stack) WaitSettled(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok, err := s.Settled(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("events not settled within %v", timeout)
}
