// Package worker consumes trigger events from JetStream and turns them into encrypted packs
// durable in every target their data class requires. Any number of workers, on any machines,
// share one durable pull consumer; docs/design.md describes the ordering rules they follow.
package worker

import (
	"context"
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/erasure"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/target"
)

// Deps are the parts a worker works with; they outlive it.
type Deps struct {
	JS jetstream.JetStream
	// Keys gives data keys and their wrapped form, which every manifest carries.
	Keys       keys.EnvelopeStore
	Pseudonyms keys.Pseudonymizer
	Index      *catalog.Index
	// Repairs records replicas a pack missed. Required when a class's MinReplicas is below its
	// number of targets.
	Repairs *repair.Queue
	// Snapshots, Records and Sources enable snapshots from sources: the job store, the dedup
	// cache and, per data class, the source its scheduled snapshots read. Without Snapshots,
	// schedule ticks are acknowledged with a log line.
	Snapshots *snapshot.Store
	Records   *snapshot.Records
	Sources   map[string]source.Source
	// KEKs, when set, names the KEK versions in deletion certificates (which versions must be
	// destroyed for locked copies to be unreadable too).
	KEKs keys.Ring
}

// Stats counts what a worker did; read it with Worker.Stats.
type Stats struct {
	Events       int64 // events acknowledged after their data was durable (or nothing to store)
	Items        int64 // items sealed
	Packs        int64 // packs committed by this worker
	Bytes        int64 // pack bytes written per target
	DeadLettered int64
	Redelivered  int64
	Erased       int64
	// ReplicasMissed counts (pack, target) pairs recorded for repair.
	ReplicasMissed int64
	// SnapshotTasks counts snapshot tasks this worker made durable; SnapshotsFailed jobs it gave
	// up after their last delivery.
	SnapshotTasks   int64
	SnapshotsFailed int64
	// PeakHeldBytes is the most message bytes this worker held at once (MaxInFlightBytes).
	PeakHeldBytes int64
}

// Worker is one worker process's consumer. Start it once; Stop drains it.
type Worker struct {
	cfg        Config
	deps       Deps
	log        *slog.Logger
	tracer     trace.Tracer
	codec      *pack.Codec
	targets    map[string]target.Target
	limits     event.Limits
	events     jetstream.Stream
	intents    *intentTable
	repo       *repository.Writer // writes the record to the targets, in order
	audit      *audit.Log
	alerts     metric.Int64Counter
	metrics    *workerMetrics // metrics.go
	commitLoop *periodic.Loop
	// erasures holds deletion requests; signer signs their certificates.
	erasures    *erasure.Store
	signer      keys.Signer
	erasureLoop *periodic.Loop
	auditw      auditWork // backup_commit summaries and periodic checkpoints (auditcommit.go)

	sem     chan struct{} // one slot per held event
	commits chan *batch
	packers map[string]*packer

	mu   sync.Mutex
	held map[*heldMsg]struct{}
	// heldBytes is the size of the held messages' data; bytesFree is signalled when it falls.
	heldBytes int64
	bytesFree *sync.Cond
	stats     Stats
	lastErr   map[uint64]string

	runCtx context.Context
	cancel context.CancelFunc
	// workCtx bounds writes in progress; handBack cancels it so a drain that timed out ends.
	workCtx    context.Context
	abortWork  context.CancelFunc
	handedBack atomic.Bool
	iter       jetstream.MessagesContext
	fetched    chan struct{}  // closed when the consumer loop has returned
	inbox      chan *heldMsg  // received events waiting for a decoder
	wg         sync.WaitGroup // consumer loop, heartbeat, committers
	work       sync.WaitGroup // handlers of held events
	started    bool
	stopped    bool
	stopMu     sync.Mutex
}

// New validates the configuration and returns a worker that is not yet consuming.
func New(deps Deps, cfg Config) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if deps.JS == nil || deps.Keys == nil || deps.Pseudonyms == nil || deps.Index == nil {
		return nil, errors.New("worker: JetStream, key store, pseudonymizer and index are required")
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	w := &Worker{
		cfg: cfg, deps: deps, log: cfg.Logger.With("component", "worker"),
		tracer:  tp.Tracer("github.com/custos-dev/custos/pkg/worker"),
		targets: map[string]target.Target{},
		sem:     make(chan struct{}, cfg.MaxInFlight),
		commits: make(chan *batch, cfg.CommitConcurrency),
		packers: map[string]*packer{},
		held:    map[*heldMsg]struct{}{},
		lastErr: map[uint64]string{},
	}
	w.bytesFree = sync.NewCond(&w.mu)
	for _, t := range cfg.Targets {
		w.targets[t.Name()] = t
	}
	classes := make([]string, 0, len(cfg.Classes))
	for name := range cfg.Classes {
		classes = append(classes, name)
		w.packers[name] = newPacker(w, name)
		w.packers[packerKey(name, true)] = &packer{w: w, class: name, hold: true}
	}
	if err := w.initAlerts(); err != nil {
		return nil, err
	}
	w.metrics = newWorkerMetrics(w) // metrics.go
	w.limits = event.Limits{Classes: classes, MaxInlineBytes: cfg.MaxInlineBytes, MaxEventBytes: cfg.MaxEventBytes}
	return w, nil
}

// Start creates the streams and the shared consumer if needed and begins consuming. It returns
// once consumption has started; calling it twice is an error.
func (w *Worker) Start(ctx context.Context) error {
	w.stopMu.Lock()
	defer w.stopMu.Unlock()
	if w.started {
		return errors.New("worker: already started")
	}
	codec, err := pack.NewCodec()
	if err != nil {
		return err
	}
	w.codec = codec
	rc := repository.WriterConfig{Keys: w.deps.Keys, Fingerprint: w.deps.Pseudonyms.Fingerprint(), Index: w.deps.Index,
		Grace: w.cfg.ReplicaGrace, Tracer: w.tracer, Clock: w.cfg.Clock, Logger: w.log}
	if w.deps.Repairs != nil { // a nil *repair.Queue must stay a nil interface
		rc.Repairs = w.deps.Repairs
	}
	if w.repo, err = repository.NewWriter(ctx, rc); err != nil {
		return err
	}
	if err := EnsureStreams(ctx, w.deps.JS); err != nil {
		return err
	}
	if w.audit, err = audit.Open(ctx, w.deps.JS); err != nil {
		return err
	}
	signer, ok := w.deps.Pseudonyms.(keys.Signer)
	if !ok {
		return errors.New("worker: the pseudonymizer gives no signing key for deletion certificates")
	}
	w.signer = signer
	if w.erasures, err = erasure.Open(ctx, w.deps.JS, 1); err != nil {
		return err
	}
	w.events, err = w.deps.JS.Stream(ctx, event.StreamName)
	if err != nil {
		return fmt.Errorf("worker: events stream: %w", err)
	}
	cons, err := w.joinConsumer(ctx, event.StreamName, jetstream.ConsumerConfig{
		Durable:       w.cfg.Consumer,
		Description:   "Custos workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    -1, // the worker dead-letters after cfg.MaxDeliver itself, with the reason
		MaxAckPending: 1 << 20,
		FilterSubject: event.SubjectPrefix + ">",
	})
	if err != nil {
		return fmt.Errorf("worker: consumer %s: %w", w.cfg.Consumer, err)
	}
	w.runCtx, w.cancel = context.WithCancel(context.Background())
	context.AfterFunc(w.runCtx, w.wakeBytes) // a consume loop waiting for room stops
	w.workCtx, w.abortWork = context.WithCancel(context.Background())
	w.intents = newIntentTable(w.deps.JS, w.log)
	since := w.cfg.Clock().Add(-w.intentHorizon())
	// An ordered consumer on a replicated stream waits for the stream's leader, as joining does.
	if err := w.retryStart(ctx, "following pack intents", func() error { return w.intents.start(w.runCtx, since) }); err != nil {
		w.cancel()
		return err
	}
	batchSize := min(w.cfg.MaxInFlight, 1024)
	// The client buffers at most a pull's worth of messages; the byte bound keeps a pull of
	// batches (up to half a MiB each) from buffering hundreds of MiB.
	pullBytes := int(min(max(w.cfg.MaxInFlightBytes/4, 2*int64(w.cfg.MaxEventBytes)), 1<<30))
	w.iter, err = cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(batchSize, pullBytes))
	if err != nil {
		w.cancel()
		return fmt.Errorf("worker: consume: %w", err)
	}
	for range w.cfg.CommitConcurrency {
		w.wg.Add(1)
		go w.committer()
	}
	w.fetched = make(chan struct{})
	// Decoding and sealing are CPU work: spread them over the cores. There are more decoders
	// than cores because a new customer's first event waits for a key-store round trip (its
	// data key is created); the other decoders keep the cores busy meanwhile, so those round
	// trips overlap instead of running one after another. The inbox holds up to
	// MaxInFlight events so that consume moves every fetched message out of the client's buffer
	// into w.held at once: held events get heartbeats, buffered ones would not, and under load
	// they would outlive AckWait and be redelivered while this worker is alive.
	w.inbox = make(chan *heldMsg, w.cfg.MaxInFlight)
	for range decodersPerCore * runtime.GOMAXPROCS(0) {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for h := range w.inbox {
				w.receive(h)
			}
		}()
	}
	w.wg.Add(2)
	go w.consume()
	go w.heartbeat()
	err = w.startTasks(ctx)
	if err == nil {
		err = w.startErasures(w.runCtx)
	}
	if err == nil {
		err = w.startAudit(w.runCtx)
	}
	if err != nil {
		w.cancel()
		w.abortWork()
		w.iter.Stop()
		w.wg.Wait()
		return err
	}
	w.started = true
	w.log.Info("worker started", "consumer", w.cfg.Consumer, "max_in_flight", w.cfg.MaxInFlight)
	return nil
}

// decodersPerCore sets how many goroutines decode and seal events, per core (see Start).
const decodersPerCore = 4

// intentHorizon is how far back a redelivered event's pack intent can be.
func (w *Worker) intentHorizon() time.Duration {
	return w.cfg.AckWait * time.Duration(w.cfg.MaxDeliver+2)
}

// Stop drains the worker: it stops fetching, finishes and acknowledges what it holds, and hands
// back (naks) whatever is still held after DrainTimeout. It is safe before Start and twice.
func (w *Worker) Stop(ctx context.Context) error {
	w.stopMu.Lock()
	defer w.stopMu.Unlock()
	if !w.started || w.stopped {
		return nil
	}
	w.stopped = true
	// Drain hands over the events already buffered; the loop returns once they are received.
	w.iter.Drain()
	done := make(chan struct{})
	go func() {
		<-w.fetched
		w.work.Wait() // safe: nothing adds to work once the loop has returned
		close(done)
	}()
	// Flush partial packs now rather than waiting for their age limit.
	flushT := time.NewTicker(10 * time.Millisecond)
	deadline := time.NewTimer(w.cfg.DrainTimeout)
	defer flushT.Stop()
	defer deadline.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-flushT.C:
			for _, p := range w.packers {
				p.flush()
			}
		case <-deadline.C:
			w.handBack("drain timeout")
			<-done
			break wait
		case <-ctx.Done():
			w.handBack("stop cancelled")
			<-done
			break wait
		}
	}
	for _, p := range w.packers {
		p.discard()
	}
	if w.commitLoop != nil {
		_ = w.commitLoop.Stop(ctx)
	}
	if w.erasureLoop != nil {
		_ = w.erasureLoop.Stop(ctx)
	}
	w.cancel()
	w.abortWork()
	w.wg.Wait()
	w.stopAudit(ctx) // after the last commit: appends the summaries still pending
	w.intents.stop()
	w.codec.Close()
	w.log.Info("worker stopped")
	return nil
}

// handBack naks every held event so another worker takes it now.
func (w *Worker) handBack(why string) {
	w.handedBack.Store(true)
	w.wakeBytes()
	w.abortWork()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log.Warn("handing back held events", "reason", why, "events", len(w.held))
	for h := range w.held {
		h.nak(0)
	}
}

// Stats returns a snapshot of the counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

func (w *Worker) count(f func(*Stats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

// consume fetches events while the worker runs, holding at most MaxInFlight at once.
func (w *Worker) consume() {
	defer w.wg.Done()
	defer close(w.fetched)
	defer close(w.inbox)
	for {
		select {
		case w.sem <- struct{}{}:
		case <-w.runCtx.Done():
			return
		}
		msg, err := w.iter.Next()
		if err != nil {
			<-w.sem
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			w.log.Warn("fetch failed", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-w.runCtx.Done():
				return
			}
			continue
		}
		w.work.Add(1)
		h := w.hold(msg)
		w.reserveBytes(h)
		if w.handedBack.Load() {
			h.nak(0)
			continue
		}
		w.inbox <- h
	}
}

// reserveBytes counts h's data against MaxInFlightBytes, first waiting until the held messages
// leave room for it (one message is always taken) or the worker stops. h is already held, so it
// gets heartbeats while it waits.
func (w *Worker) reserveBytes(h *heldMsg) {
	n := int64(len(h.msg.Data()))
	w.mu.Lock()
	for w.heldBytes > 0 && w.heldBytes+n > w.cfg.MaxInFlightBytes && w.runCtx.Err() == nil && !w.handedBack.Load() {
		w.bytesFree.Wait()
	}
	w.heldBytes += n
	w.stats.PeakHeldBytes = max(w.stats.PeakHeldBytes, w.heldBytes)
	h.bytes = n
	w.mu.Unlock()
}

func (w *Worker) wakeBytes() {
	w.mu.Lock()
	w.bytesFree.Broadcast()
	w.mu.Unlock()
}

// heartbeat tells the server that held events are still being worked on.
func (w *Worker) heartbeat() {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-w.runCtx.Done():
			return
		case <-t.C:
			w.mu.Lock()
			hs := make([]*heldMsg, 0, len(w.held))
			for h := range w.held {
				hs = append(hs, h)
			}
			w.mu.Unlock()
			for _, h := range hs {
				h.inProgress()
			}
		}
	}
}
