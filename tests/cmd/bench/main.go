// Command bench measures Custos against baselines taken in the same run and prints one figure
// a line as "BENCH <name> <value> <unit>". Workers run as separate processes, as in production;
// the broker is the embedded JetStream server.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

var (
	workerBin  = flag.String("worker-bin", "", "worker binary (default: build from this checkout)")
	events     = flag.Int("events", 20000, "events for the throughput runs")
	bigMiB     = flag.Int("big-mib", 1024, "size of the large item in MiB")
	latencyS   = flag.Duration("latency-for", 5*time.Second, "how long to publish at half rate for latency")
	packMiB    = flag.Int("pack-mib", 256, "size of the large pack written to each target")
	smallN     = flag.Int("small-packs", 500, "small (64 KiB) packs written to each target")
	cpuProfile = flag.String("cpuprofile", "", "write this process's CPU profile (broker and producers) here")
	only       = flag.String("only", "", "\"targets\", \"events\", \"bulk\" or \"peer\": only that part; \"sweep\": the event path under several worker settings (not in the full run)")
	peer       = flag.Bool("peer", true, "run the peer section (restic and Custos on the same data set); -peer=false skips it")
	records    = flag.Int("records", 20000, "records (~10 KiB of JSON each) in the peer section's data set")
	peerRounds = flag.Int("peer-rounds", 3, "full backups each tool makes in the peer section, interleaved; their medians are reported")
	resticBin  = flag.String("restic", "", "restic binary for the peer section (default: deploy/bench/install-restic.sh installs it)")
	cliBin     = flag.String("cli-bin", "", "custos CLI binary, for restores (default: build from this checkout)")
	taskConc   = flag.Int("task-concurrency", 0, "snapshot tasks the peer section's worker runs at once (0: the worker's default)")
	batching   = flag.Bool("batch", true, "producers batch post-transaction events (the SDK's default); -batch=false sends one message per event, for an A/B")
)

func main() {
	flag.Parse()
	if *cpuProfile != "" { // the broker and producers run in this process
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func bench(name string, v float64, unit string) { fmt.Printf("BENCH %s %.3f %s\n", name, v, unit) }

// leftovers are the directories the sections wrote, removed when the bench ends rather than
// between sections: on ext4 without a journal, removing many files makes creating files slow
// for minutes after (docs/performance.md), which would fall on the next section's figures.
var leftovers []string

// producerOpts are the bench producers' options (-batch).
func producerOpts() []producer.Option {
	if *batching {
		return nil
	}
	return []producer.Option{producer.WithBatching(1, 0)}
}

// removeAtExit queues dir for removal when the bench ends.
func removeAtExit(dir string) { leftovers = append(leftovers, dir) }

func run() error {
	defer func() {
		for _, d := range leftovers {
			os.RemoveAll(d)
		}
	}()
	ctx := context.Background()
	bin := *workerBin
	if bin == "" {
		var err error
		if bin, err = harness.WorkerBinary(); err != nil {
			return err
		}
	}
	if *only == "sweep" { // not part of the full run: several minutes for the defaults' record
		return sweepSection(ctx, bin)
	}
	if *only == "peer" {
		if !*peer {
			return errors.New("-only peer and -peer=false: nothing to run")
		}
		return runPeer(ctx, bin)
	}
	if *only == "" || *only == "targets" {
		if err := targetBench(ctx, *packMiB, *smallN); err != nil {
			return fmt.Errorf("targets: %w", err)
		}
	}
	if *only == "" || *only == "events" {
		syscall.Sync() // the last section's writes reach the disk before this one is timed
		if err := eventsSection(ctx, bin); err != nil {
			return err
		}
	}
	if *only == "" || *only == "bulk" {
		syscall.Sync() // the last section's writes reach the disk before this one is timed
		if err := bulkSection(ctx, bin); err != nil {
			return err
		}
	}
	if *only != "" {
		return nil
	}
	if *peer {
		syscall.Sync()
		return runPeer(ctx, bin)
	}
	return nil
}

func runPeer(ctx context.Context, bin string) error {
	cli := *cliBin
	if cli == "" {
		var err error
		if cli, err = harness.CLIBinary(); err != nil {
			return err
		}
	}
	// The CLI runs in each stack's directory: a relative path would not resolve there.
	if abs, err := filepath.Abs(cli); err == nil {
		cli = abs
	}
	if err := peerBench(ctx, bin, cli, *records); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	return nil
}

func sizeName(mib int) string {
	if mib%1024 == 0 {
		return strconv.Itoa(mib/1024) + "gib"
	}
	return strconv.Itoa(mib) + "mib"
}

// record is JSON-like customer data: compressible the way real records are.
func record(n int) []byte {
	var b bytes.Buffer
	r := mrand.New(mrand.NewPCG(1, 2))
	for b.Len() < n {
		fmt.Fprintf(&b, `{"sku":"SKU-%06d","qty":%d,"price":%d.%02d},`, r.IntN(1e6), r.IntN(9)+1, r.IntN(500), r.IntN(100))
	}
	return b.Bytes()[:n]
}

// eventsSection: raw JetStream against the event path, then publish-to-commit latency.
func eventsSection(ctx context.Context, bin string) error {
	payload := record(1024)
	raw, err := rawJetStream(ctx, *events, payload)
	if err != nil {
		return fmt.Errorf("raw baseline: %w", err)
	}
	e2e, err := endToEnd(ctx, bin, *events, payload)
	if err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	bench("raw_jetstream_events_per_s", raw, "events/s")
	bench("e2e_events_per_s", e2e, "events/s")
	bench("e2e_vs_raw_ratio", e2e/raw, "ratio")
	p50, p99, err := latency(ctx, bin, e2e/2, *latencyS, payload)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	bench("latency_p50_ms", p50, "ms")
	bench("latency_p99_ms", p99, "ms")
	return nil
}

// bulkSection: one large item by reference against zstd and AES-GCM alone, and the worker's
// peak memory for it against a 1 MiB item.
func bulkSection(ctx context.Context, bin string) error {
	rss1, _, err := largeItem(ctx, bin, 1<<20)
	if err != nil {
		return fmt.Errorf("1 MiB item: %w", err)
	}
	rssBig, bulk, err := largeItem(ctx, bin, int64(*bigMiB)<<20)
	if err != nil {
		return fmt.Errorf("large item: %w", err)
	}
	rawPipe := rawPipeline(int64(*bigMiB) << 20)
	bench("bulk_mb_per_s", bulk, "MB/s")
	bench("raw_pipeline_mb_per_s", rawPipe, "MB/s")
	bench("bulk_vs_raw_ratio", bulk/rawPipe, "ratio")
	bench("worker_rss_1mib_mib", rss1, "MiB")
	bench(fmt.Sprintf("worker_rss_%s_mib", sizeName(*bigMiB)), rssBig, "MiB")
	bench("worker_rss_ratio", rssBig/rss1, "ratio")
	return nil
}

// prodLike runs workers with the production AckWait (the harness's short one suits crash tests:
// it makes held events heartbeat ten times as often).
var prodLike = harness.Options{AckWait: 30 * time.Second}

func newStack(o harness.Options) (*harness.Stack, error) {
	dir, err := os.MkdirTemp("", "custos-bench-")
	if err != nil {
		return nil, err
	}
	s, err := harness.Start(dir, o)
	if err != nil {
		return nil, err
	}
	return s, worker.EnsureStreams(context.Background(), s.JS)
}

func closeStack(s *harness.Stack) {
	s.Close()
	removeAtExit(s.Dir)
}

// rawJetStream publishes n events of the same size to a plain stream and consumes them with a
// pull consumer, acknowledging each: the broker's own ceiling on this machine.
func rawJetStream(ctx context.Context, n int, payload []byte) (float64, error) {
	s, err := newStack(harness.Options{})
	if err != nil {
		return 0, err
	}
	defer closeStack(s)
	if _, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	cons, err := s.JS.CreateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return 0, err
	}
	// The consumer runs on its own connection, as a worker process would.
	nc2, err := nats.Connect(s.NATS.URL())
	if err != nil {
		return 0, err
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	cons2, err := js2.Consumer(ctx, "RAW", cons.CachedInfo().Name)
	if err != nil {
		return 0, err
	}
	var got sync.WaitGroup
	got.Add(n)
	cc, err := cons2.Consume(func(m jetstream.Msg) {
		m.Ack()
		got.Done()
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	start, cpu0 := time.Now(), selfCPU()
	for i := range n {
		for {
			_, err := s.JS.PublishAsync("raw.post_transaction", payload, jetstream.WithMsgID("raw-"+strconv.Itoa(i)))
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				continue // the broker is behind: wait for acks like a real producer would
			}
			if err != nil {
				return 0, err
			}
			break
		}
	}
	select {
	case <-s.JS.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("publishes not acknowledged")
	}
	got.Wait()
	took := time.Since(start).Seconds()
	bench("raw_jetstream_cpu_us_per_event", (selfCPU()-cpu0)*1e6/float64(n), "us")
	return float64(n) / took, nil
}

func postTx(i int, payload []byte) *custosv1.PostTransaction {
	return &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: "ev-" + strconv.Itoa(i), Time: timestamppb.Now(), Tenant: "bench",
			CustomerId: "cust-" + strconv.Itoa(i%1000), DataClass: "critical"},
		Record: &custosv1.Record{Key: "orders/" + strconv.Itoa(i%7), ContentType: "application/json",
			Source: &custosv1.Record_Inline{Inline: payload}},
	}
}

// endToEnd publishes n events and measures until every one is durable in three targets.
func endToEnd(ctx context.Context, bin string, n int, payload []byte) (float64, error) {
	var rate float64
	err := withWorker(ctx, bin, "e2e", prodLike, func(s *harness.Stack, w *harness.Worker) error {
		var err error
		var c eventCPU
		if rate, c, err = timedEventsCPU(ctx, s, w, n, payload); err != nil {
			return err
		}
		bench("e2e_worker_cpu_us_per_event", c.worker, "us")
		bench("e2e_broker_producer_cpu_us_per_event", c.broker, "us")
		// The producer batches post-transaction events (docs/events.md section 13); the raw
		// baseline sends one message per event.
		st, err := s.JS.Stream(ctx, event.StreamName)
		if err != nil {
			return err
		}
		if msgs := st.CachedInfo().State.LastSeq; msgs > 0 {
			bench("e2e_events_per_broker_message", float64(n+1000)/float64(msgs), "events")
		}
		if err := verifyBench(ctx, s); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if err := rebuildBench(ctx, s); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		return nil
	})
	return rate, err
}

// withWorker runs f on a new stack with one worker process; name names its CPU profile when
// CUSTOS_BENCH_PROFILE_DIR is set.
func withWorker(ctx context.Context, bin, name string, opts harness.Options, f func(*harness.Stack, *harness.Worker) error) error {
	s, err := newStack(opts)
	if err != nil {
		return err
	}
	defer closeStack(s)
	w, err := s.StartWorker(bin, name)
	if err != nil {
		return err
	}
	defer w.Stop(time.Minute)
	return f(s, w)
}

// timedEvents publishes n events after a warm-up of 1,000 (the keys of every customer exist
// before timing, as in a running system) and returns events per second until every one is
// durable.
func timedEvents(ctx context.Context, s *harness.Stack, n int, payload []byte) (float64, error) {
	if err := publishN(ctx, s, 0, 1000, payload); err != nil {
		return 0, err
	}
	if err := s.WaitSettled(ctx, 2*time.Minute); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := publishN(ctx, s, 1000, n, payload); err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "bench: publishing %d events took %v\n", n, time.Since(start).Round(time.Millisecond))
	if err := s.WaitSettled(ctx, 5*time.Minute); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// verifyBench runs custos verify --read-data (no repair) over what a run wrote: every replica
// downloaded, every manifest and item authenticated. The baseline is reading the same pack
// replicas without any check.
func verifyBench(ctx context.Context, s *harness.Stack) error {
	parts, cfg, err := s.Open(ctx)
	if err != nil {
		return err
	}
	defer parts.Close()
	names := map[string][]string{}
	for n, c := range cfg.Classes {
		names[n] = cfg.TargetNames(c.Targets)
	}
	classes := repository.ClassTargets(parts.Targets, names)
	start := time.Now()
	rep, err := repository.Verify(ctx, repository.VerifyConfig{Index: parts.Index, Keys: parts.Keys,
		Opener: parts.Repository().Opener, Targets: parts.Targets,
		Classes: classes, ReadData: true, NoRepair: true})
	if err != nil {
		return err
	}
	took := time.Since(start)
	if !rep.OK() || rep.ReadPacks == 0 {
		return fmt.Errorf("verified %d packs: %d problems, %d unrecoverable", rep.ReadPacks, len(rep.Problems), len(rep.Unrecoverable))
	}
	verify := float64(rep.BytesRead) / 1e6 / took.Seconds()

	packs, err := parts.Index.Packs(ctx)
	if err != nil {
		return err
	}
	start = time.Now()
	var raw int64
	for _, p := range packs {
		for _, t := range classes[p.Class] {
			for _, name := range []string{repository.PackName(p.Pack), repository.ManifestName(p.Pack)} {
				rc, err := t.Get(ctx, name)
				if err != nil {
					return err
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil {
					return err
				}
				raw += n
			}
		}
	}
	rawRate := float64(raw) / 1e6 / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "bench: verify read %d packs, %d replicas, %d bytes in %v\n", rep.ReadPacks, rep.Replicas, rep.BytesRead, took.Round(time.Millisecond))
	bench("verify_read_data_mb_per_s", verify, "MB/s")
	bench("raw_read_mb_per_s", rawRate, "MB/s")
	bench("verify_vs_raw_read_ratio", verify/rawRate, "ratio")
	return nil
}

// rebuildBench reads back the catalog a run wrote, as custos catalog rebuild --from t0 does
// (docs/design.md section 11), into memory: the erasure records and listings of every target,
// then every manifest of t0 read and authenticated. The time is scaled to 10,000 packs.
func rebuildBench(ctx context.Context, s *harness.Stack) error {
	cfg, err := config.Load(s.Config)
	if err != nil {
		return err
	}
	off, err := cfg.OpenOffline(ctx)
	if err != nil {
		return err
	}
	defer off.Close()
	from, others, err := config.FindTarget(off.Targets, "t0")
	if err != nil {
		return err
	}
	readers := target.Readers(others)
	var rep repository.RebuildReport
	var runs []time.Duration // the median of three runs, each into an empty catalog
	for range 3 {
		start := time.Now()
		rep, err = repository.Rebuild(ctx, from, readers, off.Opener(), repository.NewMemory(off.KMS), repository.RebuildOptions{})
		runs = append(runs, time.Since(start))
		if err != nil {
			return err
		}
		if !rep.OK() || rep.Packs == 0 {
			return fmt.Errorf("rebuilt %d packs, %d failures", rep.Packs, len(rep.Failures))
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i] < runs[j] })
	took := runs[1]
	fmt.Fprintf(os.Stderr, "bench: rebuild read %d manifests (%d keys) from %s in %v (median of 3)\n", rep.Packs, rep.Keys, from.Name(), took.Round(time.Millisecond))
	bench("rebuild_seconds_per_10k_packs", took.Seconds()*10000/float64(rep.Packs), "s")
	return nil
}

// eventCPU is CPU microseconds per event: the worker process's, and this process's (the
// broker and the producer).
type eventCPU struct{ worker, broker float64 }

// timedEventsCPU is timedEvents with the CPU each process used per event, warm-up included.
func timedEventsCPU(ctx context.Context, s *harness.Stack, w *harness.Worker, n int, payload []byte) (float64, eventCPU, error) {
	w0, err := procCPU(w.Cmd.Process.Pid)
	if err != nil {
		return 0, eventCPU{}, err
	}
	b0 := selfCPU()
	rate, err := timedEvents(ctx, s, n, payload)
	if err != nil {
		return 0, eventCPU{}, err
	}
	w1, err := procCPU(w.Cmd.Process.Pid)
	if err != nil {
		return 0, eventCPU{}, err
	}
	perEvent := 1e6 / float64(n+1000) // timedEvents also publishes 1,000 warm-up events
	return rate, eventCPU{worker: (w1 - w0) * perEvent, broker: (selfCPU() - b0) * perEvent}, nil
}

func publishN(ctx context.Context, s *harness.Stack, from, n int, payload []byte) error {
	p, err := producer.New(s.JS, "urn:custos:bench", producerOpts()...)
	if err != nil {
		return err
	}
	for i := from; i < from+n; i++ {
		if _, err := p.PublishPostTransactionAsync(ctx, postTx(i, payload)); err != nil {
			return err
		}
	}
	return p.Flush(ctx)
}

// latency publishes at a fixed rate and measures, per event, the time from publish to the
// moment its pack is committed (the intent's done mark, written just before the ack).
func latency(ctx context.Context, bin string, rate float64, d time.Duration, payload []byte) (float64, float64, error) {
	s, err := newStack(prodLike)
	if err != nil {
		return 0, 0, err
	}
	defer closeStack(s)
	w, err := s.StartWorker(bin, "latency")
	if err != nil {
		return 0, 0, err
	}
	defer w.Stop(time.Minute)
	if err := publishN(ctx, s, 0, 1000, payload); err != nil {
		return 0, 0, err
	}
	if err := s.WaitSettled(ctx, 2*time.Minute); err != nil {
		return 0, 0, err
	}
	var mu sync.Mutex
	packSeqs := map[string][]uint64{}
	doneAt := map[uint64]time.Time{}
	sub, err := s.NC.Subscribe(worker.IntentSubjectPrefix+">", func(m *nats.Msg) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if id, ok := strings.CutSuffix(strings.TrimPrefix(m.Subject, worker.IntentSubjectPrefix), ".done"); ok {
			for _, seq := range packSeqs[id] {
				doneAt[seq] = now
			}
			return
		}
		var in struct {
			Pack string
			Seqs []uint64
		}
		if jsonUnmarshal(m.Data, &in) == nil {
			packSeqs[in.Pack] = in.Seqs
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer sub.Unsubscribe()
	p, err := producer.New(s.JS, "urn:custos:bench", producerOpts()...)
	if err != nil {
		return 0, 0, err
	}
	sent := map[uint64]time.Time{}
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(d)
	type pending struct {
		f  *producer.Future
		at time.Time
	}
	var pend []pending
	for i := 1000; time.Now().Before(end); i++ {
		<-tick.C
		at := time.Now()
		f, err := p.PublishPostTransactionAsync(ctx, postTx(i, payload))
		if err != nil {
			return 0, 0, err
		}
		pend = append(pend, pending{f, at})
	}
	for _, pe := range pend {
		ack, err := pe.f.Wait(ctx)
		if err != nil {
			return 0, 0, err
		}
		sent[ack.Sequence] = pe.at
	}
	if err := s.WaitSettled(ctx, 2*time.Minute); err != nil {
		return 0, 0, err
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var lat []float64
	for seq, at := range sent {
		if done, ok := doneAt[seq]; ok {
			lat = append(lat, float64(done.Sub(at).Microseconds())/1000)
		}
	}
	if len(lat) < len(sent)*9/10 {
		return 0, 0, fmt.Errorf("saw commits for only %d of %d events", len(lat), len(sent))
	}
	sort.Float64s(lat)
	return pct(lat, 0.50), pct(lat, 0.99), nil
}

func pct(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// largeItem backs up one item of size bytes by reference with a fresh worker process and
// returns the worker's peak RSS (MiB) and the throughput from event to durable (MB/s).
func largeItem(ctx context.Context, bin string, size int64) (float64, float64, error) {
	s, err := newStack(harness.Options{AckWait: 30 * time.Second})
	if err != nil {
		return 0, 0, err
	}
	defer closeStack(s)
	obs, err := s.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "bench-uploads", Storage: jetstream.FileStorage})
	if err != nil {
		return 0, 0, err
	}
	pr, pw, _ := os.Pipe()
	go func() {
		writeData(pw, size)
		pw.Close()
	}()
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "item"}, pr); err != nil {
		return 0, 0, err
	}
	w, err := s.StartWorker(bin, "bulk-"+strconv.FormatInt(size, 10))
	if err != nil {
		return 0, 0, err
	}
	defer w.Stop(time.Minute)
	p, err := producer.New(s.JS, "urn:custos:bench", producerOpts()...)
	if err != nil {
		return 0, 0, err
	}
	// Let the worker start before timing.
	time.Sleep(500 * time.Millisecond)
	ev := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: "big", Time: timestamppb.Now(), Tenant: "bench", CustomerId: "cust-big", DataClass: "critical"},
		Record: &custosv1.Record{Key: "export", Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{
			Uri: "nats-object://bench-uploads/item", Size: size}}},
	}
	start := time.Now()
	if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
		return 0, 0, err
	}
	if err := s.WaitSettled(ctx, 10*time.Minute); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	rss, err := peakRSS(w.Cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	return rss, float64(size) / 1e6 / elapsed.Seconds(), nil
}

// writeData writes size bytes of log-like data: compressible, as real exports are.
func writeData(w *os.File, size int64) {
	bw := bufio.NewWriterSize(w, 1<<20)
	r := mrand.New(mrand.NewPCG(3, 4))
	var line []byte
	for n := int64(0); n < size; {
		line = fmt.Appendf(line[:0], "2026-11-23T10:%02d:%02d order=%d sku=SKU-%06d qty=%d status=shipped\n",
			r.IntN(60), r.IntN(60), r.Int64N(1e9), r.IntN(1e6), r.IntN(9)+1)
		if rem := size - n; int64(len(line)) > rem {
			line = line[:rem]
		}
		bw.Write(line)
		n += int64(len(line))
	}
	bw.Flush()
}

func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// rawPipeline runs zstd (same level) and AES-256-GCM (64 KiB segments) alone over the same
// kind of data, in memory, on one core: the ceiling for the bulk path.
func rawPipeline(size int64) float64 {
	size = min(size, 256<<20)
	f, _ := os.CreateTemp("", "custos-raw-")
	defer os.Remove(f.Name())
	writeData(f, size)
	f.Close()
	data, _ := os.ReadFile(f.Name())
	key := make([]byte, 32)
	rand.Read(key)
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	nonce := make([]byte, 12)
	seg := make([]byte, 0, 64<<10+16)
	start := time.Now()
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	sink := &gcmSink{gcm: gcm, nonce: nonce, seg: seg}
	enc.Reset(sink)
	enc.Write(data)
	enc.Close()
	sink.flush()
	return float64(size) / 1e6 / time.Since(start).Seconds()
}

type gcmSink struct {
	gcm   cipher.AEAD
	nonce []byte
	seg   []byte
	buf   []byte
	n     uint64
}

func (s *gcmSink) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for len(s.buf) >= 64<<10 {
		s.seal(s.buf[:64<<10])
		s.buf = s.buf[64<<10:]
	}
	return len(p), nil
}

func (s *gcmSink) seal(b []byte) {
	s.n++
	s.nonce[0] = byte(s.n)
	s.seg = s.gcm.Seal(s.seg[:0], s.nonce, b, nil)
}

func (s *gcmSink) flush() { s.seal(s.buf) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
