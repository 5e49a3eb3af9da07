// Package scrub runs in every worker the check custos verify --read-data makes, a slice of the
// packs at a time under a byte-rate limit, and repairs what it finds (docs/design.md section
// 11, "Verify and scrub"). Over successive passes it reads every replica of every pack, so rot
// in a target that nobody restores from is found while other replicas are still good.
package scrub

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/repository"
)

// Config configures a Scrubber.
type Config struct {
	// Verify says what to check and how to repair (Index, Classes and Opener are required).
	// The scrubber sets ReadData, Subset, SubsetOnly, MaxBytesPerSecond, Clock and Sleep.
	Verify repository.VerifyConfig
	// Interval between passes (default 1h).
	Interval time.Duration
	// Rate bounds the bytes read per second (default 8 MiB/s), so a pass reads at most about
	// Rate × Interval bytes.
	Rate int64
	// Slices is how many passes a full cycle over the packs takes. 0: chosen at each pass so
	// that one slice holds about Rate × Interval bytes of replicas.
	Slices int
	// First is the slice of the first pass (1-based); 0 picks one at random, so that workers
	// started together scrub different slices.
	First  int
	Logger *slog.Logger
	Clock  func() time.Time
	// Sleep waits for the rate limit (default: a timer).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Result is the outcome of one pass.
type Result struct {
	Slice  repository.Subset
	Report repository.VerifyReport
}

// Scrubber verifies one slice of the packs each Interval. Several workers may scrub at once:
// repairs are create-only and checked, so two repairing one replica do no harm.
type Scrubber struct {
	cfg  Config
	loop periodic.Loop

	mu   sync.Mutex
	next int // slice of the next pass, 1-based
}

// New validates cfg and returns a stopped Scrubber.
func New(cfg Config) (*Scrubber, error) {
	if cfg.Verify.Index == nil || cfg.Verify.Opener == nil || len(cfg.Verify.Classes) == 0 {
		return nil, errors.New("scrub: Verify.Index, Verify.Opener and Verify.Classes are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 8 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Scrubber{cfg: cfg, next: cfg.First}
	if s.next <= 0 {
		s.next = rand.IntN(1<<20) + 1 // reduced modulo the slice count at each pass
	}
	s.loop = periodic.Loop{Interval: cfg.Interval,
		Run: func(ctx context.Context) error {
			_, err := s.RunOnce(ctx)
			return err
		},
		OnError: func(err error) { s.cfg.Logger.Warn("scrub pass failed", "err", err) }}
	return s, nil
}

// Start runs a pass at once and then every Interval until Stop. A no-op when already started.
func (s *Scrubber) Start(ctx context.Context) error { return s.loop.Start(ctx) }

// Stop ends the loop and waits for the pass in progress. Safe twice and before Start.
func (s *Scrubber) Stop(ctx context.Context) error { return s.loop.Stop(ctx) }

// RunOnce verifies the next slice with ReadData and repairs it, then moves to the following
// slice.
func (s *Scrubber) RunOnce(ctx context.Context) (Result, error) {
	recs, err := s.cfg.Verify.Index.Packs(ctx)
	if err != nil {
		return Result{}, err
	}
	t := s.cfg.Slices
	if t <= 0 {
		t = s.slices(recs)
	}
	s.mu.Lock()
	k := (s.next-1)%t + 1
	s.next = k%t + 1
	s.mu.Unlock()

	vc := s.cfg.Verify
	vc.Index = packList(recs)
	vc.ReadData, vc.Subset, vc.SubsetOnly = true, repository.Subset{N: k, T: t}, true
	vc.MaxBytesPerSecond, vc.Clock, vc.Sleep = s.cfg.Rate, s.cfg.Clock, s.cfg.Sleep
	res := Result{Slice: vc.Subset}
	res.Report, err = repository.Verify(ctx, vc)
	if err != nil {
		return res, err
	}
	s.log(res)
	return res, nil
}

// slices is how many slices make each about Rate × Interval bytes of replicas.
func (s *Scrubber) slices(recs []catalog.PackRecord) int {
	var total float64
	for _, r := range recs {
		n := len(s.cfg.Verify.Classes[r.Class])
		if n == 0 {
			n = len(r.Targets)
		}
		total += float64(r.Size) * float64(n)
	}
	budget := float64(s.cfg.Rate) * s.cfg.Interval.Seconds()
	t := int(total/budget) + 1
	return min(max(t, 1), 1<<20)
}

func (s *Scrubber) log(res Result) {
	rep := res.Report
	log := s.cfg.Logger
	log.Info("scrub pass", "slice", res.Slice.String(), "packs", rep.Packs, "replicas", rep.Replicas,
		"bytes_read", rep.BytesRead, "problems", len(rep.Problems), "repaired", rep.Repaired,
		"unrecoverable", len(rep.Unrecoverable), "took", rep.Elapsed.Round(time.Millisecond))
	unreachable := map[string]int{} // one line per target that did not answer, not one per object
	for _, p := range rep.Problems {
		switch {
		case p.Kind == repository.ProblemUnreachable:
			unreachable[p.Target]++
		case p.Repaired:
			log.Warn("scrub repaired a replica", "pack", p.Pack, "target", p.Target, "object", p.Object, "kind", p.Kind, "err", p.Err)
		default:
			log.Error("scrub found a replica it could not repair", "pack", p.Pack, "target", p.Target, "object", p.Object,
				"kind", p.Kind, "err", p.Err, "repair_err", p.RepairErr)
		}
	}
	for t, n := range unreachable {
		log.Warn("scrub could not reach a target", "target", t, "objects", n)
	}
	for _, u := range rep.Unrecoverable {
		log.Error("scrub found an object with no good replica", "pack", u.Pack, "object", u.Object, "reason", u.Reason)
	}
}

// packList serves the index entries listed at the start of a pass.
type packList []catalog.PackRecord

func (l packList) Packs(context.Context) ([]catalog.PackRecord, error) { return l, nil }
