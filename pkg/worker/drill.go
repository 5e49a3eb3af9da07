package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/target"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Restore drills: the scheduler publishes a ScheduleTick with method "drill" when a class's
// drill falls due (docs/events.md); the worker that receives it drills the class from each of
// its targets (package drill, docs/drills.md).

// DrillConfig enables restore drills in the worker.
type DrillConfig struct {
	// Policy gives each class's RTO and drill sample. Without it a drill trigger is
	// dead-lettered: a drill nobody runs must not pass unnoticed.
	Policy *policy.Policy
	// Alert, when set, is told of every failed drill (a webhook notifier), besides the ERROR
	// log line and the custos.alerts counter.
	Alert drill.AlertFunc
	// Resolve, when set, is told of every passed drill (the notifier closes the alert).
	Resolve drill.AlertFunc
}

// drillTrigger runs the drill a ScheduleTick with method "drill" asks for, and reports whether
// ev was one. The drill runs on its own goroutine: it may take long, and the event stays held
// meanwhile, so the heartbeat keeps it from being redelivered mid-run.
func (w *Worker) drillTrigger(h *heldMsg, ev *event.Event) bool {
	m, ok := ev.Msg.(*custosv1.ScheduleTick)
	if !ok || m.GetMethod() != event.MethodDrill {
		return false
	}
	w.work.Add(1)
	go func() {
		defer w.work.Done()
		w.runDrill(h, m)
	}()
	return true
}

// runDrill drills the tick's class and settles the event: acknowledged once every target's
// result is in the audit log, whether the drill passed or failed (a failure is the drill's
// finding, alerted, not a reason to run it again); retried when the drill could not be run or
// recorded.
func (w *Worker) runDrill(h *heldMsg, m *custosv1.ScheduleTick) {
	class := m.GetMeta().GetDataClass()
	p := w.cfg.Drill.Policy
	if p == nil || p.Class(class) == nil {
		w.deadLetter(h, fmt.Sprintf("restore drill of class %q: the worker has no policy for the class (worker.Config.Drill)", class))
		return
	}
	var readers []target.Reader
	for _, name := range w.cfg.Classes[class].Targets {
		if t, ok := w.targets[name]; ok {
			readers = append(readers, t)
		}
	}
	d, err := drill.New(drill.Config{Policy: p, Index: w.deps.Index, Targets: map[string][]target.Reader{class: readers},
		Keys: w.deps.Keys, Pseudonyms: w.deps.Pseudonyms, Audit: w.audit, ScratchDir: w.cfg.SpoolDir,
		Alert: w.cfg.Drill.Alert, Resolve: w.cfg.Drill.Resolve, Logger: w.log.With("drill", m.GetMeta().GetEventId()), Clock: w.cfg.Clock,
		MeterProvider: w.cfg.MeterProvider})
	if err != nil {
		w.deadLetter(h, err.Error())
		return
	}
	ctx, span := w.tracer.Start(h.ctx, "restore drill")
	defer span.End()
	// workCtx ends when a drain times out: the drill stops and the event is handed back.
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.workCtx, cancel)
	defer stop()
	defer cancel()
	results, err := d.Run(ctx, drill.Options{Class: class, EventID: m.GetMeta().GetEventId()})
	switch {
	case errors.Is(err, drill.ErrUnknownClass):
		w.deadLetter(h, err.Error())
	case err != nil:
		span.RecordError(err)
		h.retryLater(err)
	default:
		passed := 0
		for _, r := range results {
			if r.Passed() {
				passed++
			}
		}
		w.log.Info("restore drill done", "class", class, "targets", len(results), "passed", passed)
		h.ack()
	}
}
