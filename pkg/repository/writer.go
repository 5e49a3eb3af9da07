package repository

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Indexer is the part of the index a Writer updates once a pack is durable.
type Indexer interface {
	Commit(ctx context.Context, m pack.Manifest, targets []string, now time.Time) error
}

// RepairQueue records the targets an object missed, for the repairer.
type RepairQueue interface {
	Add(ctx context.Context, m repair.Missing) error
}

// WriterConfig are a Writer's parts. Keys, Index and Fingerprint are required; Repairs is
// required as soon as a placement's MinReplicas is below its number of targets.
type WriterConfig struct {
	Keys        keys.EnvelopeStore
	Fingerprint string // pseudonym-key fingerprint (keys.LocalKMS.Fingerprint)
	Index       Indexer
	Repairs     RepairQueue
	// Grace is how long the slower targets may take once MinReplicas hold an object.
	Grace  time.Duration
	Tracer trace.Tracer
	Clock  func() time.Time
	Logger *slog.Logger
}

// Writer writes the record to the targets in the order of docs/design.md sections 5 and 11:
// pack, manifest (with the wrapped keys), repair records for the targets that missed either,
// index. The caller publishes the pack's intent before WritePack and marks it done after. Every
// write is create-only; writing the same bytes twice succeeds. Safe for concurrent use.
type Writer struct {
	cfg    WriterConfig
	sealer *Sealer
}

// NewWriter reads (or creates) the catalog key and returns a Writer.
func NewWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if cfg.Keys == nil || cfg.Index == nil {
		return nil, errors.New("repository: a writer needs a key store and an index")
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := NewSealer(ctx, cfg.Keys, cfg.Fingerprint)
	if err != nil {
		return nil, err
	}
	return &Writer{cfg: cfg, sealer: s}, nil
}

// Placement says where a record goes: the targets of its class, how many must hold it before
// the write counts, and the immutability to apply.
type Placement struct {
	Class       string
	Targets     []target.Target
	MinReplicas int // 0 means every target
	Put         target.PutOptions
}

func (p Placement) need() int {
	if p.MinReplicas <= 0 || p.MinReplicas > len(p.Targets) {
		return len(p.Targets)
	}
	return p.MinReplicas
}

// Written says where a record is durable.
type Written struct {
	Targets []string // names of the targets holding every object written
	Missed  int      // targets recorded in the repair queue
}

// WritePack writes a pack from src (size and SHA-256 as in m), then its manifest, carrying the
// wrapped key of every customer it lists, only to the targets holding the pack; then it records
// the targets that missed either for repair, then indexes the pack. It returns nil only when at
// least pl.MinReplicas targets hold both.
func (w *Writer) WritePack(ctx context.Context, pl Placement, m pack.Manifest, sum [32]byte, src replica.Source) (Written, error) {
	packObj := repair.Object{Name: PackName(m.Pack), Size: m.Size, SHA256: hex.EncodeToString(sum[:])}
	held, reasons, err := w.replicate(ctx, "write pack", pl.need(), pl.Targets, packObj, src, pl.Put, nil)
	if err != nil {
		return Written{}, err
	}
	// Every target that holds the manifest must be able to open the pack with the KEK alone.
	m.Keys = make(map[string]pack.WrappedKey)
	for _, c := range m.Customers() {
		env, err := w.cfg.Keys.Envelope(ctx, c)
		if err != nil {
			return Written{}, fmt.Errorf("data key of %s: %w", c, err)
		}
		m.Keys[c] = pack.WrappedKey{KEK: env.KEK, DEK: env.DEK}
	}
	sealed, err := w.sealer.Manifest(m)
	if err != nil {
		return Written{}, err
	}
	manObj := object(ManifestName(m.Pack), sealed)
	// The manifest goes only where the pack is: a manifest must never name a pack its target lacks.
	kept := w.sameManifest(m)
	held, manReasons, err := w.replicate(ctx, "write manifest", pl.need(), held, manObj, replica.BytesSource(sealed), pl.Put, kept)
	if err != nil {
		return Written{}, err
	}
	manObj = kept.forRepair(manObj, held)
	maps.Copy(reasons, manReasons)
	// Recorded before the index names the pack: no indexed pack is ever short of replicas
	// without a record saying so.
	missed, err := w.queueMissing(ctx, m.Pack, pl, held, reasons, packObj, manObj)
	if err != nil {
		return Written{}, err
	}
	names := targetNames(held)
	ictx, span := w.cfg.Tracer.Start(ctx, "index")
	err = w.cfg.Index.Commit(ictx, m, names, w.cfg.Clock())
	span.End()
	if err != nil {
		return Written{}, err
	}
	return Written{Targets: names, Missed: missed}, nil
}

// WriteTaskManifest seals and writes a snapshot task manifest to pl's targets.
func (w *Writer) WriteTaskManifest(ctx context.Context, pl Placement, m snapshot.Manifest) (snapshot.Object, Written, error) {
	sealed, err := w.sealer.TaskManifest(m)
	if err != nil {
		return snapshot.Object{}, Written{}, err
	}
	obj := object("", sealed)
	obj.Name = TaskManifestName(m.Snapshot, m.Task, obj.SHA256)
	wr, err := w.writeRecord(ctx, "write task manifest", fmt.Sprintf("task.%s.%d", m.Snapshot, m.Task), pl, obj, sealed)
	return snapshot.Object{Name: obj.Name, Size: obj.Size, SHA256: obj.SHA256}, wr, err
}

// WriteSnapshotRecord writes a committed snapshot's record to pl's targets; the broker may name
// the snapshot only after it returns nil.
func (w *Writer) WriteSnapshotRecord(ctx context.Context, pl Placement, sn snapshot.Snapshot) (Written, error) {
	sealed, err := w.sealer.SnapshotRecord(sn)
	if err != nil {
		return Written{}, err
	}
	return w.writeRecord(ctx, "write snapshot record", "snapshot."+sn.ID, pl, object(SnapshotRecordName(sn.ID), sealed), sealed)
}

// WriteErasure writes a customer's erasure record to every target in pl that answers; at least
// pl.MinReplicas must hold it. The key store may destroy the key only after it returns nil. at is
// the time of the deletion request (not of the write), so that writing it again after a crash
// gives the same bytes and finds the earlier copies complete.
func (w *Writer) WriteErasure(ctx context.Context, pl Placement, pseudonym string, at time.Time) (Written, error) {
	sealed, err := w.sealer.Erasure(pseudonym, at)
	if err != nil {
		return Written{}, err
	}
	return w.writeRecord(ctx, "write erasure record", "erasure."+pseudonym, pl, object(ErasureName(pseudonym), sealed), sealed)
}

// writeRecord writes one object and queues the targets that missed it under id.
func (w *Writer) writeRecord(ctx context.Context, what, id string, pl Placement, obj repair.Object, sealed []byte) (Written, error) {
	kept := sameBody(obj.Name, sealed)
	held, reasons, err := w.replicate(ctx, what, pl.need(), pl.Targets, obj, replica.BytesSource(sealed), pl.Put, kept)
	if err != nil {
		return Written{}, err
	}
	obj = kept.forRepair(obj, held)
	missed, err := w.queueMissing(ctx, id, pl, held, reasons, obj)
	if err != nil {
		return Written{}, err
	}
	return Written{Targets: targetNames(held), Missed: missed}, nil
}

func object(name string, b []byte) repair.Object {
	return repair.Object{Name: name, Size: int64(len(b)), SHA256: hexSum(b)}
}

func targetNames(ts []target.Target) []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name()
	}
	return names
}

// replicate writes one object to targets in parallel, one span per target write, and returns
// the targets that hold it with the errors of the others. It fails when fewer than need do.
// kept, when not nil, is asked about each target that holds other bytes under the name
// (replica.ErrConflict); a target whose copy it lets stand counts as holding the object.
func (w *Writer) replicate(ctx context.Context, what string, need int, targets []target.Target, o repair.Object, src replica.Source, opts target.PutOptions, kept *keptCopies) ([]target.Target, map[string]string, error) {
	ctx, span := w.cfg.Tracer.Start(ctx, what, trace.WithAttributes(attribute.String("custos.object", o.Name)))
	defer span.End()
	sum, _ := hex.DecodeString(o.SHA256)
	opts.SHA256 = [32]byte(sum)
	res := replica.WriteQuorum(ctx, w.cfg.Tracer, targets, o.Name, o.Size, [32]byte(sum), src, opts,
		replica.Quorum{Min: need, Grace: w.cfg.Grace})
	held := make([]target.Target, 0, len(targets))
	reasons := map[string]string{}
	for i, r := range res {
		if r.Err != nil && errors.Is(r.Err, replica.ErrConflict) && kept != nil && kept.accept(ctx, w.cfg.Logger, targets[i]) {
			r.Err, res[i].Err = nil, nil
		}
		if r.Err == nil {
			held = append(held, targets[i])
		} else {
			reasons[r.Target] = r.Err.Error()
		}
	}
	if len(held) < need {
		err := fmt.Errorf("%s: durable in %d of %d targets, %d required: %w", what, len(held), len(targets), need, replica.Err(res))
		span.RecordError(err)
		return nil, nil, err
	}
	return held, reasons, nil
}

// keptCopies decides whether a target's copy that differs from the bytes being written may stand
// (same), and records the copies it let stand.
type keptCopies struct {
	name string
	same func(held []byte) bool
	// kept maps a target to the object it holds, for the targets whose copy stood.
	kept map[string]repair.Object
}

func (k *keptCopies) accept(ctx context.Context, log *slog.Logger, t target.Target) bool {
	b, err := ReadAll(ctx, t, k.name, MaxCatalogObject)
	if err != nil || !k.same(b) {
		return false
	}
	log.Info("kept a copy that differs only in key wrapping (a KEK rotation since it was written)",
		"object", k.name, "target", t.Name())
	if k.kept == nil {
		k.kept = map[string]repair.Object{}
	}
	k.kept[t.Name()] = object(k.name, b)
	return true
}

// forRepair is the object a repair must copy to the targets that missed it: o, unless every
// target holding it kept an earlier copy, in which case no target holds o's bytes and a repair
// copies the kept ones instead (every target then holds the same).
func (k *keptCopies) forRepair(o repair.Object, held []target.Target) repair.Object {
	if len(held) == 0 || len(k.kept) < len(held) {
		return o
	}
	return k.kept[held[0].Name()]
}

// sameManifest lets a target's manifest of m's pack stand when it differs from the one sealed
// now only in how keys are wrapped: the catalog key in its header and the customers' keys. That
// is what a KEK rotation between a worker's death and the pack's second write leaves. The
// manifest must authenticate under the catalog key and describe the same pack, items and
// customers; anything else stays a conflict.
func (w *Writer) sameManifest(m pack.Manifest) *keptCopies {
	return &keptCopies{name: ManifestName(m.Pack), same: func(b []byte) bool {
		_, body, err := Decode(b)
		if err != nil {
			return false
		}
		got, err := pack.OpenManifest(w.sealer.dek, m.Pack, body)
		return err == nil && sameButKeys(got, m)
	}}
}

// sameBody lets a target's copy of a catalog record (task manifest, snapshot or erasure record)
// stand when its header differs from sealed's but its sealed body is the same bytes: the same
// record, with the catalog key wrapped otherwise (a KEK rotation since it was written). The body
// is sealed deterministically, and a copy whose body differs stays a conflict.
func sameBody(name string, sealed []byte) *keptCopies {
	_, want, werr := Decode(sealed)
	return &keptCopies{name: name, same: func(b []byte) bool {
		_, got, err := Decode(b)
		return werr == nil && err == nil && bytes.Equal(got, want)
	}}
}

// sameButKeys reports whether a and b are the same manifest but for the wrapping of their keys.
func sameButKeys(a, b pack.Manifest) bool {
	if len(a.Keys) != len(b.Keys) {
		return false
	}
	for c := range a.Keys {
		if _, ok := b.Keys[c]; !ok {
			return false
		}
	}
	a.Keys, b.Keys = nil, nil
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// queueMissing records in the repair queue every target of pl that does not hold the objects.
// id names the entry: a pack id, or "erasure.<pseudonym>", "snapshot.<job>", "task.<job>.<n>"
// for records the index does not list.
func (w *Writer) queueMissing(ctx context.Context, id string, pl Placement, held []target.Target, reasons map[string]string, objs ...repair.Object) (int, error) {
	if len(held) == len(pl.Targets) {
		return 0, nil
	}
	if w.cfg.Repairs == nil {
		return 0, fmt.Errorf("%s is missing from %d targets and no repair queue is configured", id, len(pl.Targets)-len(held))
	}
	names := targetNames(held)
	missed := 0
	for _, t := range pl.Targets {
		if slices.Contains(names, t.Name()) {
			continue
		}
		miss := repair.Missing{Pack: id, Class: pl.Class, Target: t.Name(), Objects: objs, From: names,
			Since: w.cfg.Clock().UTC(), Reason: reasons[t.Name()], RetainUntil: pl.Put.RetainUntil, LegalHold: pl.Put.LegalHold}
		if err := w.cfg.Repairs.Add(ctx, miss); err != nil {
			return missed, err
		}
		missed++
		w.cfg.Logger.Warn("replica missed; queued for repair", "object", id, "target", t.Name(), "err", reasons[t.Name()])
	}
	return missed, nil
}
