package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/telemetry"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Defaults of Config.
const (
	DefaultBucket     = "CUSTOS_SCHEDULER"
	DefaultSource     = "//custos/scheduler"
	DefaultLease      = time.Minute
	DefaultMaxSleep   = time.Minute
	DefaultRetryDelay = 5 * time.Second
	DefaultRecordTTL  = 30 * 24 * time.Hour
)

// Config configures a Service. Zero values take the defaults.
type Config struct {
	// Policy says what is due. Required.
	Policy *policy.Policy
	// Replica names this replica in its claims and logs; each running replica needs its own.
	// Default: host name, process id and a random suffix.
	Replica string
	// Source is the ce-source of the published events. Default DefaultSource.
	Source string
	// Bucket is the NATS KV bucket that records every fired and skipped id. Default
	// DefaultBucket. Replicas sharing a policy must share the bucket.
	Bucket string
	// BucketReplicas is the bucket's replication in a NATS cluster (1, 3 or 5). Default 1.
	BucketReplicas int
	// RecordTTL is how long a record is kept. It must exceed the policy's catch-up window
	// (a record is what stops a tick from firing again); default the larger of DefaultRecordTTL
	// and twice the catch-up window.
	RecordTTL time.Duration
	// Lease is how long another replica's claim may stay unpublished before this replica takes
	// it over (its owner died between claiming and publishing). Keep Lease plus a publish's
	// retries well inside the stream's 2-minute duplicate window: a takeover then re-publishes
	// an event that did reach the stream as a duplicate, which JetStream drops. Default 1 minute.
	Lease time.Duration
	// MaxSleep bounds one wait, so the service notices wall-clock jumps (a suspended VM, a
	// corrected clock). Default 1 minute.
	MaxSleep time.Duration
	// RetryDelay is the wait after a NATS error before the pass is tried again. Default 5 s.
	RetryDelay time.Duration
	// Streams configures the event streams Start ensures exist.
	Streams event.StreamsConfig
	// ProducerOptions are added to the producer's (e.g. producer.WithTracerProvider).
	ProducerOptions []producer.Option
	// Logger, Clock and MeterProvider default to a discarding logger, SystemClock and the global
	// meter provider.
	Logger        *slog.Logger
	Clock         Clock
	MeterProvider metric.MeterProvider
}

// Stats counts what one replica did.
type Stats struct {
	Fired      int64 // events this replica published (each id is fired by exactly one replica)
	Duplicates int64 // publishes the stream reported as duplicates (a takeover of a claim that had been published)
	Skipped    int64 // events recorded as skipped by this replica: due longer ago than the catch-up window
	TakenOver  int64 // stale claims of other replicas this replica took over
	Errors     int64 // NATS errors; the pass is retried after RetryDelay
}

// Service publishes the ticks and deadlines of a policy as they fall due. Run one or more
// replicas against the same NATS: each event is fired by exactly one of them. Start it once;
// Stop is safe before Start and twice.
type Service struct {
	js    jetstream.JetStream
	cfg   Config
	p     *policy.Policy
	log   *slog.Logger
	clock Clock
	kv    jetstream.KeyValue
	prod  *producer.Producer
	m     serviceMetrics

	fired, duplicates, skipped, takenOver, errs atomic.Int64

	// Owned by the run goroutine.
	from    time.Time               // events due before from are settled by this replica
	pending map[string]pendingClaim // other replicas' claims to look at again

	mu      sync.Mutex
	running bool
	stopped bool
	stop    chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc
}

type pendingClaim struct {
	event Event
	at    time.Time // when to look again
}

type serviceMetrics struct {
	fired, skipped, takeovers, errors metric.Int64Counter
	lateness                          metric.Float64Histogram
}

// New validates cfg and returns a service that is not running yet.
func New(js jetstream.JetStream, cfg Config) (*Service, error) {
	if js == nil || cfg.Policy == nil {
		return nil, errors.New("schedule: JetStream and a policy are required")
	}
	p := cfg.Policy
	if cfg.Replica == "" {
		host, _ := os.Hostname()
		cfg.Replica = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if cfg.Source == "" {
		cfg.Source = DefaultSource
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.BucketReplicas == 0 {
		cfg.BucketReplicas = 1
	}
	if cfg.RecordTTL == 0 {
		cfg.RecordTTL = max(DefaultRecordTTL, 2*p.CatchUp)
	}
	if cfg.RecordTTL <= p.CatchUp {
		return nil, fmt.Errorf("schedule: record TTL %s must exceed the catch-up window %s", cfg.RecordTTL, p.CatchUp)
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.MaxSleep <= 0 {
		cfg.MaxSleep = DefaultMaxSleep
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	s := &Service{
		js: js, cfg: cfg, p: p, clock: cfg.Clock,
		log:     cfg.Logger.With("component", "scheduler", "replica", cfg.Replica, "tenant", p.Tenant),
		pending: map[string]pendingClaim{},
	}
	meter := cfg.MeterProvider.Meter(telemetry.InstrumentationName + "/pkg/schedule")
	var errs [5]error
	s.m.fired, errs[0] = meter.Int64Counter("custos.scheduler.fired", metric.WithUnit("{event}"),
		metric.WithDescription("Schedule ticks and compliance deadlines published."))
	s.m.skipped, errs[1] = meter.Int64Counter("custos.scheduler.skipped", metric.WithUnit("{event}"),
		metric.WithDescription("Ticks and deadlines not fired: due longer ago than the catch-up window when a scheduler came back."))
	s.m.takeovers, errs[2] = meter.Int64Counter("custos.scheduler.takeovers", metric.WithUnit("{claim}"),
		metric.WithDescription("Claims of a scheduler replica that died before publishing, taken over by another."))
	s.m.errors, errs[3] = meter.Int64Counter("custos.scheduler.errors", metric.WithUnit("{error}"),
		metric.WithDescription("NATS errors of the scheduler; the work is retried."))
	s.m.lateness, errs[4] = meter.Float64Histogram("custos.scheduler.lateness", metric.WithUnit("s"),
		metric.WithDescription("How long after its due time an event was published."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("schedule: metrics: %w", err)
	}
	return s, nil
}

// Replica is the name this replica claims events with.
func (s *Service) Replica() string { return s.cfg.Replica }

// Stats returns what this replica did so far.
func (s *Service) Stats() Stats {
	return Stats{Fired: s.fired.Load(), Duplicates: s.duplicates.Load(), Skipped: s.skipped.Load(),
		TakenOver: s.takenOver.Load(), Errors: s.errs.Load()}
}

// Start ensures the event streams and the record bucket exist, then runs the service in the
// background until Stop. It returns an error when called twice or after Stop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.running:
		return errors.New("schedule: already started")
	case s.stopped:
		return errors.New("schedule: stopped; create a new Service")
	}
	if err := event.EnsureStreams(ctx, s.js, s.cfg.Streams); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	kv, err := broker.EnsureKV(ctx, s.js, bucketConfig(s.cfg.Bucket, s.cfg.RecordTTL, s.cfg.BucketReplicas))
	if err != nil {
		return fmt.Errorf("schedule: record bucket %s: %w", s.cfg.Bucket, err)
	}
	s.kv = kv
	opts := append([]producer.Option{
		producer.WithClock(s.clock.Now),
		producer.WithLimits(event.Limits{Classes: s.p.ClassNames()}),
	}, s.cfg.ProducerOptions...)
	if s.prod, err = producer.New(s.js, s.cfg.Source, opts...); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	s.running = true
	go s.run(runCtx)
	s.log.Info("scheduler started", "classes", len(s.p.Classes), "deadlines", len(s.p.Deadlines), "catch_up", s.p.CatchUp)
	return nil
}

// Stop stops the service: it finishes the event in hand and returns. If ctx ends first, the
// work in hand is cancelled (a claim left unpublished is taken over by another replica, or by
// this one when it starts again). Safe before Start and twice.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	defer s.cancel()
	select {
	case <-s.done:
		s.log.Info("scheduler stopped")
		return nil
	case <-ctx.Done():
		s.cancel()
		<-s.done
		return fmt.Errorf("schedule: stop: %w", ctx.Err())
	}
}

func (s *Service) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *Service) run(ctx context.Context) {
	defer close(s.done)
	for {
		wake := s.pass(ctx)
		if s.stopping() {
			return
		}
		now := s.clock.Now()
		d := min(max(wake.Sub(now), 0), s.cfg.MaxSleep)
		t := s.clock.NewTimer(d)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// pass settles every event due up to now and returns when to wake next.
func (s *Service) pass(ctx context.Context) time.Time {
	now := s.clock.Now()
	if s.from.IsZero() {
		from, err := s.startingPoint(ctx, now)
		if err != nil {
			s.fail(ctx, "read the scheduler cursor", err)
			return now.Add(s.cfg.RetryDelay)
		}
		s.from = from
	}
	to := now.Add(time.Nanosecond) // events due at now are due
	for _, e := range Compute(s.p, s.from, to) {
		if s.stopping() {
			s.from = e.Due
			return now
		}
		var err error
		if now.Sub(e.Due) > s.p.CatchUp {
			err = s.skip(ctx, e, now)
		} else {
			err = s.fire(ctx, e, now)
		}
		if err != nil {
			s.fail(ctx, e.ID, err)
			s.from = e.Due // retried from here; what was settled before is found settled
			return now.Add(s.cfg.RetryDelay)
		}
	}
	s.from = to
	s.recheck(ctx, now)
	s.advanceCursor(ctx, to)
	next := NextDue(s.p, now)
	for _, pc := range s.pending {
		if next.IsZero() || pc.at.Before(next) {
			next = pc.at
		}
	}
	if next.IsZero() || next.After(now.Add(s.cfg.MaxSleep)) {
		next = now.Add(s.cfg.MaxSleep)
	}
	return next
}

func (s *Service) fail(ctx context.Context, what string, err error) {
	s.errs.Add(1)
	s.m.errors.Add(ctx, 1)
	s.log.Error("scheduler error; retrying", "what", what, "err", err, "retry_in", s.cfg.RetryDelay)
}

// Records: the value stored under an event's id.
const (
	stateClaimed   = "claimed"   // a replica is publishing it
	statePublished = "published" // it is on the stream
	stateSkipped   = "skipped"   // it was due longer ago than the catch-up window; never fired
)

type record struct {
	State   string    `json:"state"`
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
	Due     time.Time `json:"due"`
}

func (s *Service) record(state string, e Event, now time.Time) []byte {
	b, _ := json.Marshal(record{State: state, Replica: s.cfg.Replica, At: now.UTC(), Due: e.Due.UTC()})
	return b
}

// cursorKey holds the replicas' cursor, so a replica coming back after every replica was down
// knows since when events were missed.
func (s *Service) cursorKey() string { return "cursor." + s.p.Tenant }

// cursor is the value under cursorKey.
type cursor struct {
	// Origin is when the first replica for the tenant ever started: nothing due before it fires.
	Origin time.Time `json:"origin"`
	// Settled is the end of the window the replicas have settled (fired or skipped).
	Settled time.Time `json:"settled"`
}

func (s *Service) readCursor(ctx context.Context) (cursor, uint64, error) {
	entry, err := s.kv.Get(ctx, s.cursorKey())
	if err != nil {
		return cursor{}, 0, err
	}
	var c cursor
	if err := json.Unmarshal(entry.Value(), &c); err != nil {
		return cursor{}, 0, fmt.Errorf("cursor %q: %w", entry.Value(), err)
	}
	return c, entry.Revision(), nil
}

// startingPoint returns where a starting replica begins: the catch-up window before now (to
// take over claims a dead replica left), or the cursor when it is older (everything between
// it and the window is then recorded as skipped), but never before the first start ever.
func (s *Service) startingPoint(ctx context.Context, now time.Time) (time.Time, error) {
	c, _, err := s.readCursor(ctx)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		first, _ := json.Marshal(cursor{Origin: now.UTC(), Settled: now.UTC()})
		if _, err := s.kv.Create(ctx, s.cursorKey(), first); err == nil {
			s.log.Info("first start for this tenant: events due before now are not fired", "now", now)
			return now, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return time.Time{}, err
		}
		c, _, err = s.readCursor(ctx) // another replica started first
	}
	if err != nil {
		return time.Time{}, err
	}
	from := now.Add(-s.p.CatchUp)
	if c.Settled.Before(from) {
		s.log.Warn("no scheduler ran since the cursor; events due before the catch-up window will be recorded as skipped",
			"cursor", c.Settled, "catch_up", s.p.CatchUp)
		from = c.Settled
	}
	if from.Before(c.Origin) {
		from = c.Origin
	}
	return from, nil
}

// advanceCursor moves the settled end of the cursor forward to to; it never moves back. Best
// effort: a replica that fails here only makes a later start look further back.
func (s *Service) advanceCursor(ctx context.Context, to time.Time) {
	for range 3 {
		c, rev, err := s.readCursor(ctx)
		if err != nil {
			s.log.Warn("read the cursor", "err", err)
			return
		}
		if !to.After(c.Settled) {
			return
		}
		c.Settled = to.UTC()
		val, _ := json.Marshal(c)
		if _, err = s.kv.Update(ctx, s.cursorKey(), val, rev); err == nil {
			return
		}
		if !conflict(err) {
			s.log.Warn("advance the cursor", "err", err)
			return
		}
	}
}

func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// fire claims e (the first replica to create its record wins) and publishes it.
func (s *Service) fire(ctx context.Context, e Event, now time.Time) error {
	rev, err := s.kv.Create(ctx, e.ID, s.record(stateClaimed, e, now))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return s.inspect(ctx, e, now)
	}
	if err != nil {
		return fmt.Errorf("claim %s: %w", e.ID, err)
	}
	return s.publish(ctx, e, rev, now)
}

// skip records e as skipped, unless a replica already fired or skipped it.
func (s *Service) skip(ctx context.Context, e Event, now time.Time) error {
	_, err := s.kv.Create(ctx, e.ID, s.record(stateSkipped, e, now))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record %s as skipped: %w", e.ID, err)
	}
	s.skipped.Add(1)
	s.m.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", e.Kind), attribute.String("class", e.Class)))
	s.log.Warn("event too old to fire: skipped", "id", e.ID, "kind", e.Kind, "class", e.Class, "name", e.Name,
		"due", e.Due, "late", now.Sub(e.Due), "catch_up", s.p.CatchUp)
	return nil
}

// inspect looks at the record of an event another replica (or this one, before a failure)
// created: settled, in progress, or a claim to take over.
func (s *Service) inspect(ctx context.Context, e Event, now time.Time) error {
	entry, err := s.kv.Get(ctx, e.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("record %s vanished; retrying", e.ID)
	}
	if err != nil {
		return fmt.Errorf("read record %s: %w", e.ID, err)
	}
	var rec record
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		s.log.Error("unreadable scheduler record; treating the event as settled", "id", e.ID, "err", err)
		delete(s.pending, e.ID)
		return nil
	}
	if rec.State != stateClaimed {
		delete(s.pending, e.ID)
		return nil
	}
	own := rec.Replica == s.cfg.Replica
	if !own && now.Sub(rec.At) < s.cfg.Lease {
		s.pending[e.ID] = pendingClaim{event: e, at: rec.At.Add(s.cfg.Lease)}
		return nil
	}
	delete(s.pending, e.ID)
	state := stateClaimed
	if now.Sub(e.Due) > s.p.CatchUp {
		state = stateSkipped // abandoned, and now too old to fire
	}
	rev, err := s.kv.Update(ctx, e.ID, s.record(state, e, now), entry.Revision())
	if conflict(err) {
		// Another replica moved first; look again after a lease.
		s.pending[e.ID] = pendingClaim{event: e, at: now.Add(s.cfg.Lease)}
		return nil
	}
	if err != nil {
		return fmt.Errorf("take over %s: %w", e.ID, err)
	}
	if !own {
		s.takenOver.Add(1)
		s.m.takeovers.Add(ctx, 1)
		s.log.Warn("took over a stale claim", "id", e.ID, "claimed_by", rec.Replica, "claimed_at", rec.At)
	}
	if state == stateSkipped {
		s.skipped.Add(1)
		s.m.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", e.Kind), attribute.String("class", e.Class)))
		s.log.Warn("claimed event never published and now too old to fire: skipped", "id", e.ID, "due", e.Due)
		return nil
	}
	return s.publish(ctx, e, rev, now)
}

// recheck looks again at other replicas' claims whose lease may have run out.
func (s *Service) recheck(ctx context.Context, now time.Time) {
	var due []pendingClaim
	for _, pc := range s.pending {
		if !pc.at.After(now) {
			due = append(due, pc)
		}
	}
	slices.SortFunc(due, func(a, b pendingClaim) int { return a.at.Compare(b.at) })
	for _, pc := range due {
		if err := s.inspect(ctx, pc.event, now); err != nil {
			s.fail(ctx, pc.event.ID, err)
			s.pending[pc.event.ID] = pendingClaim{event: pc.event, at: now.Add(s.cfg.RetryDelay)}
		}
	}
}

// publish sends e, which this replica has claimed at revision rev, and records it published.
// On an error the claim stays this replica's: the retried pass publishes again with the same id
// (a duplicate if the first attempt did arrive) and records it then.
func (s *Service) publish(ctx context.Context, e Event, rev uint64, now time.Time) error {
	meta := &custosv1.Meta{EventId: e.ID, Time: timestamppb.New(now), Tenant: s.p.Tenant, DataClass: e.Class}
	var ack *jetstream.PubAck
	var err error
	switch e.Kind {
	case KindTick, KindDrill:
		// A drill trigger is a tick with method "drill" (docs/events.md): no new event type.
		ack, err = s.prod.PublishScheduleTick(ctx, &custosv1.ScheduleTick{
			Meta: meta, Schedule: e.Name, Method: e.Method, ScheduledFor: timestamppb.New(e.Due)})
	case KindDeadline:
		ack, err = s.prod.PublishComplianceDeadline(ctx, &custosv1.ComplianceDeadline{
			Meta: meta, Deadline: e.Name, Due: timestamppb.New(e.Due)})
	default:
		return fmt.Errorf("unknown event kind %q", e.Kind)
	}
	if err != nil {
		return fmt.Errorf("publish %s: %w", e.ID, err)
	}
	if _, err := s.kv.Update(ctx, e.ID, s.record(statePublished, e, now), rev); err != nil && !conflict(err) {
		return fmt.Errorf("record %s as published: %w", e.ID, err)
	}
	if ack.Duplicate {
		s.duplicates.Add(1)
	} else {
		s.fired.Add(1)
		s.m.fired.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", e.Kind), attribute.String("class", e.Class), attribute.String("schedule", e.Name)))
		s.m.lateness.Record(ctx, now.Sub(e.Due).Seconds(), metric.WithAttributes(attribute.String("kind", e.Kind)))
	}
	s.log.Info("fired", "id", e.ID, "kind", e.Kind, "class", e.Class, "name", e.Name, "method", e.Method,
		"due", e.Due, "late", now.Sub(e.Due), "duplicate", ack.Duplicate, "seq", ack.Sequence)
	return nil
}

// bucketConfig is the configuration of the scheduler's record bucket.
func bucketConfig(bucket string, ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Custos scheduler: one record per tick or deadline fired or skipped (docs/policy.md)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// DefaultBucketConfig is the record bucket a scheduler of policy p uses with the default
// settings, for `custos setup` to create before schedulers that may only bind to it start.
func DefaultBucketConfig(p *policy.Policy) jetstream.KeyValueConfig {
	return bucketConfig(DefaultBucket, max(DefaultRecordTTL, 2*p.CatchUp), 1)
}
