// Package drill runs restore drills (seed 002 3.4: regular testing and validation of backups, at
// least quarterly). A drill of a data class restores a sample of the class's items from each of
// the class's targets in turn, from that target alone, into a scratch directory it removes
// afterwards; verifies every item against its recorded checksum and authenticates it; measures
// the wall time; extrapolates it to the class's whole stored size; and compares the estimate with
// the class's RTO. Each target's result is an audit entry (kind drill) and metrics; a failed
// drill raises an alert. docs/drills.md describes drills.
package drill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
)

// Named errors, matched with errors.Is. They mean a drill could not be run at all; a drill that
// ran and failed is a Result with OutcomeFailed, not an error.
var (
	// ErrUnknownClass: the policy has no such class, or no target is configured for it.
	ErrUnknownClass = errors.New("drill: unknown data class")
	// ErrUnknownTarget: a target asked for is not one of the class's targets.
	ErrUnknownTarget = errors.New("drill: not a target of the class")
)

// Metric names (OpenTelemetry); Prometheus shows them as custos_drill_runs_total,
// custos_drill_estimated_seconds, custos_drill_last_passed and custos_alerts_total.
const (
	MetricRuns       = "custos.drill.runs"
	MetricEstimated  = "custos.drill.estimated"
	MetricLastPassed = "custos.drill.last_passed"
	MetricAlerts     = "custos.alerts"
	// AlertKind is the kind attribute of a failed drill's alert.
	AlertKind = "drill_failed"
)

// Catalog is the part of the index a drill reads; *catalog.Index implements it.
type Catalog interface {
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
}

// Auditor appends audit entries; *audit.Log implements it.
type Auditor interface {
	Append(ctx context.Context, e audit.Entry) error
}

var (
	_ Catalog = (*catalog.Index)(nil)
	_ Auditor = (*audit.Log)(nil)
)

// AlertFunc is told of every failed drill, after the log line and the alert counter: the place
// for a webhook or pager notifier. It must not block for long.
type AlertFunc func(ctx context.Context, r Result)

// Config configures a Driller. Policy, Index, Targets, Keys, Pseudonyms and Audit are required.
type Config struct {
	// Policy gives each class's RTO and drill sample.
	Policy *policy.Policy
	Index  Catalog
	// Targets are the targets each class is written to, by class, in the order drills visit
	// them (the runtime configuration's class targets).
	Targets map[string][]target.Reader
	// Keys gives customers' data keys (Lookup only: a drill never creates a key).
	Keys keys.Store
	// Pseudonyms is the key file's keyring: the pseudonymizer, and the KMS that opens catalog
	// objects.
	Pseudonyms keys.Pseudonymizer
	Audit      Auditor
	// ScratchDir is where each drill makes (and removes) its scratch directory. Default
	// os.TempDir().
	ScratchDir string
	// Alert, when set, is called for every failed drill; Resolve for every passed one, so a
	// notifier that tells only of changes can close the alert the last failure opened.
	Alert, Resolve AlertFunc
	// Logger, Clock and MeterProvider default to a discarding logger, time.Now and the global
	// meter provider. Rand chooses the sample; default seeded from the clock.
	Logger        *slog.Logger
	Clock         func() time.Time
	MeterProvider metric.MeterProvider
	Rand          *rand.Rand
}

// Driller runs drills. It is safe for one Run at a time.
type Driller struct {
	cfg Config
	kms keys.KMS

	runs       metric.Int64Counter
	estimated  metric.Float64Gauge
	lastPassed metric.Int64Gauge
	alerts     metric.Int64Counter
}

// New checks cfg and returns a Driller.
func New(cfg Config) (*Driller, error) {
	if cfg.Policy == nil || cfg.Index == nil || cfg.Targets == nil || cfg.Keys == nil || cfg.Pseudonyms == nil || cfg.Audit == nil {
		return nil, errors.New("drill: policy, index, targets, key store, pseudonymizer and audit log are required")
	}
	kms, ok := cfg.Pseudonyms.(keys.KMS)
	if !ok {
		return nil, errors.New("drill: the pseudonymizer is not the key file's keyring (no KMS to open catalog objects)")
	}
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = os.TempDir()
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
	if cfg.Rand == nil {
		seed := uint64(cfg.Clock().UnixNano())
		cfg.Rand = rand.New(rand.NewPCG(seed, seed>>1|1))
	}
	d := &Driller{cfg: cfg, kms: kms}
	meter := cfg.MeterProvider.Meter("github.com/custos-dev/custos/pkg/drill")
	var errs [4]error
	d.runs, errs[0] = meter.Int64Counter(MetricRuns, metric.WithUnit("{drill}"),
		metric.WithDescription("Restore drills run, by class, target and outcome (passed or failed)."))
	d.estimated, errs[1] = meter.Float64Gauge(MetricEstimated, metric.WithUnit("s"),
		metric.WithDescription("Estimated time to restore the whole class from the target, from the last drill's measured rate."))
	d.lastPassed, errs[2] = meter.Int64Gauge(MetricLastPassed, metric.WithUnit("{drill}"),
		metric.WithDescription("1 when the last drill of the class from the target passed, 0 when it failed."))
	d.alerts, errs[3] = meter.Int64Counter(MetricAlerts, metric.WithUnit("{alert}"),
		metric.WithDescription("Alerts raised, by kind and severity; a failed restore drill is drill_failed."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("drill: metrics: %w", err)
	}
	return d, nil
}

// Options say what one Run drills.
type Options struct {
	// Class is the data class to drill. Required.
	Class string
	// Targets limits the drill to these targets, by name ("fs:primary", or "primary"); default
	// every target of the class.
	Targets []string
	// Sample overrides the class's policy sample.
	Sample *policy.Sample
	// EventID is the id of the trigger that asked for the drill; each target's audit entry has
	// event id "<EventID>/<target>". Empty for a drill run by hand.
	EventID string
}

// Result is one target's drill.
type Result struct {
	Class  string
	Target string
	// Time is when the drill of the target started.
	Time    time.Time
	Outcome string // audit.OutcomePassed or audit.OutcomeFailed
	Reason  string // why it failed; empty when it passed
	Figures audit.Figures
	// Sample is the sample asked for; Packs how many packs the sampled items came from; Stored
	// the stored (encrypted) bytes of the sampled items, which the rate is measured on.
	Sample policy.Sample
	Packs  int
	Stored int64
	// Failures name what could not be read or did not verify, as the restore reported it.
	Failures []string
}

// Passed reports whether the drill passed.
func (r Result) Passed() bool { return r.Outcome == audit.OutcomePassed }

// Rate is the measured restore rate in stored bytes per second; 0 when nothing was measured.
func (r Result) Rate() float64 {
	if r.Figures.Seconds <= 0 {
		return 0
	}
	return float64(r.Stored) / r.Figures.Seconds
}

// Run drills one class from each of its targets in turn (or those opts names) and returns one
// Result per target. Every result is appended to the audit log and recorded in the metrics, and
// a failed one alerts. The error is about running the drill, not its outcome: an unknown class
// or target, an index that cannot be read, a cancelled context, an audit entry that could not
// be written (the results are returned all the same).
func (d *Driller) Run(ctx context.Context, opts Options) ([]Result, error) {
	c := d.cfg.Policy.Class(opts.Class)
	readers := d.cfg.Targets[opts.Class]
	if c == nil || len(readers) == 0 {
		return nil, fmt.Errorf("%w %q", ErrUnknownClass, opts.Class)
	}
	if len(opts.Targets) > 0 {
		var chosen []target.Reader
		for _, name := range opts.Targets {
			i := slices.IndexFunc(readers, func(r target.Reader) bool { return sameTarget(r.Name(), name) })
			if i < 0 {
				return nil, fmt.Errorf("%w %q: %q (its targets: %s)", ErrUnknownTarget, opts.Class, name, strings.Join(names(readers), ", "))
			}
			chosen = append(chosen, readers[i])
		}
		readers = chosen
	}
	sample := policy.Sample{Items: policy.DefaultDrillSample}
	if c.Drill != nil {
		sample = c.Drill.Sample
	}
	if opts.Sample != nil {
		sample = *opts.Sample
	}
	all, err := d.cfg.Index.Packs(ctx)
	if err != nil {
		return nil, fmt.Errorf("drill: read the index: %w", err)
	}
	var packs []catalog.PackRecord
	for _, p := range all {
		if p.Class == c.Name {
			packs = append(packs, p)
		}
	}
	var results []Result
	var errs []error
	for _, r := range readers {
		res, err := d.target(ctx, c, r, packs, sample)
		if err != nil {
			return results, err
		}
		if err := d.record(ctx, opts.EventID, res); err != nil {
			errs = append(errs, err)
		}
		results = append(results, res)
	}
	return results, errors.Join(errs...)
}

// sameTarget reports whether a target named full ("fs:primary") is the one name asks for: its
// full name, or the configuration's name after the kind.
func sameTarget(full, name string) bool {
	_, short, _ := strings.Cut(full, ":")
	return full == name || short == name
}

func names(rs []target.Reader) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name()
	}
	return out
}

// target drills one target. Only a cancelled context is an error.
func (d *Driller) target(ctx context.Context, c *policy.Class, r target.Reader, packs []catalog.PackRecord, sample policy.Sample) (Result, error) {
	start := d.cfg.Clock()
	res := Result{Class: c.Name, Target: r.Name(), Time: start, Sample: sample}
	res.Figures.RTOSeconds = c.RTO.Seconds()
	var held []catalog.PackRecord
	for _, p := range packs {
		res.Figures.ClassBytes += p.Size
		if slices.Contains(p.Targets, r.Name()) {
			held = append(held, p)
		}
	}
	fail := func(format string, args ...any) (Result, error) {
		res.Outcome, res.Reason = audit.OutcomeFailed, fmt.Sprintf(format, args...)
		res.Figures.Seconds = d.cfg.Clock().Sub(start).Seconds()
		return res, nil
	}
	switch {
	case len(packs) == 0:
		return fail("nothing to restore: the class has no committed backup")
	case len(held) == 0:
		return fail("the index names none of the class's %d packs as held by this target", len(packs))
	}

	// The sample: packs in random order, items at random within each, until the sample is full.
	// Manifests are read from this target alone, as a restore from it would.
	repo := repository.NewReader(repository.NewOpener(d.kms, d.cfg.Pseudonyms.Fingerprint(), r), r)
	total := 0
	for _, p := range held {
		total += p.Items
	}
	want := sample.Size(total)
	var recs []catalog.CustomerRecord
	picked := 0
	for _, i := range d.cfg.Rand.Perm(len(held)) {
		if picked >= want {
			break
		}
		m, err := repo.Manifest(ctx, held[i].Pack)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Failures = append(res.Failures, fmt.Sprintf("manifest of pack %s: %v", held[i].Pack, err))
			continue
		}
		items := slices.Clone(m.Items)
		d.cfg.Rand.Shuffle(len(items), func(a, b int) { items[a], items[b] = items[b], items[a] })
		items = items[:min(len(items), want-picked)]
		if len(items) == 0 {
			continue
		}
		picked += len(items)
		res.Packs++
		for _, e := range items {
			res.Stored += e.Length
		}
		recs = append(recs, catalog.CustomerRecord{Pack: m.Pack, Class: m.Class, Items: items})
	}

	scratch, err := os.MkdirTemp(d.cfg.ScratchDir, "custos-drill-")
	if err != nil {
		return fail("no scratch directory: %v", err)
	}
	defer os.RemoveAll(scratch)
	rs := &restore.Restorer{Targets: []target.Reader{r}, Keys: d.cfg.Keys, Repo: repo,
		Pseudonyms: d.cfg.Pseudonyms, Logger: d.cfg.Logger}
	rep, err := rs.Items(ctx, recs, restore.Options{Out: scratch})
	res.Figures.Seconds = d.cfg.Clock().Sub(start).Seconds()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res.Figures.Items, res.Figures.Bytes = int64(rep.Items), rep.Bytes
	res.Failures = append(res.Failures, rep.Failures...)
	if res.Stored > 0 {
		// The measured rate applied to the class's whole stored size.
		res.Figures.EstimatedSeconds = res.Figures.Seconds * float64(res.Figures.ClassBytes) / float64(res.Stored)
	}
	if err != nil {
		res.Failures = append(res.Failures, err.Error())
	}
	if len(res.Failures) > 0 {
		// Told apart after the timing, so the check does not distort it: an item whose stored
		// bytes differ from its digest is a checksum failure, anything else a read failure.
		bad, unreadable := d.verify(ctx, r, recs)
		res.Figures.ChecksumFailures = bad
		switch {
		case bad > 0 && unreadable > 0:
			return fail("%d of %d sampled items failed their checksum, %d could not be read", bad, picked, unreadable)
		case bad > 0:
			return fail("%d of %d sampled items failed their checksum", bad, picked)
		}
		return fail("the target could not be read: %d failure(s), first: %s", len(res.Failures), res.Failures[0])
	}
	if picked == 0 {
		return fail("nothing restored: the target's manifests of the class list no items")
	}
	if est := time.Duration(res.Figures.EstimatedSeconds * float64(time.Second)); est > c.RTO {
		return fail("estimated full restore %s exceeds the RTO %s (measured %s for %d of %d bytes)",
			est.Round(time.Second), policy.FormatDuration(c.RTO),
			time.Duration(res.Figures.Seconds*float64(time.Second)).Round(time.Millisecond), res.Stored, res.Figures.ClassBytes)
	}
	res.Outcome = audit.OutcomePassed
	return res, nil
}

// verify reads every sampled item's stored bytes from r again and compares them with the
// length and SHA-256 the manifest records.
func (d *Driller) verify(ctx context.Context, r target.Reader, recs []catalog.CustomerRecord) (bad, unreadable int64) {
	for _, rec := range recs {
		for _, e := range rec.Items {
			rc, err := r.GetRange(ctx, repository.PackName(rec.Pack), e.Offset, e.Length)
			if err != nil {
				unreadable++
				continue
			}
			h := sha256.New()
			n, err := io.Copy(h, rc)
			rc.Close()
			switch {
			case err != nil:
				unreadable++
			case n != e.Length || hex.EncodeToString(h.Sum(nil)) != e.SHA256:
				bad++
			}
		}
	}
	return bad, unreadable
}

// record writes a result to the audit log and the metrics, and alerts when it failed.
func (d *Driller) record(ctx context.Context, eventID string, res Result) error {
	ct := metric.WithAttributes(attribute.String("class", res.Class), attribute.String("target", res.Target))
	d.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("class", res.Class),
		attribute.String("target", res.Target), attribute.String("outcome", res.Outcome)))
	d.estimated.Record(ctx, res.Figures.EstimatedSeconds, ct)
	var passed int64
	if res.Passed() {
		passed = 1
	}
	d.lastPassed.Record(ctx, passed, ct)
	log := d.cfg.Logger.With("class", res.Class, "target", res.Target, "items", res.Figures.Items,
		"seconds", res.Figures.Seconds, "estimated_seconds", res.Figures.EstimatedSeconds, "rto_seconds", res.Figures.RTOSeconds)
	if res.Passed() {
		log.Info("restore drill passed")
		if d.cfg.Resolve != nil {
			d.cfg.Resolve(ctx, res)
		}
	} else {
		log.Error("ALERT: restore drill failed", "reason", res.Reason)
		d.alerts.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", AlertKind), attribute.String("severity", "high")))
		if d.cfg.Alert != nil {
			d.cfg.Alert(ctx, res)
		}
	}
	e := audit.Entry{Time: d.cfg.Clock(), Kind: audit.KindDrill, Class: res.Class, Targets: []string{res.Target},
		Outcome: res.Outcome, Reason: res.Reason, Count: res.Figures.Items, Bytes: res.Figures.Bytes}
	if eventID != "" {
		e.EventID = eventID + "/" + res.Target
	}
	fig := res.Figures
	e.Figures = &fig
	if err := d.cfg.Audit.Append(ctx, e); err != nil {
		return fmt.Errorf("drill: audit entry of %s from %s: %w", res.Class, res.Target, err)
	}
	return nil
}
