package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/repository"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// erasureStale is how long an erasure may stay "executing" before another worker takes it over
// (its executor died).
const erasureStale = 2 * time.Minute

// erase handles a deletion request (docs/design.md section 12): it authenticates it, records it,
// and carries it out now, or once its grace period ends, unless an operator cancels it first.
func (w *Worker) erase(h *heldMsg, m *custosv1.DeletionRequest) {
	meta := m.GetMeta()
	pseudo := w.pseudonym(meta)
	ctx, span := w.tracer.Start(h.ctx, "erase", trace.WithAttributes(attribute.String("custos.customer", pseudo)))
	defer span.End()
	verified, err := w.cfg.Erasure.Authenticate(h.msg.Headers(), erasure.RequestFields{
		EventID: meta.GetEventId(), Tenant: meta.GetTenant(), CustomerID: meta.GetCustomerId(),
		Class: meta.GetDataClass(), RequestedBy: m.GetRequestedBy(), Time: meta.GetTime().AsTime()})
	if err != nil {
		span.RecordError(err)
		w.deadLetter(h, err.Error())
		return
	}
	now := w.cfg.Clock().UTC()
	req := erasure.Request{V: 1, ID: erasure.NewID(pseudo, meta.GetEventId()), Customer: pseudo,
		Classes: meta.GetDataClass(), RequestedBy: m.GetRequestedBy(), Verified: verified,
		LegalBasis: m.GetLegalBasis(), EventID: meta.GetEventId(),
		RequestedAt: meta.GetTime().AsTime().UTC(), DueAt: now.Add(w.cfg.Erasure.Grace),
		State: erasure.StatePending, Updated: now}
	req, rev, err := w.erasures.Create(ctx, req)
	if err != nil {
		h.retryLater(err)
		return
	}
	if req.State == erasure.StatePending && req.DueAt.After(now) {
		w.log.Info("erasure requested; carried out after the grace period unless cancelled",
			"customer", pseudo, "erasure", req.ID, "due", req.DueAt)
		w.auditErasure(ctx, req, "requested")
		h.ack()
		return
	}
	// An executing request belongs to the worker that claimed it (or, if that worker died, to the
	// periodic pass once it is stale); done, cancelled and recorded ones need nothing more.
	if req.State == erasure.StatePending {
		if err := w.executeErasure(ctx, req, rev); err != nil {
			h.retryLater(err)
			return
		}
	}
	h.ack()
}

// executeErasure carries out a due request: claim it (so a cancel can no longer win), write the
// erasure record to the targets, destroy the key, drop the broker's copies, then sign the
// certificate. Every step is idempotent: a redelivery or another worker finishes the work.
func (w *Worker) executeErasure(ctx context.Context, req erasure.Request, rev uint64) error {
	pseudo := req.Customer
	req.State, req.Updated = erasure.StateExecuting, w.cfg.Clock().UTC()
	rev, err := w.erasures.Update(ctx, req, rev)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil // cancelled, or taken by another worker meanwhile
	}
	if err != nil {
		return err
	}
	cert := erasure.Certificate{V: 1, ID: req.ID, Customer: pseudo, Classes: req.Classes,
		RequestedBy: req.RequestedBy, Verified: req.Verified, LegalBasis: req.LegalBasis,
		EventID: req.EventID, RequestedAt: req.RequestedAt}
	_, lookupErr := w.deps.Keys.Lookup(ctx, pseudo)
	unknown := errors.Is(lookupErr, keys.ErrNotFound) && !w.cfg.Erasure.Blocks()
	if unknown {
		// Nothing held: no erasure record, no tombstone. A customer with this id that appears
		// later is a new customer and is backed up.
		cert.Key = "never_created"
	} else {
		// The targets record the erasure before the key store does: a destroyed key with no
		// erasure record is read as tampering, never as an erasure (design.md section 11).
		wr, err := w.repo.WriteErasure(ctx, w.erasurePlacement(), pseudo, req.RequestedAt)
		w.count(func(s *Stats) { s.ReplicasMissed += int64(wr.Missed) })
		if err != nil {
			return fmt.Errorf("write erasure record: %w", err)
		}
		if err := w.deps.Keys.Destroy(ctx, pseudo); err != nil {
			return fmt.Errorf("destroy data key: %w", err)
		}
		cert.Key, cert.Targets, cert.TargetsQueued = "destroyed", wr.Targets, wr.Missed
		if w.deps.Records != nil {
			// The dedup cache only points at items that are now unreadable.
			if err := w.deps.Records.Forget(ctx, pseudo); err != nil {
				w.log.Warn("dedup cache of an erased customer not dropped", "customer", pseudo, "err", err)
			}
		}
		cert.Broker = "events leave the work-queue stream once settled; dead letters are sealed under the destroyed key"
		if w.purgeDeadLetters(ctx, pseudo) {
			cert.Broker += " and were purged"
		}
		w.count(func(s *Stats) { s.Erased++ })
	}
	if w.deps.KEKs != nil {
		cert.KEKActive = w.deps.KEKs.KeyID()
		if !unknown {
			retired, err := w.deps.KEKs.Retired(ctx)
			if err != nil {
				return fmt.Errorf("list retired KEK versions: %w", err)
			}
			cert.WrappedBy = append([]string{cert.KEKActive}, retired...)
		}
	}
	if cert.Broker == "" {
		cert.Broker = "nothing held"
	}
	cert.ErasedAt = w.cfg.Clock().UTC()
	signed, err := erasure.Sign(cert, w.signer.SigningKey(keys.PurposeErasureCertificate))
	if err != nil {
		return err
	}
	// The certificate goes to the targets too, so that it outlives the broker.
	if b, err := json.Marshal(signed); err == nil {
		held, errs := repository.WriteCertificate(ctx, w.cfg.Targets, pseudo, req.ID, b)
		if len(held) == 0 {
			return fmt.Errorf("no target took the deletion certificate: %w", errors.Join(errs...))
		}
		for _, e := range errs {
			w.log.Warn("deletion certificate not written to a target", "erasure", req.ID, "err", e)
		}
	}
	req.Certificate, req.Updated = signed, cert.ErasedAt
	req.State = erasure.StateDone
	if unknown {
		req.State = erasure.StateRecorded
	}
	if _, err := w.erasures.Update(ctx, req, rev); err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	w.log.Info("customer erased", "customer", pseudo, "erasure", req.ID, "key", cert.Key, "targets", len(cert.Targets))
	w.auditErasure(ctx, req, req.State)
	return nil
}

// erasurePlacement is every configured target, at least one of which must hold the erasure
// record. Erasure records are never locked: an erasure is final, and a later KEK rotation needs
// nothing from them but their presence.
func (w *Worker) erasurePlacement() repository.Placement {
	return repository.Placement{Targets: w.cfg.Targets, MinReplicas: 1}
}

// auditErasure appends the request's step to the audit log (best effort: the request's state
// and certificate are in CUSTOS_ERASURES).
func (w *Worker) auditErasure(ctx context.Context, req erasure.Request, outcome string) {
	if w.audit == nil {
		return
	}
	e := audit.Entry{Time: w.cfg.Clock(), Kind: audit.KindErasure, EventID: req.EventID, Class: req.Classes,
		Customer: req.Customer, Reason: "deletion request " + req.ID, RequestedBy: req.RequestedBy,
		Outcome: outcome, Certificate: req.ID}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := w.audit.Append(actx, e); err != nil {
		w.log.Error("could not write the audit entry of an erasure", "erasure", req.ID, "err", err)
	}
}

// startErasures runs the pass that carries out requests whose grace period ended.
func (w *Worker) startErasures(ctx context.Context) error {
	interval := w.cfg.ErasureInterval
	w.erasureLoop = &periodic.Loop{Interval: interval, Run: w.runDueErasures,
		OnError: func(err error) { w.log.Warn("erasure pass failed", "err", err) }}
	return w.erasureLoop.Start(ctx)
}

func (w *Worker) runDueErasures(ctx context.Context) error {
	due, revs, err := w.erasures.Due(ctx, w.cfg.Clock(), erasureStale)
	if err != nil {
		return err
	}
	var errs []error
	for i, r := range due {
		if err := w.executeErasure(ctx, r, revs[i]); err != nil {
			errs = append(errs, fmt.Errorf("erasure %s: %w", r.ID, err))
		}
	}
	return errors.Join(errs...)
}
