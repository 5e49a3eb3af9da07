package worker

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/pack"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Intent stream: a pack's membership is published before any of its bytes are written, so a
// redelivered event can be rebuilt into the same pack (docs/design.md section 5).
const (
	IntentStream        = "CUSTOS_INTENTS"
	IntentSubjectPrefix = "custos.v1.intents."
)

type intent struct {
	Pack  string   `json:"pack"`
	Class string   `json:"class"`
	Seqs  []uint64 `json:"seqs"`
	Bulk  bool     `json:"bulk,omitempty"`
	Hold  bool     `json:"hold,omitempty"`
}

type intentState struct {
	intent
	done bool
	// abandoned: an event of the intent is gone from the stream, so the pack cannot be rebuilt;
	// its remaining events are backed up again as new (in another pack).
	abandoned bool
	seen      time.Time
	redo      *redoState // set while this worker rebuilds the pack
}

type redoState struct {
	events []*heldMsg
}

// EnsureStreams creates the event, dead-letter and intent streams if they do not exist.
func EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	if err := event.EnsureStreams(ctx, js, event.StreamsConfig{}); err != nil {
		return err
	}
	if err := audit.EnsureStream(ctx, js); err != nil {
		return err
	}
	_, err := broker.Ensure(ctx, js, jetstream.StreamConfig{
		Name: IntentStream, Description: "Custos pack intents",
		Subjects: []string{IntentSubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: 24 * time.Hour, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("worker: intent stream: %w", err)
	}
	return nil
}

// intentTable follows the intent stream and answers which pack an event sequence belongs to.
type intentTable struct {
	js   jetstream.JetStream
	log  *slog.Logger
	cons jetstream.ConsumeContext

	mu      sync.Mutex
	cond    *sync.Cond
	bySeq   map[uint64]*intentState
	byPack  map[string]*intentState
	applied uint64 // last intent-stream sequence applied
	swept   time.Time
	horizon time.Duration
}

func newIntentTable(js jetstream.JetStream, log *slog.Logger) *intentTable {
	t := &intentTable{js: js, log: log, bySeq: map[uint64]*intentState{}, byPack: map[string]*intentState{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

func (t *intentTable) start(ctx context.Context, since time.Time) error {
	t.horizon = time.Since(since)
	cons, err := t.js.OrderedConsumer(ctx, IntentStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{IntentSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return fmt.Errorf("worker: follow intents: %w", err)
	}
	t.cons, err = cons.Consume(t.apply)
	if err != nil {
		return fmt.Errorf("worker: follow intents: %w", err)
	}
	return nil
}

func (t *intentTable) stop() {
	if t.cons != nil {
		t.cons.Stop()
		<-t.cons.Closed()
	}
}

func (t *intentTable) apply(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer func() {
		t.applied = md.Sequence.Stream
		t.cond.Broadcast()
		t.mu.Unlock()
	}()
	name := strings.TrimPrefix(msg.Subject(), IntentSubjectPrefix)
	if id, ok := strings.CutSuffix(name, ".done"); ok {
		if st := t.byPack[id]; st != nil {
			st.done = true
		}
		return
	}
	var in intent
	if err := json.Unmarshal(msg.Data(), &in); err != nil {
		t.log.Warn("ignoring malformed pack intent", "subject", msg.Subject())
		return
	}
	st := t.byPack[in.Pack]
	if st == nil {
		st = &intentState{intent: in, seen: now}
		t.byPack[in.Pack] = st
		for _, s := range in.Seqs {
			t.bySeq[s] = st
		}
	}
	if now.Sub(t.swept) > t.horizon/4 {
		t.swept = now
		for id, st := range t.byPack {
			if now.Sub(st.seen) > t.horizon && st.redo == nil {
				delete(t.byPack, id)
				for _, s := range st.Seqs {
					if t.bySeq[s] == st {
						delete(t.bySeq, s)
					}
				}
			}
		}
	}
}

// publish stores an intent and waits until the server has it.
func (t *intentTable) publish(ctx context.Context, in intent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := broker.Bounded(ctx, 0)
	defer cancel()
	_, err = t.js.PublishMsg(ctx, &nats.Msg{Subject: IntentSubjectPrefix + in.Pack, Data: b,
		Header: nats.Header{nats.MsgIdHdr: []string{in.Pack}}})
	if err != nil {
		return fmt.Errorf("publish intent %s: %w", in.Pack, err)
	}
	return nil
}

// done marks the pack committed. Losing this message costs only a redundant rebuild later.
func (t *intentTable) done(ctx context.Context, packID string) {
	t.mu.Lock()
	if st := t.byPack[packID]; st != nil {
		st.done = true
	}
	t.mu.Unlock()
	ctx, cancel := broker.Bounded(ctx, 0)
	defer cancel()
	if _, err := t.js.PublishMsg(ctx, &nats.Msg{Subject: IntentSubjectPrefix + packID + ".done",
		Header: nats.Header{nats.MsgIdHdr: []string{packID + ".done"}}}); err != nil {
		t.log.Warn("could not mark pack intent done", "pack", packID, "err", err)
	}
}

// abandon marks an intent that can never be completed; its events are then processed as new.
func (t *intentTable) abandon(packID string) {
	t.mu.Lock()
	if st := t.byPack[packID]; st != nil {
		st.abandoned = true
	}
	t.mu.Unlock()
}

// lookup returns the intent holding stream sequence seq, after catching up with every intent
// published so far.
func (t *intentTable) lookup(ctx context.Context, seq uint64) (*intentState, error) {
	s, err := t.js.Stream(ctx, IntentStream)
	if err != nil {
		return nil, err
	}
	last := s.CachedInfo().State.LastSeq
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopWake := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stopWake()
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.applied < last {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("catching up with pack intents: %w", ctx.Err())
		}
		t.cond.Wait()
	}
	return t.bySeq[seq], nil
}

// resumeIntent handles a redelivered event whose pack intent exists. It returns false when the
// event is to be processed as new.
func (w *Worker) resumeIntent(h *heldMsg) bool {
	st, err := w.intents.lookup(h.ctx, h.seq)
	if err != nil {
		h.retryLater(err)
		return true
	}
	if st == nil || st.Bulk {
		return false
	}
	t := w.intents
	t.mu.Lock()
	if st.abandoned {
		t.mu.Unlock()
		return false
	}
	if st.done {
		t.mu.Unlock()
		w.log.Info("duplicate delivery of a committed event acknowledged", "seq", h.seq, "pack", st.Pack)
		w.finish(h, st.Pack)
		return true
	}
	if st.redo != nil {
		st.redo.events = append(st.redo.events, h)
		t.mu.Unlock()
		return true
	}
	st.redo = &redoState{events: []*heldMsg{h}}
	t.mu.Unlock()
	w.work.Add(1)
	go func() {
		defer w.work.Done()
		w.redo(st)
	}()
	return true
}

// redo rebuilds an intent's pack from the events in the stream and completes it.
func (w *Worker) redo(st *intentState) {
	ctx, cancel := context.WithTimeout(w.workCtx, commitTimeout)
	defer cancel()
	t := w.intents
	// A worker killed between the index commit and the intent's done marker, or between two
	// acknowledgements, leaves a committed pack behind its intent: its events are durable and
	// only need acknowledging. (Acknowledged events are gone from the work-queue stream, so the
	// pack could not be rebuilt anyway.)
	if _, err := w.deps.Index.Pack(ctx, st.Pack); err == nil {
		w.log.Info("pack of a resumed intent is committed; acknowledging its events", "pack", st.Pack)
		t.mu.Lock()
		st.done = true
		t.mu.Unlock()
	} else {
		w.log.Info("resuming pack from its intent", "pack", st.Pack, "events", len(st.Seqs))
		var items []pack.Item
		for _, seq := range st.Seqs {
			var its []pack.Item
			its, err = w.rebuildItems(ctx, seq)
			if err != nil {
				break
			}
			items = append(items, its...)
		}
		perSeq := map[uint64]int{}
		for _, it := range items {
			perSeq[it.Seq]++
		}
		t.mu.Lock()
		held := st.redo.events
		st.redo.events = nil
		for _, h := range held {
			if h.batch && err == nil {
				h.entries = perSeq[h.seq] // its entries dead-lettered the first time are not counted
			}
		}
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// An event of the pack was removed (settled in another pack, or by an operator):
			// this pack can never be rebuilt. The others are backed up again as new.
			st.abandoned = true
		}
		t.mu.Unlock()
		b := &batch{class: st.Class, items: items, events: held, packID: st.Pack, hold: st.Hold}
		switch {
		case err != nil && st.abandoned:
			w.log.Warn("pack intent abandoned: an event is no longer in the stream; its other events are backed up again", "pack", st.Pack, "err", err)
			for _, h := range held {
				h.retryLater(fmt.Errorf("pack %s abandoned", st.Pack))
			}
		case err != nil:
			err = fmt.Errorf("rebuild pack %s: %w", st.Pack, err)
			for _, h := range held {
				h.retryLater(err)
			}
		default:
			w.commit(b)
		}
	}
	// Events that joined while the pack was written are settled the same way.
	t.mu.Lock()
	late := st.redo.events
	st.redo = nil
	ok := st.done
	t.mu.Unlock()
	for _, h := range late {
		if ok {
			w.finish(h, st.Pack)
		} else {
			h.retryLater(errors.New("pack " + st.Pack + " not committed"))
		}
	}
}

// rebuildItems reads one event back from the stream and seals its records again.
func (w *Worker) rebuildItems(ctx context.Context, seq uint64) ([]pack.Item, error) {
	raw, err := w.events.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("read event %d: %w", seq, err)
	}
	ev, err := event.Decode(raw.Subject, raw.Header, raw.Data, w.limits)
	if err != nil {
		return nil, fmt.Errorf("decode event %d: %w", seq, err)
	}
	var meta *custosv1.Meta
	var recs []*custosv1.Record
	switch m := ev.Msg.(type) {
	case *custosv1.PostTransaction:
		meta, recs = m.GetMeta(), []*custosv1.Record{m.GetRecord()}
	case *custosv1.ManualRequest:
		meta, recs = m.GetMeta(), m.GetRecords()
	case *custosv1.SuspiciousActivity:
		meta, recs = m.GetMeta(), m.GetRecords()
	case *custosv1.PostTransactionBatch:
		// The entries dead-lettered the first time are skipped the same way now.
		items, _, err := w.sealBatch(ctx, seq, m)
		return items, err
	default:
		return nil, fmt.Errorf("event %d (%T) carries no records", seq, ev.Msg)
	}
	return w.sealInline(ctx, seq, meta, recs)
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }
