package schedule_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/schedule/scheduletest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The NATS client's flusher exits asynchronously after Close.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start"),
	)
}

type bundle struct {
	ns     *natstest.Server
	clock  *scheduletest.Clock
	policy *policy.Policy
	logs   *logtest.Buffer
}

func setup(t *testing.T, p *policy.Policy, start time.Time) *bundle {
	t.Helper()
	return &bundle{ns: natstest.Start(t), clock: scheduletest.NewClock(start), policy: p, logs: &logtest.Buffer{}}
}

// service starts a replica; it is stopped at the end of the test.
func (b *bundle) service(t *testing.T, replica string) *schedule.Service {
	t.Helper()
	s, err := schedule.New(b.ns.JS, schedule.Config{
		Policy:  b.policy,
		Replica: replica,
		Clock:   b.clock,
		Logger:  slog.New(slog.NewTextHandler(b.logs, nil)),
		// Sleep until the next due time however far: the test moves the clock from timer to
		// timer, so every wake is a due time (or a lease to check).
		MaxSleep: 5 * 365 * 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

func stop(t *testing.T, s *schedule.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Error(err)
	}
}

// runUntil moves the clock from one pending timer to the next until the next is at or after
// end; n services are running.
func (b *bundle) runUntil(t *testing.T, end time.Time, n int) {
	t.Helper()
	for {
		b.clock.WaitIdle(t, n)
		next := b.clock.Next()
		if next.IsZero() || !next.Before(end) {
			return
		}
		b.clock.Set(next)
	}
}

// published is one event read back from the stream.
type published struct {
	id, kind, class, name, method string
	due, time                     time.Time
}

func (b *bundle) stream(t *testing.T) []published {
	t.Helper()
	ctx := context.Background()
	st, err := b.ns.JS.Stream(ctx, event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []published
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := event.Decode(raw.Subject, raw.Header, raw.Data, event.Limits{Now: b.clock.Now})
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if raw.Header.Get("Nats-Msg-Id") != ev.ID() {
			t.Fatalf("Nats-Msg-Id %q, event id %q", raw.Header.Get("Nats-Msg-Id"), ev.ID())
		}
		p := published{id: ev.ID(), class: ev.Meta.GetDataClass(), time: ev.Meta.GetTime().AsTime()}
		if ev.Meta.GetTenant() != b.policy.Tenant {
			t.Fatalf("tenant %q", ev.Meta.GetTenant())
		}
		switch {
		case ev.ScheduleTick() != nil:
			m := ev.ScheduleTick()
			p.kind, p.name, p.method, p.due = schedule.KindTick, m.GetSchedule(), m.GetMethod(), m.GetScheduledFor().AsTime()
			if m.GetMethod() == event.MethodDrill {
				p.kind = schedule.KindDrill
			}
		case ev.ComplianceDeadline() != nil:
			m := ev.ComplianceDeadline()
			p.kind, p.name, p.due = schedule.KindDeadline, m.GetDeadline(), m.GetDue().AsTime()
		default:
			t.Fatalf("unexpected event type %s", ev.Type)
		}
		out = append(out, p)
	}
	return out
}

// sameEvents checks that the stream holds exactly the expected events, once each.
func sameEvents(t *testing.T, got []published, want []schedule.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events on the stream, want %d", len(got), len(want))
	}
	byID := map[string]published{}
	for _, g := range got {
		if _, dup := byID[g.id]; dup {
			t.Fatalf("event %s published twice", g.id)
		}
		byID[g.id] = g
	}
	for _, w := range want {
		g, ok := byID[w.ID]
		if !ok {
			t.Fatalf("event %s not published", w.ID)
		}
		if g.kind != w.Kind || g.class != w.Class || g.name != w.Name || g.method != w.Method || !g.due.Equal(w.Due) {
			t.Fatalf("event %s published as %+v, want %+v", w.ID, g, w)
		}
	}
}

// TestServiceYear runs one scheduler through 2027 under the default policy: every tick and
// deadline reaches the stream once, at its due time.
func TestServiceYear(t *testing.T) {
	t.Parallel()
	start, end := date(2027, 1, 1), date(2028, 1, 1)
	b := setup(t, policy.Default(), start)
	s := b.service(t, "r1")
	b.runUntil(t, end, 1)
	stop(t, s)

	want := schedule.Compute(b.policy, start, end)
	if len(want) != 491 {
		t.Fatalf("%d events computed", len(want))
	}
	got := b.stream(t)
	sameEvents(t, got, want)
	for i, g := range got {
		if !g.time.Equal(g.due) {
			t.Fatalf("%s published at %s, due %s", g.id, g.time, g.due)
		}
		if i > 0 && g.due.Before(got[i-1].due) {
			t.Fatalf("%s published after a later event", g.id)
		}
	}
	if st := s.Stats(); st != (schedule.Stats{Fired: 491}) {
		t.Fatalf("stats %+v", st)
	}
}

// TestServiceReplicas runs three schedulers together over three months: each event is published
// once, by one of them, and none even tries twice (no duplicates reach JetStream's window).
func TestServiceReplicas(t *testing.T) {
	t.Parallel()
	start, end := date(2027, 1, 1), date(2027, 4, 1)
	b := setup(t, policy.Default(), start)
	var services []*schedule.Service
	for _, name := range []string{"r1", "r2", "r3"} {
		services = append(services, b.service(t, name))
	}
	b.runUntil(t, end, len(services))
	want := schedule.Compute(b.policy, start, end)
	sameEvents(t, b.stream(t), want)
	var fired int64
	for _, s := range services {
		st := s.Stats()
		if st.Duplicates != 0 || st.Skipped != 0 || st.Errors != 0 || st.TakenOver != 0 {
			t.Errorf("%s: %+v", s.Replica(), st)
		}
		fired += st.Fired
	}
	if fired != int64(len(want)) {
		t.Fatalf("%d fired in all, want %d", fired, len(want))
	}
}

const catchUpPolicy = `version: 1
tenant: acme
catch_up: 6h
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  critical:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 30d}
    targets: [a, b, c]
    rpo: 48h
    rto: 48h
`

// TestServiceCatchUp stops the scheduler over a tick and starts another replica later.
func TestServiceCatchUp(t *testing.T) {
	t.Parallel()
	p := parse(t, catchUpPolicy)
	jan1 := date(2027, 1, 1)
	day := 24 * time.Hour
	tick := jan1.Add(2 * time.Hour) // daily at 02:00; catch_up 6h
	for _, tc := range []struct {
		name    string
		back    time.Time   // when a replica comes back
		atBack  []time.Time // due times it publishes at once
		skipped int64       // ticks it records as skipped
		later   []time.Time // due times published over the next day
	}{
		{"within the window", tick.Add(5 * time.Hour), []time.Time{tick}, 0, []time.Time{tick.Add(day)}},
		{"at the window's edge", tick.Add(6 * time.Hour), []time.Time{tick}, 0, []time.Time{tick.Add(day)}},
		{"outside the window", tick.Add(6*time.Hour + time.Minute), nil, 1, []time.Time{tick.Add(day)}},
		{"ten days later", tick.Add(10*day + 3*time.Hour), []time.Time{tick.Add(10 * day)}, 10, []time.Time{tick.Add(11 * day)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, p, jan1)
			a := b.service(t, "a")
			b.runUntil(t, jan1.Add(time.Hour), 1)
			stop(t, a) // down from 01:00: the 02:00 tick is missed

			b.clock.Set(tc.back)
			r := b.service(t, "b")
			b.clock.WaitIdle(t, 1)
			got := b.stream(t)
			if len(got) != len(tc.atBack) {
				t.Fatalf("published %+v, want due %v", got, tc.atBack)
			}
			for i, g := range got {
				if !g.due.Equal(tc.atBack[i]) || !g.time.Equal(tc.back) {
					t.Fatalf("published %+v, want due %s at %s", g, tc.atBack[i], tc.back)
				}
			}
			if st := r.Stats(); st.Skipped != tc.skipped || st.Fired != int64(len(tc.atBack)) {
				t.Fatalf("stats %+v", st)
			}
			if logged := strings.Count(b.logs.String(), "event too old to fire: skipped"); logged != int(tc.skipped) {
				t.Fatalf("%d skipped ticks logged, want %d:\n%s", logged, tc.skipped, b.logs)
			}
			// Another replica starting now fires nothing again and skips nothing again.
			c := b.service(t, "c")
			b.clock.WaitIdle(t, 2)
			if st := c.Stats(); st.Fired != 0 || st.Skipped != 0 {
				t.Fatalf("third replica: %+v", st)
			}
			// Both go on: the next tick fires once, on time.
			b.runUntil(t, tc.back.Add(day), 2)
			got = b.stream(t)[len(tc.atBack):]
			if len(got) != len(tc.later) {
				t.Fatalf("then published %+v, want due %v", got, tc.later)
			}
			for i, g := range got {
				if !g.due.Equal(tc.later[i]) || !g.time.Equal(g.due) {
					t.Fatalf("then published %+v, want due %s on time", g, tc.later[i])
				}
			}
			if st := r.Stats(); st.Skipped != tc.skipped {
				t.Fatalf("stats after a day %+v", st)
			}
		})
	}
}

// TestServiceTakeover: a replica claimed a tick and died before publishing it. Another replica
// publishes it once the claim's lease has run out.
func TestServiceTakeover(t *testing.T) {
	t.Parallel()
	p := parse(t, catchUpPolicy)
	jan1 := date(2027, 1, 1)
	tick := jan1.Add(2 * time.Hour)
	b := setup(t, p, jan1)
	s := b.service(t, "alive")
	b.clock.WaitIdle(t, 1)

	// The dead replica's claim, as it wrote it at the due time.
	kv, err := b.ns.JS.KeyValue(context.Background(), schedule.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	id := schedule.TickID("acme", "critical", "daily", tick)
	claim, _ := json.Marshal(map[string]any{"state": "claimed", "replica": "dead", "at": tick, "due": tick})
	if _, err := kv.Create(context.Background(), id, claim); err != nil {
		t.Fatal(err)
	}
	b.runUntil(t, tick.Add(time.Hour), 1)
	got := b.stream(t)
	if len(got) != 1 || got[0].id != id || !got[0].time.Equal(tick.Add(schedule.DefaultLease)) {
		t.Fatalf("stream %+v", got)
	}
	if st := s.Stats(); st.TakenOver != 1 || st.Fired != 1 {
		t.Fatalf("stats %+v", st)
	}
	entry, err := kv.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ State, Replica string }
	if err := json.Unmarshal(entry.Value(), &rec); err != nil || rec.State != "published" || rec.Replica != "alive" {
		t.Fatalf("record %s", entry.Value())
	}
}

func TestServiceLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t, policy.Default(), date(2027, 1, 1))
	s, err := schedule.New(b.ns.JS, schedule.Config{Policy: b.policy, Clock: b.clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop before start: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatal("second start succeeded")
	}
	b.clock.WaitIdle(t, 1)
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatal("start after stop succeeded")
	}
	if _, err := schedule.New(nil, schedule.Config{Policy: b.policy}); err == nil {
		t.Fatal("New without JetStream")
	}
	if _, err := schedule.New(b.ns.JS, schedule.Config{Policy: b.policy, RecordTTL: time.Hour}); err == nil {
		t.Fatal("record TTL shorter than the catch-up window accepted")
	}
	if s.Replica() == "" {
		t.Fatal("no default replica name")
	}
}
