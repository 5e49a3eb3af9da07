package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// The peer section: restic and Custos back up, incrementally back up and restore the same data
// set in the same run, on this machine, each to one local directory (docs/performance.md).

const (
	peerTenant = "bench"
	peerClass  = "critical"
	// benchResticPassword is used when $RESTIC_PASSWORD is unset: the repository is a throwaway.
	benchResticPassword = "custos-bench-throwaway"
)

// cost is what one measured step took: wall time and the CPU seconds of the processes doing it.
type cost struct {
	wall, cpu float64 // seconds
}

func (c cost) mbPerS(bytes int64) float64    { return float64(bytes) / 1e6 / c.wall }
func (c cost) mbPerCPUS(bytes int64) float64 { return float64(bytes) / 1e6 / c.cpu }

// peerResults holds every figure; a zero cost means the step did not run.
type peerResults struct {
	data, changedBytes int64

	resticBackup, resticIncr, resticRestore cost
	resticStored                            int64

	custosBackup, custosIncr, custosRestore cost
	custosBroker                            float64 // CPU s of this process (broker, producer) during custosBackup
	custosStored                            int64

	snapBackup, snapRestore cost
	snapStored              int64

	// fsCeiling is writing the data set's files with nothing else: the most any restore can do.
	fsCeiling cost
	// customerRestore is the wall time of each one-customer restore (a CLI run each).
	customerRestore []float64
	// cliStart is the wall time of each run of the CLI doing nothing (`custos help`).
	cliStart []float64
	// customerRestoreInProcess is the wall time of each one-customer restore made by a
	// process that is already running (restore.Restorer, as a service would call it).
	customerRestoreInProcess []float64
}

// noDeletes: the peer section removes nothing until it ends. On ext4 without a journal (as on
// the machines this runs on) the kernel does not reuse an inode for 60 to 300 s after it was
// freed, and finding a free one then costs a scan of the recently freed ones for every file
// created (recently_deleted() in ext4's inode allocator): after 20,000 files were removed,
// creating 20,000 more took 10 s of kernel CPU instead of 1. Whichever restore came after a
// removal would be measured against the file system, not against the other tool.

// peerBench runs the peer section. A missing restic or PostgreSQL is reported as a "# peer:"
// line and the rest still runs.
func peerBench(ctx context.Context, workerBin, cliBin string, n int) error {
	dir, err := os.MkdirTemp("", "custos-bench-peer-")
	if err != nil {
		return err
	}
	removeAtExit(dir)
	restic, why := findRestic()
	if restic == "" {
		fmt.Printf("# peer: restic not installed: %s\n", why)
	}
	data, err := writeDataset(filepath.Join(dir, "data"), n)
	if err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	fmt.Printf("# peer: data set: %d JSON records of ~%d KiB, %d to a customer, %.1f MB\n", n, recordBytes>>10, recordsPer, float64(data.bytes)/1e6)
	res := peerResults{data: data.bytes}

	// Full backups: each tool's in turn, peerRounds times, every one into a new repository
	// (stack); medians are reported. The last round's repositories serve the rest of the
	// section. The VM this runs on varies by ±10 % from one minute to the next: one backup of
	// each would measure the VM as much as the tools.
	var rs *resticRepo
	var ev *eventPath
	defer func() {
		if ev != nil {
			ev.close()
		}
	}()
	var snap *snapshotSource
	if pg, err := startSnapshotSource(ctx, data); err != nil {
		var skip *skipError
		if !errors.As(err, &skip) {
			return fmt.Errorf("snapshot path: %w", err)
		}
		fmt.Printf("# peer: snapshot path skipped: %v\n", skip.err)
	} else {
		snap = pg
		defer snap.stop()
	}
	var resticRounds, eventRounds, snapRounds []cost
	var brokerRounds []float64
	rounds := max(1, *peerRounds)
	for r := range rounds {
		last := r == rounds-1
		if restic != "" {
			rs = &resticRepo{bin: restic, repo: filepath.Join(dir, fmt.Sprintf("restic-repo-%d", r)), cache: filepath.Join(dir, "restic-cache"), data: data.dir}
			if _, err := rs.run("init"); err != nil {
				return err
			}
			syscall.Sync() // earlier steps' and the data set's writes are on disk before timing
			c, err := rs.run("backup", "--host", "bench", data.dir)
			if err != nil {
				return err
			}
			resticRounds = append(resticRounds, c)
		}

		// Custos, event path: the last stack stays up for the incremental and the restore.
		if ev != nil {
			ev.close()
		}
		if ev, err = startEventPath(ctx, workerBin, cliBin, filepath.Join(dir, fmt.Sprintf("custos-events-%d", r))); err != nil {
			return err
		}
		syscall.Sync()
		c, broker, err := ev.publish(ctx, data, allRecords(n), 0)
		if err != nil {
			return fmt.Errorf("event path full backup: %w", err)
		}
		eventRounds, brokerRounds = append(eventRounds, c), append(brokerRounds, broker)

		// Custos, snapshot path: rows of the same records in PostgreSQL, read by a full snapshot.
		if snap != nil {
			c, err := snap.round(ctx, workerBin, cliBin, filepath.Join(dir, fmt.Sprintf("custos-snapshot-%d", r)), data, &res, last)
			if err != nil {
				return fmt.Errorf("snapshot path: %w", err)
			}
			snapRounds = append(snapRounds, c)
		}
	}
	res.resticBackup, res.custosBackup, res.snapBackup = medianCost(resticRounds), medianCost(eventRounds), medianCost(snapRounds)
	res.custosBroker = median(brokerRounds)
	fmt.Printf("# peer: full backups, %d interleaved rounds (medians reported); wall s by round: restic %s; Custos events %s; Custos snapshot %s\n",
		rounds, walls(resticRounds), walls(eventRounds), walls(snapRounds))

	// 1 % of the records change.
	if res.changedBytes, err = data.modify(); err != nil {
		return err
	}
	fmt.Println("# peer: incremental: restic scans the whole tree to find the 1 % changed; Custos is told what changed (one event per changed record)")
	if rs != nil {
		if res.resticIncr, err = rs.run("backup", "--host", "bench", data.dir); err != nil {
			return err
		}
	}
	if res.custosIncr, _, err = ev.publish(ctx, data, data.changed(), 1); err != nil {
		return fmt.Errorf("event path incremental: %w", err)
	}

	// Full restores of the latest state, each checked against the tree. Dirty pages are
	// flushed before each, and no output is removed before the section ends (noDeletes).
	if rs != nil {
		out := filepath.Join(dir, "restore-restic")
		syscall.Sync()
		if res.resticRestore, err = rs.run("restore", "latest", "--target", out); err != nil {
			return err
		}
		// restic recreates the absolute path it backed up under the target.
		if err := sameRecords(data, func(i int) string { return filepath.Join(out, data.dir, customerOf(i), recordName(i)) }); err != nil {
			return fmt.Errorf("restic restore: %w", err)
		}
		if res.resticStored, err = dirSize(rs.repo); err != nil {
			return err
		}
	}
	out := filepath.Join(dir, "restore-custos")
	syscall.Sync()
	if res.custosRestore, err = ev.cli(ev.env, "restore", "--all", "--out", out); err != nil {
		return err
	}
	if err := sameRecords(data, func(i int) string {
		return restore.Path(out, peerTenant, customerOf(i), "records/"+recordName(i))
	}); err != nil {
		return fmt.Errorf("custos restore: %w", err)
	}
	syscall.Sync()
	if res.fsCeiling, err = fsCeiling(data, filepath.Join(dir, "fs-ceiling")); err != nil {
		return err
	}
	if res.customerRestore, res.cliStart, err = customerRestores(ev, dir, data.n); err != nil {
		return err
	}
	if res.customerRestoreInProcess, err = inProcessRestores(ctx, ev, dir, data.n); err != nil {
		return err
	}
	if res.custosStored, err = dirSize(ev.s.Targets[0]); err != nil {
		return err
	}
	res.print(restic != "")
	return nil
}

// fsCeiling writes every record of d as a new file under out (customer directories, create,
// write, close; twice the CPUs at a time, as both restores do) from memory: the file system's
// own ceiling for a restore of d on this disk, in the same run. It is not checked against
// anything: it is the baseline the restores are read against.
func fsCeiling(d *dataset, out string) (cost, error) {
	recs := make([][]byte, d.n)
	for i := range recs {
		b, err := os.ReadFile(d.path(i))
		if err != nil {
			return cost{}, err
		}
		recs[i] = b
	}
	cpu0, t0 := selfCPU(), time.Now()
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				p := filepath.Join(out, customerOf(i), recordName(i))
				err := os.MkdirAll(filepath.Dir(p), 0o700)
				if err == nil {
					err = os.WriteFile(p, recs[i], 0o600)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range recs {
		next <- i
	}
	close(next)
	wg.Wait()
	c := cost{wall: time.Since(t0).Seconds(), cpu: selfCPU() - cpu0}
	select {
	case err := <-errs:
		return c, err
	default:
	}
	return c, nil
}

// customerSamples is how many one-customer restores the peer section times.
const customerSamples = 21

// customerRestores restores customerSamples customers spread over the data set, one `custos
// restore --customer` run each (a new process: configuration, broker connection, catalog
// lookup, key, reads and files, as an operator would see it), checks that each wrote the
// customer's records, and returns each run's wall time in seconds.
func customerRestores(ev *eventPath, dir string, n int) (walls, starts []float64, err error) {
	syscall.Sync()
	customers := n / recordsPer
	// The floor: the same binary doing nothing (its package initialisation and exit), timed
	// the same way, so the restore's own share can be read off.
	for range customerSamples {
		c, err := measure(exec.Command(ev.cliBin, "help"))
		if err != nil {
			return nil, nil, err
		}
		starts = append(starts, c.wall)
	}
	for k := range min(customerSamples, customers) {
		c := customerOf(k * customers / min(customerSamples, customers) * recordsPer)
		out := filepath.Join(dir, "restore-one", c)
		got, err := ev.cli(ev.env, "restore", "--tenant", peerTenant, "--customer", c, "--out", out, "--progress", "none")
		if err != nil {
			return nil, nil, err
		}
		files, err := countFiles(out)
		if err != nil {
			return nil, nil, err
		}
		if files != recordsPer {
			return nil, nil, fmt.Errorf("restore of one customer wrote %d files, want %d", files, recordsPer)
		}
		walls = append(walls, got.wall)
	}
	return walls, starts, nil
}

// inProcessRestores restores the same customers as customerRestores, each with
// restore.Restorer.Customer in this process on parts opened once: the restore's own time
// (catalog lookup, key, one ranged read a pack, files), without a process start or the
// configuration and broker connection each CLI run makes. Each is checked like the CLI's.
func inProcessRestores(ctx context.Context, ev *eventPath, dir string, n int) ([]float64, error) {
	parts, _, err := ev.s.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer parts.Close()
	r := &restore.Restorer{Index: parts.Index, Targets: target.Readers(parts.Targets), Keys: parts.Keys,
		Repo: parts.Repository(), Pseudonyms: parts.KMS}
	customers := n / recordsPer
	samples := min(customerSamples, customers)
	var walls []float64
	for k := range samples {
		c := customerOf(k * customers / samples * recordsPer)
		out := filepath.Join(dir, "restore-one-in-process", c)
		start := time.Now()
		rep, err := r.Customer(ctx, peerTenant, c, restore.Options{Out: out})
		took := time.Since(start).Seconds()
		if err != nil {
			return nil, err
		}
		if !rep.OK() {
			return nil, fmt.Errorf("in-process restore of one customer: %d failures", len(rep.Failures))
		}
		files, err := countFiles(out)
		if err != nil {
			return nil, err
		}
		if files != recordsPer {
			return nil, fmt.Errorf("in-process restore of one customer wrote %d files, want %d", files, recordsPer)
		}
		walls = append(walls, took)
	}
	return walls, nil
}

func allRecords(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// findRestic returns -restic, or the binary deploy/bench/install-restic.sh installs (building it
// the first time), or "" and why not.
func findRestic() (string, string) {
	if *resticBin != "" {
		if _, err := os.Stat(*resticBin); err != nil {
			return "", err.Error()
		}
		return *resticBin, ""
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err.Error()
	}
	fmt.Fprintln(os.Stderr, "bench: installing restic (deploy/bench/install-restic.sh; cached after the first time)")
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "bench", "install-restic.sh"))
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Sprintf("deploy/bench/install-restic.sh: %v: %s", err, lastLine(stderr.String()))
	}
	return lastLine(string(out)), ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// resticRepo runs restic on a local repository. The password goes to restic in its environment
// only; it is never printed.
type resticRepo struct {
	bin, repo, cache, data string
}

func (r *resticRepo) run(args ...string) (cost, error) {
	cmd := exec.Command(r.bin, append([]string{"--repo", r.repo, "--cache-dir", r.cache, "--quiet"}, args...)...)
	cmd.Dir = r.data
	cmd.Env = os.Environ()
	if os.Getenv("RESTIC_PASSWORD") == "" {
		cmd.Env = append(cmd.Env, "RESTIC_PASSWORD="+benchResticPassword)
	}
	c, err := measure(cmd)
	if err != nil {
		return c, fmt.Errorf("restic %s: %w", args[0], err)
	}
	return c, nil
}

// measure runs cmd to the end and returns its wall time and CPU seconds (user + system, every
// thread, from the child's rusage). Output goes to the bench's stderr only on failure.
func measure(cmd *exec.Cmd) (cost, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start).Seconds()
	if err != nil {
		return cost{}, fmt.Errorf("%v\n%s", err, out.String())
	}
	return cost{wall: wall, cpu: (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()}, nil
}

// procCPU is a running process's CPU seconds so far (user + system), from /proc/<pid>/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / clkTck, nil
}

// clkTck is USER_HZ, the unit of /proc CPU times: 100 on every Linux architecture Go supports.
const clkTck = 100

// machineBusy is the CPU seconds every process of the machine has used since boot, from
// /proc/stat (all but idle and iowait); false when it cannot be read.
func machineBusy() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy float64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		busy += n
	}
	return busy / clkTck, true
}

// selfCPU is this process's CPU seconds so far: the embedded broker and the producer.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// eventPath is a Custos stack with one worker process and one fs target, as restic has one
// repository.
type eventPath struct {
	s      *harness.Stack
	w      *harness.Worker
	cliBin string
	env    []string
}

func startEventPath(ctx context.Context, workerBin, cliBin, dir string) (*eventPath, error) {
	o := prodLike
	o.Targets = 1
	s, err := newStackIn(dir, o)
	if err != nil {
		return nil, err
	}
	e := &eventPath{s: s, cliBin: cliBin}
	if e.w, err = s.StartWorker(workerBin, "peer"); err != nil {
		e.close()
		return nil, err
	}
	if err := waitConsumer(ctx, s); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *eventPath) close() {
	if e.w != nil {
		e.w.Stop(time.Minute)
	}
	e.s.Close()
}

// waitConsumer waits for the worker to create its consumer, so timing starts with a worker
// ready to take events.
func waitConsumer(ctx context.Context, s *harness.Stack) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, err := s.JS.Consumer(ctx, event.StreamName, "custos-workers"); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("worker consumer not created within 1m")
}

// publish reads the records idx from the tree (as restic reads them), publishes one event each
// and waits until every one is durable in the target. It returns the cost (the worker's CPU)
// and this process's CPU over the same time (the embedded broker and the producer).
func (e *eventPath) publish(ctx context.Context, d *dataset, idx []int, version int) (cost, float64, error) {
	p, err := producer.New(e.s.JS, "urn:custos:bench", producerOpts()...)
	if err != nil {
		return cost{}, 0, err
	}
	pid := e.w.Cmd.Process.Pid
	cpu0, err := procCPU(pid)
	if err != nil {
		return cost{}, 0, err
	}
	self0 := selfCPU()
	start := time.Now()
	for _, i := range idx {
		rec, err := os.ReadFile(d.path(i))
		if err != nil {
			return cost{}, 0, err
		}
		ev := &custosv1.PostTransaction{
			Meta: &custosv1.Meta{EventId: fmt.Sprintf("peer-%d-%d", version, i), Time: timestamppb.Now(), Tenant: peerTenant,
				CustomerId: customerOf(i), DataClass: peerClass},
			Record: &custosv1.Record{Key: "records/" + recordName(i), ContentType: "application/json",
				Source: &custosv1.Record_Inline{Inline: rec}},
		}
		if _, err := p.PublishPostTransactionAsync(ctx, ev); err != nil {
			return cost{}, 0, err
		}
	}
	if err := p.Flush(ctx); err != nil {
		return cost{}, 0, err
	}
	if err := e.s.WaitSettled(ctx, 30*time.Minute); err != nil {
		return cost{}, 0, err
	}
	wall := time.Since(start).Seconds()
	cpu1, err := procCPU(pid)
	if err != nil {
		return cost{}, 0, err
	}
	return cost{wall: wall, cpu: cpu1 - cpu0}, selfCPU() - self0, nil
}

// cli runs the admin CLI on the stack's config (a restore) and measures it.
func (e *eventPath) cli(env []string, args ...string) (cost, error) {
	return runCLI(e.cliBin, e.s, env, args...)
}

func runCLI(bin string, s *harness.Stack, env []string, args ...string) (cost, error) {
	cmd := exec.Command(bin, append([]string{"--config", s.Config}, args...)...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), env...)
	if d := os.Getenv("CUSTOS_BENCH_PROFILE_DIR"); d != "" { // a CPU profile of each CLI step
		name := strings.Join(args[:min(2, len(args))], "-")
		cmd.Env = append(cmd.Env, "CUSTOS_CPUPROFILE="+filepath.Join(d, fmt.Sprintf("cli-%s-%d.prof", strings.ReplaceAll(name, "/", "_"), time.Now().UnixNano())))
	}
	c, err := measure(cmd)
	if err != nil {
		return c, fmt.Errorf("custos %s: %w", strings.Join(args, " "), err)
	}
	return c, nil
}

// skipError is a part of the section that cannot run on this machine (no PostgreSQL).
type skipError struct{ err error }

func (s *skipError) Error() string { return s.err.Error() }

// snapshotSource is PostgreSQL holding version 0 of every record of the data set, for the
// snapshot path's rounds.
type snapshotSource struct {
	pg  *devstack.Postgres
	dsn string
}

// startSnapshotSource starts PostgreSQL and loads the rows; a PostgreSQL that cannot start is a
// skipError.
func startSnapshotSource(ctx context.Context, d *dataset) (*snapshotSource, error) {
	pg, err := devstack.StartPostgres()
	if err != nil {
		return nil, &skipError{err}
	}
	dsn, err := pg.CreateDatabase(ctx)
	if err == nil {
		err = loadRows(ctx, dsn, d)
	}
	if err != nil {
		pg.Stop()
		return nil, fmt.Errorf("load rows: %w", err)
	}
	return &snapshotSource{pg: pg, dsn: dsn}, nil
}

func (ss *snapshotSource) stop() { ss.pg.Stop() }

// round takes one full snapshot of the rows into a new stack in dir and returns its cost (the
// worker's CPU). The last round also restores it, checks the files and measures what is stored.
func (ss *snapshotSource) round(ctx context.Context, workerBin, cliBin, dir string, d *dataset, res *peerResults, last bool) (cost, error) {
	dsn := ss.dsn
	o := prodLike
	o.Targets = 1
	o.TaskConcurrency = *taskConc
	o.Postgres = &harness.PostgresSource{DSN: dsn, Class: config.SourceClass{Tenant: peerTenant, Tables: []config.SourceTable{{
		Name: "records", Table: "records", CustomerColumn: "customer_id", KeyColumns: []string{"key"},
		ValueColumn: "value", ChangeColumn: "updated_at", DeletedColumn: "deleted",
	}}}}
	s, err := newStackIn(dir, o)
	if err != nil {
		return cost{}, err
	}
	defer s.Close()
	// Open first: it creates the key file the worker loads, and the snapshot store.
	parts, _, err := s.Open(ctx)
	if err != nil {
		return cost{}, err
	}
	defer parts.Close()
	w, err := s.StartWorker(workerBin, "peer-snapshot")
	if err != nil {
		return cost{}, err
	}
	defer w.Stop(time.Minute)
	if err := waitConsumer(ctx, s); err != nil {
		return cost{}, err
	}
	p, err := producer.New(s.JS, "urn:custos:bench", producerOpts()...)
	if err != nil {
		return cost{}, err
	}
	syscall.Sync()
	cpu0, err := procCPU(w.Cmd.Process.Pid)
	if err != nil {
		return cost{}, err
	}
	eventID := "peer-snapshot-full"
	busy0, busyOK := machineBusy()
	start := time.Now()
	if _, err := p.PublishScheduleTick(ctx, &custosv1.ScheduleTick{
		Meta:     &custosv1.Meta{EventId: eventID, Time: timestamppb.Now(), Tenant: peerTenant, DataClass: peerClass},
		Schedule: "daily", Method: string(source.Full)}); err != nil {
		return cost{}, err
	}
	id := snapshot.JobID(eventID)
	var sn snapshot.Snapshot
	for deadline := time.Now().Add(30 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return cost{}, fmt.Errorf("snapshot %s not committed within 30m", id)
		}
		if sn, err = parts.Snapshots.Get(ctx, id); err == nil {
			break
		}
		if j, err := parts.Snapshots.Job(ctx, id); err == nil && j.Failed != "" {
			return cost{}, fmt.Errorf("snapshot job failed: %s", j.Failed)
		}
	}
	wall := time.Since(start).Seconds()
	cpu1, err := procCPU(w.Cmd.Process.Pid)
	if err != nil {
		return cost{}, err
	}
	backup := cost{wall: wall, cpu: cpu1 - cpu0}
	if busy1, ok := machineBusy(); ok && busyOK && last {
		fmt.Printf("# peer: snapshot backup: the machine's CPUs were %.0f %% busy (worker, PostgreSQL, broker)\n", 100*(busy1-busy0)/wall/float64(runtime.NumCPU()))
	}
	if sn.Records != int64(d.n) {
		return cost{}, fmt.Errorf("snapshot holds %d records, want %d", sn.Records, d.n)
	}
	if !last {
		return backup, nil
	}
	out := filepath.Join(dir, "restore")
	env := []string{harness.PostgresDSNEnv + "=" + dsn}
	syscall.Sync()
	if res.snapRestore, err = runCLI(cliBin, s, env, "restore", "--all", "--snapshot", "latest", "--class", peerClass, "--out", out); err != nil {
		return cost{}, err
	}
	files, err := countFiles(out)
	if err != nil {
		return cost{}, err
	}
	if files != d.n {
		return cost{}, fmt.Errorf("snapshot restore wrote %d files, want %d", files, d.n)
	}
	if err := sameRecords(d, func(i int) string {
		return restore.Path(out, peerTenant, customerOf(i), "records/"+recordName(i))
	}); err != nil {
		return cost{}, fmt.Errorf("snapshot restore: %w", err)
	}
	// The output stays until the section ends (see noDeletes).
	res.snapStored, err = dirSize(s.Targets[0])
	return backup, err
}

// medianCost is the median wall time and the median CPU of cs (zero for none).
func medianCost(cs []cost) cost {
	var walls, cpus []float64
	for _, c := range cs {
		walls, cpus = append(walls, c.wall), append(cpus, c.cpu)
	}
	return cost{wall: median(walls), cpu: median(cpus)}
}

// median is the middle value of xs, or the mean of the two middle ones (zero for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// walls lists the wall times of cs, or "-" for none.
func walls(cs []cost) string {
	if len(cs) == 0 {
		return "-"
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = strconv.FormatFloat(c.wall, 'f', 2, 64)
	}
	return strings.Join(out, " ")
}

// loadRows copies version 0 of every record into a records table.
func loadRows(ctx context.Context, dsn string, d *dataset) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE records (
		customer_id text NOT NULL, key text NOT NULL, value text NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
		deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (customer_id, key))`); err != nil {
		return err
	}
	i := 0
	rows := pgx.CopyFromFunc(func() ([]any, error) {
		if i == d.n {
			return nil, nil
		}
		rec, err := os.ReadFile(d.path(i))
		if err != nil {
			return nil, err
		}
		row := []any{customerOf(i), recordName(i), string(rec)}
		i++
		return row, nil
	})
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"records"}, []string{"customer_id", "key", "value"}, rows)
	if err != nil {
		return err
	}
	if int(n) != d.n {
		return fmt.Errorf("copied %d rows, want %d", n, d.n)
	}
	if _, err = conn.Exec(ctx, "ANALYZE records"); err != nil {
		return err
	}
	// The load's pages are written out now, not by a checkpoint in the middle of a timed step.
	_, err = conn.Exec(ctx, "CHECKPOINT")
	return err
}

// newStackIn is newStack in a given directory (removed by the section's cleanup).
func newStackIn(dir string, o harness.Options) (*harness.Stack, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s, err := harness.Start(dir, o)
	if err != nil {
		return nil, err
	}
	if err := worker.EnsureStreams(context.Background(), s.JS); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sameRecords checks that every record's restored file (at path(i)) holds the tree's bytes.
func sameRecords(d *dataset, path func(int) string) error {
	for i := range d.n {
		want, err := os.ReadFile(d.path(i))
		if err != nil {
			return err
		}
		got, err := os.ReadFile(path(i))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("record %d restored with other bytes", i)
		}
	}
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

func countFiles(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			n++
		}
		return err
	})
	return n, err
}

// print writes the section's BENCH lines: raw figures of each side, then the ratios (Custos
// throughput / restic throughput: above 1, Custos is faster).
func (r peerResults) print(haveRestic bool) {
	mb := func(n int64) float64 { return float64(n) / 1e6 }
	bench("peer_data_mb", mb(r.data), "MB")
	bench("peer_custos_backup_mb_per_s", r.custosBackup.mbPerS(r.data), "MB/s")
	bench("peer_custos_backup_mb_per_cpu_s", r.custosBackup.mbPerCPUS(r.data), "MB/cpu-s")
	fmt.Printf("# peer: Custos CPU is the worker's; the embedded broker and the producer (this process) used %.1f CPU s more during the full backup\n", r.custosBroker)
	bench("peer_custos_incremental_s", r.custosIncr.wall, "s")
	bench("peer_custos_incremental_cpu_s", r.custosIncr.cpu, "cpu-s")
	if len(r.customerRestore) > 0 {
		w := slices.Sorted(slices.Values(r.customerRestore))
		fmt.Printf("# peer: one-customer restores: %d runs of `custos restore --customer` (a process each, %d records)\n", len(w), recordsPer)
		bench("peer_custos_customer_restore_p50_ms", 1000*w[len(w)/2], "ms")
		bench("peer_custos_customer_restore_max_ms", 1000*w[len(w)-1], "ms")
		st := slices.Sorted(slices.Values(r.cliStart))
		bench("peer_custos_cli_start_p50_ms", 1000*st[len(st)/2], "ms")
	}
	if len(r.customerRestoreInProcess) > 0 {
		w := slices.Sorted(slices.Values(r.customerRestoreInProcess))
		fmt.Printf("# peer: the same restores made by a running process (restore.Restorer.Customer): no process start, configuration or broker connection\n")
		bench("peer_custos_customer_restore_in_process_p50_ms", 1000*w[len(w)/2], "ms")
		bench("peer_custos_customer_restore_in_process_max_ms", 1000*w[len(w)-1], "ms")
	}
	if r.fsCeiling.wall > 0 {
		// Both restores write one file per record: this disk's file creation bounds them.
		bench("peer_fs_write_files_mb_per_s", r.fsCeiling.mbPerS(r.data), "MB/s")
		bench("peer_restore_vs_fs_ratio", r.custosRestore.mbPerS(r.data)/r.fsCeiling.mbPerS(r.data), "ratio")
	}
	bench("peer_custos_restore_mb_per_s", r.custosRestore.mbPerS(r.data), "MB/s")
	bench("peer_custos_restore_mb_per_cpu_s", r.custosRestore.mbPerCPUS(r.data), "MB/cpu-s")
	bench("peer_custos_stored_mb", mb(r.custosStored), "MB")
	if r.snapBackup.wall > 0 {
		bench("peer_custos_snapshot_backup_mb_per_s", r.snapBackup.mbPerS(r.data), "MB/s")
		bench("peer_custos_snapshot_backup_mb_per_cpu_s", r.snapBackup.mbPerCPUS(r.data), "MB/cpu-s")
		bench("peer_custos_snapshot_restore_mb_per_s", r.snapRestore.mbPerS(r.data), "MB/s")
		bench("peer_custos_snapshot_stored_mb", mb(r.snapStored), "MB")
	}
	if !haveRestic {
		return
	}
	bench("peer_restic_backup_mb_per_s", r.resticBackup.mbPerS(r.data), "MB/s")
	bench("peer_restic_backup_mb_per_cpu_s", r.resticBackup.mbPerCPUS(r.data), "MB/cpu-s")
	bench("peer_restic_incremental_s", r.resticIncr.wall, "s")
	bench("peer_restic_incremental_cpu_s", r.resticIncr.cpu, "cpu-s")
	bench("peer_restic_restore_mb_per_s", r.resticRestore.mbPerS(r.data), "MB/s")
	bench("peer_restic_restore_mb_per_cpu_s", r.resticRestore.mbPerCPUS(r.data), "MB/cpu-s")
	bench("peer_restic_stored_mb", mb(r.resticStored), "MB")

	bench("peer_backup_ratio", r.custosBackup.mbPerS(r.data)/r.resticBackup.mbPerS(r.data), "ratio")
	bench("peer_backup_ratio_per_cpu", r.custosBackup.mbPerCPUS(r.data)/r.resticBackup.mbPerCPUS(r.data), "ratio")
	bench("peer_backup_ratio_per_cpu_with_broker", (mb(r.data)/(r.custosBackup.cpu+r.custosBroker))/r.resticBackup.mbPerCPUS(r.data), "ratio")
	if r.snapBackup.wall > 0 {
		bench("peer_snapshot_backup_ratio", r.snapBackup.mbPerS(r.data)/r.resticBackup.mbPerS(r.data), "ratio")
		bench("peer_snapshot_backup_ratio_per_cpu", r.snapBackup.mbPerCPUS(r.data)/r.resticBackup.mbPerCPUS(r.data), "ratio")
		bench("peer_snapshot_restore_ratio", r.snapRestore.mbPerS(r.data)/r.resticRestore.mbPerS(r.data), "ratio")
	}
	// The same change backed up by each: throughput ratio = restic's time / Custos's time.
	bench("peer_incremental_ratio", r.resticIncr.wall/r.custosIncr.wall, "ratio")
	bench("peer_incremental_ratio_per_cpu", r.resticIncr.cpu/r.custosIncr.cpu, "ratio")
	bench("peer_restore_ratio", r.custosRestore.mbPerS(r.data)/r.resticRestore.mbPerS(r.data), "ratio")
	bench("peer_restore_ratio_per_cpu", r.custosRestore.mbPerCPUS(r.data)/r.resticRestore.mbPerCPUS(r.data), "ratio")
	// Stored bytes: below 1, Custos stores less than restic.
	bench("peer_stored_ratio", float64(r.custosStored)/float64(r.resticStored), "ratio")
}
