package repair

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/target"
)

// Index is the part of the catalog the repairer updates.
type Index interface {
	AddTarget(ctx context.Context, pack, targetName string) error
}

// Config configures a Repairer. Queue, Targets and Index are required.
type Config struct {
	Queue   *Queue
	Targets []target.Target // every target a class may name, keyed by Name()
	Index   Index
	// Interval between passes over the queue. Default 5 s.
	Interval time.Duration
	// SpoolDir holds an object copied from a healthy replica while it is verified and written.
	// Default os.TempDir().
	SpoolDir      string
	Logger        *slog.Logger
	Clock         func() time.Time
	MeterProvider metric.MeterProvider
}

// Result sums up one pass.
type Result struct {
	Repaired int // entries completed this pass
	Pending  int // entries left (their target still down, or no healthy source)
}

// Repairer copies missing replicas back. Several repairers (one per worker) may run at once:
// a repair is create-only and idempotent, so two copying the same object do no harm.
type Repairer struct {
	cfg     Config
	targets map[string]target.Target

	mu      sync.Mutex
	missing map[classTarget]int64 // from the last pass: the outage metric
	depth   int64                 // queue entries at the last pass
	summary string                // what the last pass left waiting, as logged
	loop    periodic.Loop
}

// New validates cfg and returns a stopped Repairer.
func New(cfg Config) (*Repairer, error) {
	if cfg.Queue == nil || cfg.Index == nil || len(cfg.Targets) == 0 {
		return nil, errors.New("repair: Queue, Index and Targets are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	r := &Repairer{cfg: cfg, targets: map[string]target.Target{}, missing: map[classTarget]int64{}}
	r.loop = periodic.Loop{Interval: cfg.Interval,
		Run: func(ctx context.Context) error {
			_, err := r.RunOnce(ctx)
			return err
		},
		OnError: func(err error) { r.cfg.Logger.Warn("repair pass failed", "err", err) }}
	for _, t := range cfg.Targets {
		r.targets[t.Name()] = t
	}
	meter := cfg.MeterProvider.Meter("github.com/custos-dev/custos/pkg/repair")
	// A series stays in the gauge at 0 once repaired, so dashboards see it return to 0.
	_, err := meter.Int64ObservableGauge("custos.replicas.missing",
		metric.WithDescription("Replicas recorded as missing from a target and not yet repaired, by class and target; non-zero while a target is out"),
		metric.WithUnit("{replica}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			for k, n := range r.missing {
				o.Observe(n, metric.WithAttributes(attribute.String("class", k.class), attribute.String("target", k.target)))
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("repair: metric: %w", err)
	}
	_, err = meter.Int64ObservableGauge("custos.repair.queue.depth",
		metric.WithDescription("Entries in the repair queue at the last pass, every kind of record"),
		metric.WithUnit("{entry}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			o.Observe(r.depth)
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("repair: metric: %w", err)
	}
	return r, nil
}

// Start runs a pass at once and then every Interval until Stop. A no-op when already started.
func (r *Repairer) Start(ctx context.Context) error { return r.loop.Start(ctx) }

// Stop ends the loop and waits for the pass in progress. Safe twice and before Start.
func (r *Repairer) Stop(ctx context.Context) error { return r.loop.Stop(ctx) }

// RunOnce makes one pass over the queue. A target that fails a write is skipped for the rest of
// the pass (it is probably still down); its entries wait for the next pass.
func (r *Repairer) RunOnce(ctx context.Context) (Result, error) {
	entries, err := r.cfg.Queue.List(ctx)
	if err != nil {
		return Result{}, err
	}
	var res Result
	down := map[string]bool{}
	w := waiting{byTarget: map[string]int{}, missing: map[classTarget]int64{}, why: map[string]error{}}
	for _, m := range entries {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		dst, ok := r.targets[m.Target]
		if !ok || down[m.Target] {
			res.Pending++
			w.add(m, nil)
			continue
		}
		if err := r.repair(ctx, dst, m); err != nil {
			res.Pending++
			w.add(m, err)
			if errors.Is(err, errTargetDown) {
				down[m.Target] = true
			}
			// Every pass retries every entry: per entry, this is debug detail. The summary
			// below says what is waiting, once per change.
			r.cfg.Logger.DebugContext(ctx, "replica not repaired yet", "pack", m.Pack, "target", m.Target, "err", err)
			continue
		}
		// Entries that are not packs (erasure and snapshot records) have no index entry.
		if pack.ValidID(m.Pack) {
			if err := r.cfg.Index.AddTarget(ctx, m.Pack, m.Target); err != nil {
				res.Pending++
				w.add(m, err)
				r.cfg.Logger.DebugContext(ctx, "repaired replica not indexed yet", "pack", m.Pack, "target", m.Target, "err", err)
				continue
			}
		}
		if err := r.cfg.Queue.Done(ctx, m); err != nil {
			return res, err
		}
		res.Repaired++
		r.cfg.Logger.InfoContext(ctx, "replica repaired", "pack", m.Pack, "target", m.Target,
			"outage", r.cfg.Clock().Sub(m.Since))
	}
	r.mu.Lock()
	for k := range r.missing {
		r.missing[k] = 0
	}
	maps.Copy(r.missing, w.missing)
	r.depth = int64(len(entries))
	summary, changed := w.String(), false
	if summary != r.summary {
		r.summary, changed = summary, true
	}
	r.mu.Unlock()
	if changed {
		if res.Pending == 0 {
			r.cfg.Logger.InfoContext(ctx, "no replica waits for repair")
		} else {
			args := []any{"pending", res.Pending, "targets", summary}
			if err := w.firstErr(); err != nil {
				args = append(args, "err", err)
			}
			r.cfg.Logger.InfoContext(ctx, "replicas wait for repair", args...)
		}
	}
	return res, nil
}

// classTarget labels the missing-replicas gauge. Both are names from the configuration.
type classTarget struct{ class, target string }

// waiting sums up the entries a pass left in the queue.
type waiting struct {
	byTarget map[string]int
	missing  map[classTarget]int64
	why      map[string]error // the first error per target
}

func (w *waiting) add(m Missing, err error) {
	class := m.Class
	if class == "" {
		class = "none"
	}
	w.byTarget[m.Target]++
	w.missing[classTarget{class, m.Target}]++
	if err != nil && w.why[m.Target] == nil {
		w.why[m.Target] = err
	}
}

// String is "t1=3 t2=1": the pending count per target, in name order.
func (w *waiting) String() string {
	var b strings.Builder
	for _, t := range slices.Sorted(maps.Keys(w.byTarget)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", t, w.byTarget[t])
	}
	return b.String()
}

func (w *waiting) firstErr() error {
	for _, t := range slices.Sorted(maps.Keys(w.why)) {
		return w.why[t]
	}
	return nil
}

var (
	errTargetDown = errors.New("target did not accept the write")
	errNoSource   = errors.New("no healthy replica to copy from")
)

// repair copies every object of m to dst from the first source whose copy verifies.
func (r *Repairer) repair(ctx context.Context, dst target.Target, m Missing) (err error) {
	// Each repair is a trace of its own: the events whose pack it completes were acknowledged
	// long ago. The span names the pack, which links it to the pack.commit span by attribute.
	ctx, span := otel.Tracer("github.com/custos-dev/custos/pkg/repair").Start(ctx, "repair",
		trace.WithAttributes(attribute.String("custos.pack.id", m.Pack), attribute.String("target", dst.Name()),
			attribute.Int("custos.repair.objects", len(m.Objects))))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "repair failed")
		}
		span.End()
	}()
	for _, o := range m.Objects {
		sum, err := hex.DecodeString(o.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return fmt.Errorf("repair: entry for pack %s has a bad checksum for %s", m.Pack, o.Name)
		}
		if err := r.copyObject(ctx, dst, m, o, [32]byte(sum)); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repairer) copyObject(ctx context.Context, dst target.Target, m Missing, o Object, sum [32]byte) error {
	// The object may be there already (an earlier pass, another repairer, or the write that
	// was abandoned had in fact completed).
	if same, err := replica.Verify(ctx, dst, o.Name, o.Size, sum); err == nil && same {
		return nil
	}
	sources := append([]string(nil), m.From...)
	for name := range r.targets {
		if name != m.Target && !slices.Contains(sources, name) {
			sources = append(sources, name)
		}
	}
	var lastErr error = errNoSource
	for _, name := range sources {
		src, ok := r.targets[name]
		if !ok || name == m.Target {
			continue
		}
		f, err := r.fetch(ctx, src, o, sum)
		if err != nil {
			lastErr = fmt.Errorf("from %s: %w", name, err)
			continue
		}
		res := replica.Write(ctx, []target.Target{dst}, o.Name, o.Size, sum,
			func() (io.ReadSeeker, error) { return os.Open(f) }, target.PutOptions{RetainUntil: m.RetainUntil, LegalHold: m.LegalHold})
		os.Remove(f)
		if err := res[0].Err; err != nil {
			if errors.Is(err, replica.ErrConflict) {
				return fmt.Errorf("repair %s on %s: %w", o.Name, m.Target, err)
			}
			return fmt.Errorf("repair %s on %s: %w: %w", o.Name, m.Target, errTargetDown, err)
		}
		return nil
	}
	return fmt.Errorf("repair %s on %s: %w", o.Name, m.Target, lastErr)
}

// fetch copies an object from src into a spool file and returns its path only if its size and
// SHA-256 match: a corrupted replica is never the source of a repair.
func (r *Repairer) fetch(ctx context.Context, src target.Reader, o Object, sum [32]byte) (string, error) {
	return FetchVerified(ctx, src, o.Name, o.Size, sum, r.cfg.SpoolDir, nil)
}

// FetchVerified copies an object from src into a new file in dir and returns the file's path,
// but only if the object holds exactly size bytes with SHA-256 sum: otherwise it removes the
// file and returns an error matching target.ErrChecksumMismatch (or src's error). A corrupted
// replica is thus never the source of a repair. wrap, when set, wraps the object's reader (a
// rate meter). The caller removes the file.
func FetchVerified(ctx context.Context, src target.Reader, name string, size int64, sum [32]byte, dir string, wrap func(io.Reader) io.Reader) (string, error) {
	rc, err := src.Get(ctx, name)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var body io.Reader = rc
	if wrap != nil {
		body = wrap(rc)
	}
	f, err := os.CreateTemp(dir, "fetch-*")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && (n != size || [32]byte(h.Sum(nil)) != sum) {
		err = fmt.Errorf("copy of %s from %s: %w", name, src.Name(), target.ErrChecksumMismatch)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
