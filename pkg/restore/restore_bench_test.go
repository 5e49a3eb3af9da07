package restore_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
)

// benchEnv is a repository on one local-disk target, its keys in the NATS key bucket and its
// index in the NATS catalog, as a deployment has them: the restore benchmarks and the profile
// of docs/performance.md (section Restore) read it.
type benchEnv struct {
	*bundle
	customers int
	records   int // distinct records
	items     int // stored items (records plus overwritten versions)
}

// The repository: 100 customers × 30 records of 10 KiB (random, so they do not compress), every
// 33rd record stored again as a newer version, packs of at most 1000 items as the worker makes.
const (
	benchCustomers = 100
	benchPerCust   = 30
	benchSize      = 10 << 10
	benchPackItems = 1000
)

func setupBench(b *testing.B) *benchEnv {
	b.Helper()
	bn := &bundle{ns: natstest.Start(b)}
	var err error
	bn.kms, err = keys.NewLocalKMS(testKEK, testPseudonymKey)
	if err != nil {
		b.Fatal(err)
	}
	if bn.index, err = catalog.Open(b.Context(), bn.ns.JS, 1); err != nil {
		b.Fatal(err)
	}
	store, err := keys.NewKVStore(b.Context(), bn.ns.JS, bn.kms)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	bn.useKeys(b, store)
	if bn.codec, err = pack.NewCodec(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bn.codec.Close)
	t, err := fs.New(filepath.Join(b.TempDir(), "target"), fs.WithLabel("disk"))
	if err != nil {
		b.Fatal(err)
	}
	bn.targets = []target.Target{t}

	env := &benchEnv{bundle: bn, customers: benchCustomers}
	var recs []record
	at := t0
	for c := range benchCustomers {
		for k := range benchPerCust {
			at = at.Add(time.Millisecond)
			recs = append(recs, rec("c"+strconv.Itoa(c), "k"+strconv.Itoa(k), randomData(uint64(c*1000+k), benchSize), at))
		}
	}
	env.records = len(recs)
	// Every 33rd record gets a newer version, stored later (in a later pack).
	for i := 0; i < len(recs); i += 33 {
		at = at.Add(time.Millisecond)
		r := recs[i]
		r.data = []byte(randomData(uint64(1e6+i), benchSize))
		r.at = at
		recs = append(recs, r)
	}
	env.items = len(recs)
	// Events arrive interleaved across customers, as they do in production.
	for chunk := range slices.Chunk(recs, benchPackItems) {
		bn.backup(b, "critical", chunk...)
	}
	return env
}

// benchRestorer is a new Restorer, as a new CLI process has, over the shared key store.
func benchRestorer(env *benchEnv) *restore.Restorer { return env.restorer() }

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchOut is a new directory to restore into: under CUSTOS_RESTORE_BENCH_DIR when set (to
// compare disks, or tmpfs to leave the disk out), else the test's temporary directory.
func benchOut(b *testing.B) string {
	parent := os.Getenv("CUSTOS_RESTORE_BENCH_DIR")
	if parent == "" {
		return b.TempDir()
	}
	out, err := os.MkdirTemp(parent, "restore-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(out) })
	return out
}

// BenchmarkRestoreAll restores every customer into a fresh directory. The machine's load makes
// ns/op noisy: cpu-ms/op (user and system time of the whole process) is steadier.
func BenchmarkRestoreAll(b *testing.B) {
	env := setupBench(b)
	var rep restore.Report
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		out := benchOut(b)
		c0 := cpuTime()
		b.StartTimer()
		var err error
		rep, err = benchRestorer(env).All(b.Context(), restore.Options{Out: out})
		if err != nil || !rep.OK() || rep.Records != env.records {
			b.Fatalf("%+v, %v", rep, err)
		}
		b.StopTimer()
		cpu += cpuTime() - c0
		_ = os.RemoveAll(out)
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(env.items), "items/op")
	b.ReportMetric(float64(rep.Bytes)/(1<<20), "MiB/op")
}

// BenchmarkRestoreCustomer restores one customer (30 records) at a time into a new directory,
// each restore with a new Restorer (a new CLI process would have a new one); -benchtime=200x
// gives a stable p50. The key store's cache is shared, as in a long-running process.
func BenchmarkRestoreCustomer(b *testing.B) {
	env := setupBench(b)
	var lat []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		out := benchOut(b)
		b.StartTimer()
		c := "c" + strconv.Itoa(i%env.customers)
		i++
		start := time.Now()
		rep, err := benchRestorer(env).Customer(b.Context(), "shop", c, restore.Options{Out: out})
		lat = append(lat, time.Since(start))
		if err != nil || !rep.OK() || rep.Records != benchPerCust {
			b.Fatalf("%s: %+v, %v", c, rep, err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}
