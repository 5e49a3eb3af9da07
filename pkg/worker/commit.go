package worker

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

// commitTimeout bounds one pack's writes; a pack that cannot be written in this time is retried.
const commitTimeout = 5 * time.Minute

// send queues a batch for a committer.
func (w *Worker) send(b *batch) {
	select {
	case w.commits <- b:
	case <-w.runCtx.Done():
	}
}

func (w *Worker) committer() {
	defer w.wg.Done()
	for {
		select {
		case b := <-w.commits:
			w.commit(b)
		case <-w.runCtx.Done():
			return
		}
	}
}

// classTargets returns the targets a class must be durable in.
func (w *Worker) classTargets(class string) []target.Target {
	names := w.cfg.Classes[class].Targets
	ts := make([]target.Target, len(names))
	for i, n := range names {
		ts[i] = w.targets[n]
	}
	return ts
}

// commit writes one pack following the ordering rules of docs/design.md section 5, then
// acknowledges its events. On failure every event is retried later (or dead-lettered).
func (w *Worker) commit(b *batch) {
	links := make([]trace.Link, 0, len(b.events))
	for _, h := range b.events {
		links = append(links, trace.Link{SpanContext: h.span.SpanContext()})
	}
	built := pack.Build(b.class, b.items)
	ctx, cancel := context.WithTimeout(w.workCtx, commitTimeout)
	defer cancel()
	ctx, span := w.tracer.Start(ctx, "pack.commit", trace.WithLinks(links...), trace.WithNewRoot(),
		trace.WithAttributes(attribute.String("custos.pack.id", built.Manifest.Pack),
			attribute.String("custos.class", b.class), attribute.Int("custos.pack.items", len(built.Manifest.Items)),
			attribute.Int64("custos.pack.bytes", built.Manifest.Size), attribute.Int("custos.pack.events", len(b.events))))
	defer span.End()
	for _, h := range b.events {
		h.span.SetAttributes(attribute.String("custos.pack.id", built.Manifest.Pack))
	}
	if b.packID != "" && b.packID != built.Manifest.Pack {
		// Rebuilding an intent must give the same pack; anything else is a bug worth stopping for.
		err := fmt.Errorf("rebuilt pack %s does not match its intent %s", built.Manifest.Pack, b.packID)
		w.failBatch(b, span, err)
		return
	}
	if b.packID == "" {
		seqs := make([]uint64, len(b.events))
		for i, h := range b.events {
			seqs[i] = h.seq
		}
		if err := w.intents.publish(ctx, intent{Pack: built.Manifest.Pack, Class: b.class, Seqs: seqs, Hold: b.hold}); err != nil {
			w.failBatch(b, span, err)
			return
		}
		if hook := w.cfg.testAfterIntent; hook != nil {
			if err := hook(built.Manifest.Pack); err != nil {
				w.failBatch(b, span, err)
				return
			}
		}
	}
	src := replica.BytesSource(built.Data)
	if err := w.writePack(ctx, b.class, b.hold, built.Manifest, built.Sum, src); err != nil {
		w.failBatch(b, span, err)
		return
	}
	for _, h := range b.events {
		w.finish(h, built.Manifest.Pack)
	}
}

// writePack writes the pack, then its manifest, then records the targets that missed them for
// repair, then the index entries, then marks the intent done. It returns nil only when the class's
// minimum number of targets holds both the pack and the manifest. With hold, every object is
// written under legal hold.
func (w *Worker) writePack(ctx context.Context, class string, hold bool, m pack.Manifest, sum [32]byte, src replica.Source) error {
	cl := w.cfg.Classes[class]
	targets := w.classTargets(class)
	opts := w.putOptions(class, hold)
	packObj := repair.Object{Name: repository.PackName(m.Pack), Size: m.Size, SHA256: hex.EncodeToString(sum[:])}
	held, reasons, err := w.replicate(ctx, "write pack", cl.minReplicas(), targets, packObj, src, opts)
	if err != nil {
		return err
	}
	// Every target that holds the manifest must be able to open the pack with the KEK alone.
	m.Keys = make(map[string]pack.WrappedKey)
	for _, c := range m.Customers() {
		env, err := w.deps.Keys.Envelope(ctx, c)
		if err != nil {
			return fmt.Errorf("data key of %s: %w", c, err)
		}
		m.Keys[c] = pack.WrappedKey{KEK: env.KEK, DEK: env.DEK}
	}
	sealed, err := w.sealer.Manifest(m)
	if err != nil {
		return err
	}
	manSum := sha(sealed)
	manObj := repair.Object{Name: repository.ManifestName(m.Pack), Size: int64(len(sealed)), SHA256: hex.EncodeToString(manSum[:])}
	// The manifest goes only where the pack is: a manifest must never name a pack its target lacks.
	held, manReasons, err := w.replicate(ctx, "write manifest", cl.minReplicas(), held, manObj, replica.BytesSource(sealed), opts)
	if err != nil {
		return err
	}
	maps.Copy(reasons, manReasons)
	names := make([]string, len(held))
	for i, t := range held {
		names[i] = t.Name()
	}
	// Recorded before the index names the pack: no acknowledged pack is ever short of replicas
	// without a record saying so.
	if err := w.queueMissing(ctx, m.Pack, class, targets, held, reasons, opts, packObj, manObj); err != nil {
		return err
	}
	ictx, span := w.tracer.Start(ctx, "index")
	err = w.deps.Index.Commit(ictx, m, names, w.cfg.Clock())
	span.End()
	if err != nil {
		return err
	}
	if hook := w.cfg.testAfterIndex; hook != nil {
		if err := hook(m.Pack); err != nil {
			return err
		}
	}
	w.intents.done(ctx, m.Pack)
	w.count(func(s *Stats) {
		s.Packs++
		s.Bytes += m.Size
	})
	return nil
}

// putOptions are the immutability settings of a class's objects written now.
func (w *Worker) putOptions(class string, hold bool) target.PutOptions {
	opts := target.PutOptions{LegalHold: hold}
	if r := w.cfg.Classes[class].Retain; r > 0 {
		opts.RetainUntil = w.cfg.Clock().Add(r)
	}
	return opts
}

// replicate writes one object to targets in parallel, one span per target write, and returns
// the targets that hold it with the errors of the others. It fails when fewer than min do.
func (w *Worker) replicate(ctx context.Context, what string, need int, targets []target.Target, o repair.Object, src replica.Source, opts target.PutOptions) ([]target.Target, map[string]string, error) {
	ctx, span := w.tracer.Start(ctx, what, trace.WithAttributes(attribute.String("custos.object", o.Name)))
	defer span.End()
	sum, _ := hex.DecodeString(o.SHA256)
	res := replica.WriteQuorum(ctx, w.tracer, targets, o.Name, o.Size, [32]byte(sum), src, opts,
		replica.Quorum{Min: need, Grace: w.cfg.ReplicaGrace})
	held := make([]target.Target, 0, len(targets))
	reasons := map[string]string{}
	for i, r := range res {
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

func (w *Worker) failBatch(b *batch, span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, "pack not committed")
	w.log.Warn("pack not committed; events will be retried", "class", b.class, "events", len(b.events), "err", err)
	for _, h := range b.events {
		h.retryLater(err)
	}
}
