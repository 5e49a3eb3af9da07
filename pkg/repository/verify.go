package repository

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/target"
)

// PackLister is the part of the index Verify reads; catalog.Index and Memory implement it.
type PackLister interface {
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
}

// TargetAdder is the part of the index a repair updates; catalog.Index implements it.
type TargetAdder interface {
	AddTarget(ctx context.Context, pack, targetName string) error
}

// Subset selects the packs whose id, read as a 128-bit big-endian number, is congruent to N-1
// modulo T (docs/design.md section 11, "Verify and scrub"): the subsets 1/T … T/T split the
// packs into T disjoint parts. The zero Subset selects every pack.
type Subset struct{ N, T int }

// maxSubsets bounds T, so that the remainder is computed in a uint64 without overflow.
const maxSubsets = 1 << 24

// ParseSubset reads "n/t" with 1 <= n <= t.
func ParseSubset(s string) (Subset, error) {
	a, b, ok := strings.Cut(s, "/")
	n, errN := strconv.Atoi(a)
	t, errT := strconv.Atoi(b)
	if !ok || errN != nil || errT != nil || t < 1 || t > maxSubsets || n < 1 || n > t {
		return Subset{}, fmt.Errorf("subset %q: want n/t with 1 <= n <= t <= %d", s, maxSubsets)
	}
	return Subset{N: n, T: t}, nil
}

// String returns "n/t", or "all" for the zero Subset.
func (s Subset) String() string {
	if s.T == 0 {
		return "all"
	}
	return fmt.Sprintf("%d/%d", s.N, s.T)
}

// Contains reports whether the pack id falls in the subset. An id that is not hex is in no
// subset but the whole.
func (s Subset) Contains(id string) bool {
	if s.T <= 1 {
		return true
	}
	b, err := hex.DecodeString(id)
	if err != nil {
		return false
	}
	var r uint64
	t := uint64(s.T)
	for _, c := range b {
		r = (r<<8 | uint64(c)) % t
	}
	return int(r) == s.N-1
}

// ProblemKind says what is wrong with one replica.
type ProblemKind string

// Problem kinds.
const (
	// ProblemMissing: the target does not hold the object.
	ProblemMissing ProblemKind = "missing"
	// ProblemSize: the object's size is not the recorded one (an empty manifest, for manifests).
	ProblemSize ProblemKind = "size"
	// ProblemChecksum: the pack's SHA-256 is not the recorded one.
	ProblemChecksum ProblemKind = "checksum"
	// ProblemAuth: the pack has the recorded checksum but an item it holds does not
	// authenticate (or its data key cannot be found): every replica is equally bad.
	ProblemAuth ProblemKind = "auth"
	// ProblemManifest: the manifest does not authenticate or does not describe the pack the
	// index records.
	ProblemManifest ProblemKind = "manifest"
	// ProblemUnreachable: the target did not answer; nothing is known about the replica.
	ProblemUnreachable ProblemKind = "unreachable"
	// ProblemIndex: the index entry itself is unusable (malformed id or checksum, a class with
	// no configured target), or a repaired target could not be added to it.
	ProblemIndex ProblemKind = "index"
)

// ErrLockedInPlace is the RepairErr of a bad replica that is under retention or legal hold:
// it cannot be deleted, so it cannot be replaced.
var ErrLockedInPlace = errors.New("locked, not repairable in place")

// Problem is one bad replica (or a bad index entry) found by Verify, and what became of it.
type Problem struct {
	Pack   string
	Target string // Target.Name(); empty for ProblemIndex about the entry itself
	Object string // object name; empty for ProblemIndex
	Kind   ProblemKind
	Err    error // what was found
	// Repaired is set when the object was replaced by verified bytes and checked again.
	Repaired bool
	// Locked is set when the bad object is under retention or legal hold (RepairErr is then
	// ErrLockedInPlace).
	Locked bool
	// RepairErr says why a repair was not made or failed; nil with NoRepair.
	RepairErr error
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s %s: %s", p.Target, p.Object, p.Kind)
	if p.Target == "" {
		s = fmt.Sprintf("pack %s: %s", p.Pack, p.Kind)
	}
	if p.Err != nil {
		s += ": " + p.Err.Error()
	}
	return s
}

// Unrecoverable is an object of which no replica verifies: it cannot be repaired from the
// targets.
type Unrecoverable struct {
	Pack   string
	Object string
	Reason string
}

func (u Unrecoverable) String() string { return u.Object + ": " + u.Reason }

// VerifyReport says what Verify checked and found.
type VerifyReport struct {
	Packs         int   // packs checked
	ReadPacks     int   // packs whose replicas were downloaded and checked in full
	Replicas      int   // (pack, target) pairs checked
	BytesRead     int64 // every byte downloaded: manifests, packs, repair sources, checks after repair
	Problems      []Problem
	Repaired      int // problems repaired
	Indexed       int // targets added to index entries (they held good replicas the index did not list)
	Unrecoverable []Unrecoverable
	Elapsed       time.Duration
}

// Remaining counts the problems not repaired.
func (r VerifyReport) Remaining() int { return len(r.Problems) - r.Repaired }

// OK reports whether every problem was repaired and nothing is unrecoverable.
func (r VerifyReport) OK() bool { return r.Remaining() == 0 && len(r.Unrecoverable) == 0 }

// VerifyProgress is passed to VerifyConfig.Progress after each pack.
type VerifyProgress struct {
	Done, Total int
	BytesRead   int64
}

// VerifyConfig says what Verify checks and how it repairs.
type VerifyConfig struct {
	// Index lists the packs to check (required).
	Index PackLister
	// Catalog, when set, gets every target that holds a good replica (after a repair or not)
	// that the pack's index entry does not list. Nil leaves the index unchanged.
	Catalog TargetAdder
	// Classes gives the targets each class must be durable in (required).
	Classes map[string][]target.Target
	// Targets are every configured target: the ones an index entry names outside its class's
	// list serve as extra repair sources. Optional.
	Targets []target.Target
	// Opener opens manifests with the KMS (required).
	Opener *Opener
	// Keys gives customers' data keys to authenticate items. A customer the store marks
	// destroyed is checked by SHA-256 only; one it lacks is opened with the manifest's wrapped
	// key. Nil: every item is opened with the manifest's keys.
	Keys keys.Store
	// Class, when set, checks only that class.
	Class string
	// ReadData downloads every replica of the packs in Subset (all, for the zero Subset): the
	// pack's SHA-256, the manifest and every item are checked. Without it only Stat is used.
	ReadData bool
	Subset   Subset
	// SubsetOnly skips the packs outside Subset altogether (the scrub), instead of checking
	// them with Stat.
	SubsetOnly bool
	// NoRepair reports and changes nothing.
	NoRepair bool
	// PutOptions gives the retention of repaired objects of a class (nil: none). Verify sets
	// the SHA-256.
	PutOptions func(class string) target.PutOptions
	// MaxBytesPerSecond bounds the download rate (0: unlimited).
	MaxBytesPerSecond int64
	// Concurrency is the number of packs checked at once (default 4).
	Concurrency int
	// SpoolDir holds a pack copied from a good replica while it is written to bad ones
	// (default os.TempDir()).
	SpoolDir string
	// Clock and Sleep drive the rate limit (default time.Now and a timer).
	Clock func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Progress, when set, is called after each pack (serialised).
	Progress func(VerifyProgress)
}

// ClassTargets maps each class to its targets, given the Target.Name() values each class names
// (a name no target has is left out).
func ClassTargets(all []target.Target, classes map[string][]string) map[string][]target.Target {
	byName := map[string]target.Target{}
	for _, t := range all {
		byName[t.Name()] = t
	}
	out := make(map[string][]target.Target, len(classes))
	for c, names := range classes {
		for _, n := range names {
			if t, ok := byName[n]; ok {
				out[c] = append(out[c], t)
			}
		}
	}
	return out
}

// RetainOptions gives each class's repaired objects a retention of retain[class] from now: at
// least as long as the replica they replace still had.
func RetainOptions(retain map[string]time.Duration, now func() time.Time) func(string) target.PutOptions {
	if now == nil {
		now = time.Now
	}
	return func(class string) target.PutOptions {
		if r := retain[class]; r > 0 {
			return target.PutOptions{RetainUntil: now().Add(r)}
		}
		return target.PutOptions{}
	}
}

// Verify checks every pack the index names in every target of its class, following
// docs/design.md section 11 ("Verify and scrub"), and repairs what it can unless NoRepair:
// a bad replica is deleted and replaced, create-only, by the bytes of a replica that verifies,
// which are then checked again in place; the pack is written before its manifest. A pack or
// manifest with no good replica is Unrecoverable.
//
// Verify returns an error only when it cannot go on: the index cannot be listed, the key file
// is not the one the backups were written with, the key store fails, or ctx ends.
func Verify(ctx context.Context, cfg VerifyConfig) (VerifyReport, error) {
	if cfg.Index == nil || cfg.Opener == nil || len(cfg.Classes) == 0 {
		return VerifyReport{}, errors.New("verify: Index, Opener and Classes are required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.PutOptions == nil {
		cfg.PutOptions = func(string) target.PutOptions { return target.PutOptions{} }
	}
	codec, err := pack.NewCodec()
	if err != nil {
		return VerifyReport{}, err
	}
	defer codec.Close()
	v := &verifier{cfg: cfg, codec: codec, byName: map[string]target.Target{},
		limit: newRateLimiter(cfg.MaxBytesPerSecond, cfg.Clock, cfg.Sleep)}
	for _, ts := range cfg.Classes {
		for _, t := range ts {
			v.byName[t.Name()] = t
		}
	}
	for _, t := range cfg.Targets {
		v.byName[t.Name()] = t
	}
	return v.run(ctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type verifier struct {
	cfg    VerifyConfig
	codec  *pack.Codec
	byName map[string]target.Target
	limit  *rateLimiter
	bytes  atomic.Int64

	mu  sync.Mutex
	rep VerifyReport
}

func (v *verifier) run(ctx context.Context) (VerifyReport, error) {
	start := v.cfg.Clock()
	recs, err := v.cfg.Index.Packs(ctx)
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify: list packs: %w", err)
	}
	todo := recs[:0:0]
	for _, rec := range recs {
		if v.cfg.Class != "" && rec.Class != v.cfg.Class {
			continue
		}
		if v.cfg.SubsetOnly && !v.cfg.Subset.Contains(rec.Pack) {
			continue
		}
		todo = append(todo, rec)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan catalog.PackRecord)
	var wg sync.WaitGroup
	done := 0
	for range min(v.cfg.Concurrency, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range work {
				pv := &packVerify{v: v, rec: rec}
				if err := pv.run(ctx); err != nil {
					cancel(err)
					continue
				}
				v.mu.Lock()
				v.rep.Packs++
				if pv.read {
					v.rep.ReadPacks++
				}
				v.rep.Replicas += len(pv.replicas)
				for _, r := range pv.replicas {
					for _, p := range []*Problem{r.pack, r.man} {
						if p != nil {
							v.rep.Problems = append(v.rep.Problems, *p)
						}
					}
				}
				v.rep.Problems = append(v.rep.Problems, pv.index...)
				v.rep.Unrecoverable = append(v.rep.Unrecoverable, pv.lost...)
				v.rep.Indexed += pv.indexed
				done++
				if v.cfg.Progress != nil {
					v.cfg.Progress(VerifyProgress{Done: done, Total: len(todo), BytesRead: v.bytes.Load()})
				}
				v.mu.Unlock()
			}
		}()
	}
feed:
	for _, rec := range todo {
		select {
		case work <- rec:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return VerifyReport{}, err
	}
	rep := v.rep
	for _, p := range rep.Problems {
		if p.Repaired {
			rep.Repaired++
		}
	}
	sort.SliceStable(rep.Problems, func(i, j int) bool {
		a, b := rep.Problems[i], rep.Problems[j]
		if a.Pack != b.Pack {
			return a.Pack < b.Pack
		}
		if a.Target != b.Target {
			return a.Target < b.Target
		}
		return a.Object > b.Object // packs/ before manifests/: the write order
	})
	sort.Slice(rep.Unrecoverable, func(i, j int) bool { return rep.Unrecoverable[i].Object < rep.Unrecoverable[j].Object })
	rep.BytesRead = v.bytes.Load()
	rep.Elapsed = v.cfg.Clock().Sub(start)
	return rep, nil
}

// replicaState is what one target holds of one pack.
type replicaState struct {
	t         target.Target
	pack, man *Problem // nil: no problem found
}

// packVerify checks and repairs one pack.
type packVerify struct {
	v        *verifier
	rec      catalog.PackRecord
	sum      [32]byte
	read     bool
	replicas []*replicaState
	index    []Problem
	lost     []Unrecoverable
	indexed  int

	manifest      *pack.Manifest // a replica of the manifest that authenticates and matches the record
	manifestBytes []byte
	itemsBad      error // the recorded pack bytes hold an item that does not authenticate
}

func (p *packVerify) problem(r *replicaState, object string, kind ProblemKind, err error) *Problem {
	return &Problem{Pack: p.rec.Pack, Target: r.t.Name(), Object: object, Kind: kind, Err: err}
}

// classify turns a target error into a problem: missing, or unreachable.
func (p *packVerify) classify(r *replicaState, object string, err error) *Problem {
	if errors.Is(err, target.ErrNotFound) {
		return p.problem(r, object, ProblemMissing, nil)
	}
	return p.problem(r, object, ProblemUnreachable, err)
}

// fatal reports errors that stop the whole run.
func fatal(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, ErrKeyMismatch) || errors.Is(err, errKeyStore)
}

func (p *packVerify) run(ctx context.Context) error {
	rec := p.rec
	sum, err := hex.DecodeString(rec.SHA256)
	switch {
	case !pack.ValidID(rec.Pack):
		p.index = append(p.index, Problem{Pack: rec.Pack, Kind: ProblemIndex, Err: errors.New("malformed pack id")})
		return nil
	case err != nil || len(sum) != sha256.Size:
		p.index = append(p.index, Problem{Pack: rec.Pack, Kind: ProblemIndex, Err: errors.New("malformed checksum")})
		return nil
	}
	p.sum = [32]byte(sum)
	targets := p.v.cfg.Classes[rec.Class]
	if len(targets) == 0 { // a class no longer configured: check where the index says it is
		for _, n := range rec.Targets {
			if t, ok := p.v.byName[n]; ok {
				targets = append(targets, t)
			}
		}
	}
	if len(targets) == 0 {
		p.index = append(p.index, Problem{Pack: rec.Pack, Kind: ProblemIndex,
			Err: fmt.Errorf("class %q has no configured target", rec.Class)})
		return nil
	}
	for _, t := range targets {
		p.replicas = append(p.replicas, &replicaState{t: t})
	}
	p.stat(ctx)
	if p.v.cfg.ReadData && p.v.cfg.Subset.Contains(rec.Pack) {
		p.read = true
		if err := p.readManifests(ctx); err != nil {
			return err
		}
		if err := p.readPacks(ctx); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.repairPack(ctx); err != nil {
		return err
	}
	if err := p.repairManifest(ctx); err != nil {
		return err
	}
	p.updateIndex(ctx)
	return ctx.Err()
}

// stat is the structural check: both objects present, the pack with the recorded size and
// (where the target reports it) SHA-256, the manifest not empty.
func (p *packVerify) stat(ctx context.Context) {
	packName, manName := PackName(p.rec.Pack), ManifestName(p.rec.Pack)
	for _, r := range p.replicas {
		info, err := r.t.Stat(ctx, packName)
		switch {
		case err != nil:
			r.pack = p.classify(r, packName, err)
		case info.Size != p.rec.Size:
			r.pack = p.problem(r, packName, ProblemSize, fmt.Errorf("%d bytes, the index records %d", info.Size, p.rec.Size))
		case info.SHA256 != [32]byte{} && info.SHA256 != p.sum:
			r.pack = p.problem(r, packName, ProblemChecksum, fmt.Errorf("sha256 %x, the index records %s", info.SHA256, p.rec.SHA256))
		}
		info, err = r.t.Stat(ctx, manName)
		switch {
		case err != nil:
			r.man = p.classify(r, manName, err)
		case info.Size == 0:
			r.man = p.problem(r, manName, ProblemSize, errors.New("empty"))
		}
	}
}

// openManifest authenticates a manifest replica and checks it against the index entry.
func (p *packVerify) openManifest(ctx context.Context, b []byte) (pack.Manifest, error) {
	m, err := p.v.cfg.Opener.Manifest(ctx, p.rec.Pack, b)
	if err != nil {
		return m, err
	}
	if m.Size != p.rec.Size || m.SHA256 != p.rec.SHA256 || m.Class != p.rec.Class {
		return m, fmt.Errorf("%w: it describes a pack of %d bytes, sha256 %s, class %s; the index records %d bytes, sha256 %s, class %s",
			ErrCorrupt, m.Size, m.SHA256, m.Class, p.rec.Size, p.rec.SHA256, p.rec.Class)
	}
	return m, nil
}

// readManifest reads and checks the manifest in r, recording a problem when it is bad.
func (p *packVerify) readManifest(ctx context.Context, r *replicaState) error {
	name := ManifestName(p.rec.Pack)
	b, err := p.v.readAll(ctx, r.t, name, MaxCatalogObject)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrCorrupt):
		r.man = p.problem(r, name, ProblemManifest, err)
		return nil
	case err != nil:
		r.man = p.classify(r, name, err)
		return nil
	}
	m, err := p.openManifest(ctx, b)
	if err != nil {
		if fatal(ctx, err) {
			return err
		}
		r.man = p.problem(r, name, ProblemManifest, err)
		return nil
	}
	if p.manifest == nil {
		p.manifest, p.manifestBytes = &m, b
	}
	return nil
}

func (p *packVerify) readManifests(ctx context.Context) error {
	for _, r := range p.replicas {
		if r.man == nil {
			if err := p.readManifest(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// readPacks downloads every replica that passed stat. The items are authenticated on the
// first replica with the recorded checksum: the others hold the same bytes.
func (p *packVerify) readPacks(ctx context.Context) error {
	itemsChecked := false
	name := PackName(p.rec.Pack)
	for _, r := range p.replicas {
		if r.pack != nil {
			continue
		}
		var m *pack.Manifest
		if !itemsChecked {
			m = p.manifest
		}
		res, err := p.v.readPack(ctx, r.t, name, m)
		switch {
		case err != nil:
			return err
		case res.err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.pack = p.classify(r, name, res.err)
		case res.n != p.rec.Size:
			r.pack = p.problem(r, name, ProblemSize, fmt.Errorf("read %d bytes, the index records %d", res.n, p.rec.Size))
		case res.sum != p.sum:
			r.pack = p.problem(r, name, ProblemChecksum, fmt.Errorf("sha256 %x, the index records %s", res.sum, p.rec.SHA256))
		default:
			if m != nil {
				itemsChecked = true
				p.itemsBad = res.itemErr
			}
			if p.itemsBad != nil {
				r.pack = p.problem(r, name, ProblemAuth, p.itemsBad)
			}
		}
	}
	return nil
}

// bad lists the replicas with a problem a repair can address (not a target that did not answer).
func bad(rs []*replicaState, get func(*replicaState) *Problem) []*replicaState {
	var out []*replicaState
	for _, r := range rs {
		if pr := get(r); pr != nil && pr.Kind != ProblemUnreachable {
			out = append(out, r)
		}
	}
	return out
}

func packOf(r *replicaState) *Problem     { return r.pack }
func manifestOf(r *replicaState) *Problem { return r.man }

// lostUnlessAnswered records an object as unrecoverable when every replica answered and none
// is good.
func (p *packVerify) lostUnlessAnswered(get func(*replicaState) *Problem, object, reason string) {
	for _, r := range p.replicas {
		if pr := get(r); pr == nil || pr.Kind == ProblemUnreachable {
			return
		}
	}
	p.lost = append(p.lost, Unrecoverable{Pack: p.rec.Pack, Object: object, Reason: reason})
}

// extraSources are targets the index names for the pack outside its class's list.
func (p *packVerify) extraSources() []target.Target {
	var out []target.Target
	for _, n := range p.rec.Targets {
		t, ok := p.v.byName[n]
		if ok && !slices.ContainsFunc(p.replicas, func(r *replicaState) bool { return r.t.Name() == n }) {
			out = append(out, t)
		}
	}
	return out
}

func (p *packVerify) repairPack(ctx context.Context) error {
	name := PackName(p.rec.Pack)
	if p.itemsBad != nil {
		p.lost = append(p.lost, Unrecoverable{Pack: p.rec.Pack, Object: name,
			Reason: fmt.Sprintf("the recorded bytes hold an item that does not open: %v", p.itemsBad)})
		return nil
	}
	if p.v.cfg.NoRepair {
		if len(bad(p.replicas, packOf)) > 0 {
			p.lostUnlessAnswered(packOf, name, "no replica passed the checks")
		}
		return nil
	}
	if len(bad(p.replicas, packOf)) == 0 {
		return nil
	}
	// Copy a good replica to the spool, verifying it on the way; a replica that passed only
	// stat and turns out corrupt becomes one more to repair.
	var spool string
	var sources []*replicaState
	for _, r := range p.replicas {
		if r.pack == nil {
			sources = append(sources, r)
		}
	}
	for _, t := range p.extraSources() {
		sources = append(sources, &replicaState{t: t})
	}
	for _, r := range sources {
		f, err := p.v.fetch(ctx, r.t, name, p.rec.Size, p.sum)
		if err == nil {
			spool = f
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if slices.Contains(p.replicas, r) {
			if errors.Is(err, target.ErrChecksumMismatch) {
				r.pack = p.problem(r, name, ProblemChecksum, err)
			} else {
				r.pack = p.classify(r, name, err)
			}
		}
	}
	if spool == "" {
		p.lostUnlessAnswered(packOf, name, "no replica has the recorded size and checksum")
		for _, r := range bad(p.replicas, packOf) {
			r.pack.RepairErr = errors.New("no replica to repair from")
		}
		return nil
	}
	defer os.Remove(spool)
	for _, r := range bad(p.replicas, packOf) {
		p.v.replace(ctx, r.t, r.pack, p.rec.Size, p.sum, p.v.cfg.PutOptions(p.rec.Class),
			func() (io.ReadSeekCloser, error) { return os.Open(spool) })
	}
	return ctx.Err()
}

func (p *packVerify) repairManifest(ctx context.Context) error {
	name := ManifestName(p.rec.Pack)
	if p.v.cfg.NoRepair {
		if len(bad(p.replicas, manifestOf)) > 0 {
			p.lostUnlessAnswered(manifestOf, name, "no replica passed the checks")
		}
		return nil
	}
	if len(bad(p.replicas, manifestOf)) == 0 {
		return nil
	}
	if p.manifest == nil && !p.read {
		// Stat alone found the problem: read the other replicas for a good copy.
		for _, r := range p.replicas {
			if r.man == nil && p.manifest == nil {
				if err := p.readManifest(ctx, r); err != nil {
					return err
				}
			}
		}
		for _, t := range p.extraSources() {
			if p.manifest != nil {
				break
			}
			if b, err := p.v.readAll(ctx, t, name, MaxCatalogObject); err == nil {
				if m, err := p.openManifest(ctx, b); err == nil {
					p.manifest, p.manifestBytes = &m, b
				} else if fatal(ctx, err) {
					return err
				}
			}
		}
	}
	if p.manifest == nil {
		p.lostUnlessAnswered(manifestOf, name, "no replica authenticates and matches the index")
		for _, r := range bad(p.replicas, manifestOf) {
			r.man.RepairErr = errors.New("no replica to repair from")
		}
		return nil
	}
	b := p.manifestBytes
	for _, r := range bad(p.replicas, manifestOf) {
		if r.pack != nil && !r.pack.Repaired {
			// A manifest must never name a pack its target lacks.
			r.man.RepairErr = errors.New("the pack in this target is not repaired")
			continue
		}
		p.v.replace(ctx, r.t, r.man, int64(len(b)), sha256.Sum256(b), p.v.cfg.PutOptions(p.rec.Class),
			func() (io.ReadSeekCloser, error) { return nopCloser{bytes.NewReader(b)}, nil })
	}
	return ctx.Err()
}

// updateIndex adds to the index entry every target that now holds a good pack and manifest.
func (p *packVerify) updateIndex(ctx context.Context) {
	if p.v.cfg.NoRepair || p.v.cfg.Catalog == nil {
		return
	}
	ok := func(pr *Problem) bool { return pr == nil || pr.Repaired }
	for _, r := range p.replicas {
		if !ok(r.pack) || !ok(r.man) || slices.Contains(p.rec.Targets, r.t.Name()) {
			continue
		}
		if err := p.v.cfg.Catalog.AddTarget(ctx, p.rec.Pack, r.t.Name()); err != nil {
			p.index = append(p.index, Problem{Pack: p.rec.Pack, Target: r.t.Name(), Kind: ProblemIndex,
				Err: fmt.Errorf("add the target to the index entry: %w", err)})
			continue
		}
		p.indexed++
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// replace deletes a bad object and writes good bytes create-only in its place, then checks
// them. The outcome is recorded in pr.
func (v *verifier) replace(ctx context.Context, t target.Target, pr *Problem, size int64, sum [32]byte,
	opts target.PutOptions, open func() (io.ReadSeekCloser, error)) {
	if pr.Kind != ProblemMissing {
		err := t.Delete(ctx, pr.Object)
		switch {
		case errors.Is(err, target.ErrLocked):
			pr.Locked, pr.RepairErr = true, ErrLockedInPlace
			return
		case err != nil && !errors.Is(err, target.ErrNotFound):
			pr.RepairErr = fmt.Errorf("delete the bad copy: %w", err)
			return
		}
	}
	rs, err := open()
	if err != nil {
		pr.RepairErr = err
		return
	}
	opts.SHA256 = sum
	err = t.Put(ctx, pr.Object, rs, size, opts)
	rs.Close()
	if err != nil && !errors.Is(err, target.ErrExists) { // taken meanwhile: the check below decides
		pr.RepairErr = fmt.Errorf("write a good copy: %w", err)
		return
	}
	if err := v.check(ctx, t, pr.Object, size, sum); err != nil {
		pr.RepairErr = fmt.Errorf("check the copy written: %w", err)
		return
	}
	pr.Repaired = true
}

// check confirms that t holds size bytes with SHA-256 sum under name, reading the object when
// the target does not report its checksum.
func (v *verifier) check(ctx context.Context, t target.Reader, name string, size int64, sum [32]byte) error {
	info, err := t.Stat(ctx, name)
	if err != nil {
		return err
	}
	if info.Size != size {
		return fmt.Errorf("%w: %d bytes, want %d", target.ErrChecksumMismatch, info.Size, size)
	}
	if info.SHA256 != ([32]byte{}) {
		if info.SHA256 != sum {
			return fmt.Errorf("%w: sha256 %x", target.ErrChecksumMismatch, info.SHA256)
		}
		return nil
	}
	rc, err := t.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, v.meter(ctx, rc))
	if err != nil {
		return err
	}
	if n != size || [32]byte(h.Sum(nil)) != sum {
		return fmt.Errorf("%w: read back other bytes", target.ErrChecksumMismatch)
	}
	return nil
}

// fetch copies an object into a spool file, metered, and returns its path only if it holds
// exactly size bytes with SHA-256 sum.
func (v *verifier) fetch(ctx context.Context, src target.Reader, name string, size int64, sum [32]byte) (string, error) {
	return repair.FetchVerified(ctx, src, name, size, sum, v.cfg.SpoolDir, func(r io.Reader) io.Reader { return v.meter(ctx, r) })
}

// readAll reads a whole object, metered.
func (v *verifier) readAll(ctx context.Context, t target.Reader, name string, limit int64) ([]byte, error) {
	rc, err := t.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(v.meter(ctx, rc), limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, limit)
	}
	return b, nil
}

// packRead is the outcome of downloading one pack replica.
type packRead struct {
	n       int64
	sum     [32]byte
	itemErr error // an item that does not open or does not match its entry
	err     error // the target's error: nothing is known about the replica
}

// srcReader remembers the error of the stream it reads, so a dropped connection is not taken
// for a corrupt item.
type srcReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// readPack downloads a pack replica, hashing it; with m it also opens every item m lists. The
// error is for failures that stop the run (the key store, ctx).
func (v *verifier) readPack(ctx context.Context, t target.Reader, name string, m *pack.Manifest) (packRead, error) {
	rc, err := t.Get(ctx, name)
	if err != nil {
		return packRead{err: err}, nil
	}
	defer rc.Close()
	src := &srcReader{r: v.meter(ctx, rc), h: sha256.New()}
	br := bufio.NewReaderSize(src, 256<<10)
	var res packRead
	if m != nil {
		if res.itemErr, err = v.checkItems(ctx, br, m); err != nil {
			return res, err
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil && src.err == nil {
		src.err = err
	}
	if src.err != nil {
		return packRead{err: src.err}, nil
	}
	res.n, res.sum = src.n, [32]byte(src.h.Sum(nil))
	return res, nil
}

// inMemoryItem bounds the items opened in memory with the shared decoder; larger ones are
// streamed.
const inMemoryItem = 256 << 10

// checkItems reads the items m lists from r, in offset order, and authenticates each with its
// customer's key (an erased customer's item by SHA-256 only). It stops at the first bad item
// and says what is wrong with it in bad; err is for failures that stop the run.
func (v *verifier) checkItems(ctx context.Context, r io.Reader, m *pack.Manifest) (bad error, err error) {
	entries := slices.Clone(m.Items)
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Offset < entries[j].Offset })
	deks, err := v.customerKeys(ctx, m)
	if err != nil {
		return nil, err
	}
	var pos int64
	for i, e := range entries {
		if e.Offset < pos || e.Length < 0 {
			return fmt.Errorf("%w: manifest entries overlap", ErrCorrupt), nil
		}
		if gap := e.Offset - pos; gap > 0 {
			if _, err := io.CopyN(io.Discard, r, gap); err != nil {
				return fmt.Errorf("%w: the pack ends before item %d", ErrCorrupt, i), nil
			}
		}
		pos = e.Offset + e.Length
		k := deks[e.Customer]
		if k.err != nil {
			return fmt.Errorf("item %d: %w", i, k.err), nil
		}
		h := sha256.New()
		cr := &srcReader{r: io.LimitReader(r, e.Length), h: h}
		var err error
		switch {
		case k.erased:
		case e.Length <= inMemoryItem:
			err = v.openSmall(cr, k.dek, m.Class, e)
		default:
			err = openStream(cr, k.dek, m.Class, e)
		}
		if _, derr := io.Copy(io.Discard, cr); err == nil {
			err = derr
		}
		if cr.err != nil {
			return nil, nil // the read failed: the caller sees it
		}
		if err != nil {
			return fmt.Errorf("item %d at offset %d: %w", i, e.Offset, err), nil
		}
		if cr.n != e.Length || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
			return fmt.Errorf("item %d at offset %d: %w: not the bytes its manifest entry records", i, e.Offset, ErrCorrupt), nil
		}
	}
	return nil, nil
}

// openSmall opens an item in memory with the shared codec, falling back to the stream reader
// when the item expands beyond the codec's bound.
func (v *verifier) openSmall(r io.Reader, dek []byte, class string, e pack.Entry) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, _, err = v.codec.OpenItem(dek, e.Customer, class, e.ID, b)
	if errors.Is(err, pack.ErrCorrupt) {
		return openStream(bytes.NewReader(b), dek, class, e)
	}
	return err
}

func openStream(r io.Reader, dek []byte, class string, e pack.Entry) error {
	ir, err := pack.OpenItemStream(r, dek, e.Customer, class, e.ID)
	if err != nil {
		return err
	}
	defer ir.Close()
	_, err = io.Copy(io.Discard, ir)
	return err
}

// errKeyStore marks a key store failure: it stops the run rather than blame the data.
var errKeyStore = errors.New("key store")

// customerKey is how one customer's items are checked.
type customerKey struct {
	dek    []byte
	erased bool  // check the SHA-256 only
	err    error // no key: the items cannot be authenticated
}

// keyLookups bounds the key-store reads in flight for one pack.
const keyLookups = 16

// customerKeys finds the data keys of every customer of a manifest, several at once: with a
// remote key store, one read after another would take longer than the pack's bytes.
func (v *verifier) customerKeys(ctx context.Context, m *pack.Manifest) (map[string]customerKey, error) {
	cs := m.Customers()
	found := make([]customerKey, len(cs))
	errs := make([]error, len(cs))
	sem := make(chan struct{}, keyLookups)
	var wg sync.WaitGroup
	for i, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			found[i], errs[i] = v.customerKey(ctx, m, c)
		}()
	}
	wg.Wait()
	out := make(map[string]customerKey, len(cs))
	for i, c := range cs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out[c] = found[i]
	}
	return out, nil
}

// customerKey finds a customer's data key: the key store's, else the manifest's.
func (v *verifier) customerKey(ctx context.Context, m *pack.Manifest, c string) (customerKey, error) {
	if v.cfg.Keys != nil {
		dek, err := v.cfg.Keys.Lookup(ctx, c)
		switch {
		case err == nil:
			return customerKey{dek: dek}, nil
		case errors.Is(err, keys.ErrDestroyed):
			return customerKey{erased: true}, nil
		case !errors.Is(err, keys.ErrNotFound):
			return customerKey{}, fmt.Errorf("verify: %w: data key of %s: %w", errKeyStore, c, err)
		}
	}
	k, ok := m.Keys[c]
	if !ok {
		return customerKey{err: fmt.Errorf("no data key for customer %s in the key store or the manifest", c)}, nil
	}
	dek, err := v.cfg.Opener.OpenKey(ctx, c, keys.Envelope{KEK: k.KEK, DEK: k.DEK})
	if err != nil {
		return customerKey{err: fmt.Errorf("%w: %w", crypto.ErrAuth, err)}, nil
	}
	return customerKey{dek: dek}, nil
}

// meter counts the bytes read from r and holds reads to the rate limit.
func (v *verifier) meter(ctx context.Context, r io.Reader) io.Reader {
	return &meteredReader{ctx: ctx, r: r, v: v}
}

type meteredReader struct {
	ctx context.Context
	r   io.Reader
	v   *verifier
}

// maxRead keeps each read, hence each wait of the limiter, short.
const maxRead = 256 << 10

func (m *meteredReader) Read(p []byte) (int, error) {
	if len(p) > maxRead {
		p = p[:maxRead]
	}
	n, err := m.r.Read(p)
	if n > 0 {
		m.v.bytes.Add(int64(n))
		if werr := m.v.limit.wait(m.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// rateLimiter is a token bucket of bytes, holding one second's worth. It lets readers run into
// debt and sleep it off, so concurrent readers share the rate.
type rateLimiter struct {
	rate  float64 // bytes per second
	burst float64
	now   func() time.Time
	sleep func(context.Context, time.Duration) error

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// newRateLimiter returns nil (no limit) for bytesPerSecond <= 0.
func newRateLimiter(bytesPerSecond int64, now func() time.Time, sleep func(context.Context, time.Duration) error) *rateLimiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	r := float64(bytesPerSecond)
	return &rateLimiter{rate: r, burst: r, tokens: r, now: now, sleep: sleep}
}

func (l *rateLimiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.mu.Unlock()
	if d > 0 {
		return l.sleep(ctx, d)
	}
	return nil
}
