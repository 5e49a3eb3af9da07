// Package retention expires packs the policy no longer asks to keep.
//
// Per data class, a Sweeper orders the class's indexed packs by their newest event and keeps a
// pack when any rule keeps it (docs/policy.md, "Retention sweeping"):
//
//   - keep_last N: the N newest packs;
//   - daily, weekly, monthly, yearly N: the newest pack of each of the N newest days (ISO weeks,
//     months, years), in the class's time zone, that have a pack;
//   - min retention: every pack written less than retention.min ago;
//   - the newest pack of the class, and the newest one some target holds;
//   - every pack holding the latest item of some customer of the class (from the catalog's
//     customer entries);
//   - every pack of a class the policy does not name, and every pack whose id is malformed.
//
// Every other pack is deleted: its pack object from every target, then its manifest, then its
// index entries (customer entries, then the pack entry). A target answering target.ErrLocked
// (object lock, legal hold) keeps the pack; it stays indexed and is reported.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Index is the part of the catalog the sweeper reads and prunes; *catalog.Index implements it.
type Index interface {
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
	CustomerRecords(ctx context.Context) ([]catalog.CustomerRecord, error)
	Remove(ctx context.Context, id string) error
	RemoveTargets(ctx context.Context, id string, targetNames ...string) error
}

var _ Index = (*catalog.Index)(nil)

// Snapshots lists committed snapshots; *snapshot.Store implements it.
type Snapshots interface {
	List(ctx context.Context, class string) ([]snapshot.Snapshot, error)
}

// Config configures a Sweeper. Index, Policy and Targets are required.
type Config struct {
	Index  Index
	Policy *policy.Policy
	// Targets are every target packs may be in, matched to PackRecord.Targets by Name(). A pack
	// is deleted from each of them (absent is fine), so a copy a repair wrote but did not index
	// yet goes too.
	Targets []target.Target
	// Snapshots, when set, lists the committed snapshots read from sources: a pack holding an
	// item that any of them lists is kept, since an incremental chain restores through its full
	// snapshot's items. (Snapshots themselves are kept until snapshot retention exists.)
	Snapshots Snapshots
	// Audit, when set, receives one retention_expiry entry per class per sweep that deleted
	// packs of it (docs/audit.md); *audit.Log implements it.
	Audit Appender
	// Logger, Clock and MeterProvider default to a discarding logger, time.Now and the global
	// meter provider. Clock gives the time when Plan or Sweep is called with a zero time.
	Logger        *slog.Logger
	Clock         func() time.Time
	MeterProvider metric.MeterProvider
}

// Appender appends audit entries; *audit.Log implements it.
type Appender interface {
	Append(ctx context.Context, e audit.Entry) error
}

var _ Appender = (*audit.Log)(nil)

// OutcomeExpired is the outcome of retention_expiry entries.
const OutcomeExpired = "expired"

// Sweeper plans and carries out retention. It holds no state between calls: several may run,
// as every step is idempotent.
type Sweeper struct {
	cfg     Config
	targets map[string]target.Target
	packs   metric.Int64Counter
}

// New validates cfg and returns a Sweeper.
func New(cfg Config) (*Sweeper, error) {
	if cfg.Index == nil || cfg.Policy == nil || len(cfg.Targets) == 0 {
		return nil, errors.New("retention: Index, Policy and Targets are required")
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
	s := &Sweeper{cfg: cfg, targets: map[string]target.Target{}}
	for _, t := range cfg.Targets {
		s.targets[t.Name()] = t
	}
	var err error
	s.packs, err = cfg.MeterProvider.Meter("github.com/custos-dev/custos/pkg/retention").Int64Counter(
		"custos.retention.packs",
		metric.WithDescription("Packs a retention sweep handled, by class and outcome (deleted, locked, failed)"),
		metric.WithUnit("{pack}"))
	if err != nil {
		return nil, fmt.Errorf("retention: metric: %w", err)
	}
	return s, nil
}

// Plan reads the index and returns a decision for every pack, with its reasons, changing
// nothing. A zero now means the Clock's time.
func (s *Sweeper) Plan(ctx context.Context, now time.Time) ([]Decision, error) {
	if now.IsZero() {
		now = s.cfg.Clock()
	}
	packs, err := s.cfg.Index.Packs(ctx)
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	customers, err := s.cfg.Index.CustomerRecords(ctx)
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	protected := map[string]string{}
	if s.cfg.Snapshots != nil {
		snaps, err := s.cfg.Snapshots.List(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("retention: %w", err)
		}
		for _, sn := range snaps {
			for _, t := range sn.Tasks {
				for _, id := range t.Packs {
					if _, ok := protected[id]; !ok {
						protected[id] = fmt.Sprintf("listed by snapshot %s", sn.ID)
					}
				}
			}
		}
	}
	return decide(s.cfg.Policy, packs, customers, protected, now), nil
}

// Report is the result of a sweep.
type Report struct {
	Decisions []Decision
	Kept      int
	Deleted   int // or, in a dry run, would be deleted
	Locked    int
	Failed    int
	DryRun    bool
	// AuditErr is why the sweep's retention_expiry entries were not all appended (the packs are
	// deleted all the same); nil when they were, or when there was nothing to record.
	AuditErr error
}

// Err joins the errors of failed deletions.
func (r Report) Err() error {
	var errs []error
	for _, d := range r.Decisions {
		if d.Err != nil {
			errs = append(errs, d.Err)
		}
	}
	return errors.Join(errs...)
}

// Sweep plans, then deletes every pack the plan does not keep, unless dryRun. A pack that
// fails to delete (locked, a target down) is reported and stays indexed; the sweep goes on with
// the others. The error is non-nil only when the plan could not be made or ctx ended.
func (s *Sweeper) Sweep(ctx context.Context, now time.Time, dryRun bool) (Report, error) {
	ds, err := s.Plan(ctx, now)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Decisions: ds, DryRun: dryRun}
	for i := range ds {
		d := &ds[i]
		switch {
		case d.Keep:
			d.Outcome = OutcomeKept
			rep.Kept++
			continue
		case dryRun:
			d.Outcome = OutcomeWouldDelete
			rep.Deleted++
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		s.delete(ctx, d)
		switch d.Outcome {
		case OutcomeDeleted:
			rep.Deleted++
			s.cfg.Logger.Info("pack expired", "pack", d.Pack.Pack, "class", d.Pack.Class,
				"newest_event", d.Pack.NewestEvent)
		case OutcomeLocked:
			rep.Locked++
			s.cfg.Logger.Warn("expired pack is locked: kept", "pack", d.Pack.Pack, "class", d.Pack.Class,
				"locked_on", d.Locked)
		default:
			rep.Failed++
			s.cfg.Logger.Warn("expired pack not deleted", "pack", d.Pack.Pack, "class", d.Pack.Class, "err", d.Err)
		}
		s.packs.Add(ctx, 1, metric.WithAttributes(attribute.String("custos.class", d.Pack.Class),
			attribute.String("outcome", string(d.Outcome))))
	}
	rep.AuditErr = s.audit(ctx, ds)
	return rep, nil
}

// audit appends one retention_expiry entry per class of which packs were deleted, with how
// many. An entry that cannot be appended is logged with its figures and reported.
func (s *Sweeper) audit(ctx context.Context, ds []Decision) error {
	if s.cfg.Audit == nil {
		return nil
	}
	expired := map[string]int64{}
	for _, d := range ds {
		if d.Outcome == OutcomeDeleted {
			expired[d.Pack.Class]++
		}
	}
	classes := make([]string, 0, len(expired))
	for c := range expired {
		classes = append(classes, c)
	}
	slices.Sort(classes)
	var errs []error
	for _, class := range classes {
		e := audit.Entry{Time: s.cfg.Clock(), Kind: audit.KindRetentionExpiry, Class: class, Count: expired[class],
			Reason: "packs expired by the retention policy", Outcome: OutcomeExpired}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
		err := s.cfg.Audit.Append(actx, e)
		cancel()
		if err != nil {
			s.cfg.Logger.Error("retention expiry not recorded in the audit log", "class", class, "packs", expired[class], "err", err)
			errs = append(errs, fmt.Errorf("class %s: %w", class, err))
		}
	}
	return errors.Join(errs...)
}

// auditTimeout bounds one audit append.
const auditTimeout = 10 * time.Second

// delete removes one pack: the pack object from every target, then the manifest from every
// target the pack object is gone from, then the index entries when every copy is gone. A
// target that lost both objects but is not the last one is taken out of the pack's index
// entry, so the index never names a target that no longer holds the pack.
func (s *Sweeper) delete(ctx context.Context, d *Decision) {
	id := d.Pack.Pack
	var errs []error
	names := make([]string, 0, len(s.targets))
	for n := range s.targets {
		names = append(names, n)
	}
	for _, n := range d.Pack.Targets {
		if _, ok := s.targets[n]; !ok {
			errs = append(errs, fmt.Errorf("delete pack %s from %s: target not configured", id, n))
		}
	}
	if len(errs) > 0 { // the deletion could not be completed: touch no copy
		d.Outcome, d.Err = OutcomeFailed, fmt.Errorf("retention: %w", errors.Join(errs...))
		return
	}
	slices.Sort(names)
	var gone []string // targets the pack object is no longer in
	for _, n := range names {
		err := s.targets[n].Delete(ctx, repository.PackName(id))
		switch {
		case err == nil || errors.Is(err, target.ErrNotFound):
			gone = append(gone, n)
		case errors.Is(err, target.ErrLocked):
			d.Locked = append(d.Locked, n)
		default:
			errs = append(errs, fmt.Errorf("delete pack %s from %s: %w", id, n, err))
		}
	}
	var cleared []string // targets holding neither object
	for _, n := range gone {
		err := s.targets[n].Delete(ctx, repository.ManifestName(id))
		switch {
		case err == nil || errors.Is(err, target.ErrNotFound):
			cleared = append(cleared, n)
		case errors.Is(err, target.ErrLocked):
			d.Locked = append(d.Locked, n)
		default:
			errs = append(errs, fmt.Errorf("delete manifest %s from %s: %w", id, n, err))
		}
	}
	if len(d.Locked) == 0 && len(errs) == 0 {
		if err := s.cfg.Index.Remove(ctx, id); err != nil {
			d.Outcome, d.Err = OutcomeFailed, fmt.Errorf("retention: %w", err)
			return
		}
		d.Outcome = OutcomeDeleted
		return
	}
	if err := s.cfg.Index.RemoveTargets(ctx, id, cleared...); err != nil && !errors.Is(err, catalog.ErrNotFound) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		d.Outcome, d.Err = OutcomeFailed, fmt.Errorf("retention: %w", errors.Join(errs...))
		return
	}
	slices.Sort(d.Locked)
	d.Locked = slices.Compact(d.Locked)
	d.Outcome = OutcomeLocked
}
