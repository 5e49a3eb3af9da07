package worker

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/replica"
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
	began := time.Now() // metrics.go
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
	// Links both ways: the pack's trace names every event in it, and each event's trace names
	// the pack commit, under which the target writes are children.
	for _, h := range b.events {
		h.span.SetAttributes(attribute.String("custos.pack.id", built.Manifest.Pack))
		commitLink := trace.Link{SpanContext: span.SpanContext(),
			Attributes: []attribute.KeyValue{attribute.String("custos.link", "pack.commit")}}
		h.span.AddLink(commitLink)
		for _, es := range h.spans() { // a batch's entries (batch.go)
			if es != nil {
				es.SetAttributes(attribute.String("custos.pack.id", built.Manifest.Pack))
				es.AddLink(commitLink)
			}
		}
	}
	if b.packID != "" && b.packID != built.Manifest.Pack {
		// The events no longer seal to the same items: a customer of the pack was erased since
		// (its entry is now refused). The intent can never be completed; its events are backed
		// up again as new, where what is now refused is dead-lettered.
		err := fmt.Errorf("rebuilt pack %s does not match its intent %s", built.Manifest.Pack, b.packID)
		w.intents.abandon(b.packID)
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
	everywhere, err := w.writePack(ctx, b.class, b.hold, built.Manifest, built.Sum, src)
	if err != nil {
		w.failBatch(b, span, err)
		return
	}
	if everywhere { // no write of it was abandoned: nothing can still be sending its bytes
		built.Release()
	}
	w.metrics.packDurable(ctx, b, began) // metrics.go
	for _, h := range b.events {
		w.finish(h, built.Manifest.Pack)
	}
}

// writePack writes the pack through the repository (pack, manifest, repair records, index),
// then marks the intent done. It returns nil only when the class's minimum number of targets
// holds both the pack and the manifest, and everywhere when every target of the class does
// (none was queued for repair). With hold, every object is written under legal hold.
func (w *Worker) writePack(ctx context.Context, class string, hold bool, m pack.Manifest, sum [32]byte, src replica.Source) (everywhere bool, err error) {
	wr, err := w.repo.WritePack(ctx, w.placement(class, hold), m, sum, src)
	if err != nil {
		return false, err
	}
	if hook := w.cfg.testAfterIndex; hook != nil {
		if err := hook(m.Pack); err != nil {
			return false, err
		}
	}
	w.intents.done(ctx, m.Pack)
	w.auditPack(class, m) // for the class's next backup_commit entry (auditcommit.go)
	w.count(func(s *Stats) {
		s.Packs++
		s.Bytes += m.Size
		s.ReplicasMissed += int64(wr.Missed)
	})
	return wr.Missed == 0, nil
}

// putOptions are the immutability settings of a class's objects written now.
func (w *Worker) putOptions(class string, hold bool) target.PutOptions {
	opts := target.PutOptions{LegalHold: hold}
	if r := w.cfg.Classes[class].Retain; r > 0 {
		opts.RetainUntil = w.cfg.Clock().Add(r)
	}
	return opts
}

func (w *Worker) failBatch(b *batch, span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, "pack not committed")
	w.log.WarnContext(trace.ContextWithSpan(context.Background(), span), "pack not committed; events will be retried", "class", b.class, "events", len(b.events), "err", err)
	for _, h := range b.events {
		h.retryLater(err)
	}
}
