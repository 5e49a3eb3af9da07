package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

const drillPolicy = `version: 1
tenant: t1
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  critical:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 30d, daily: 30}
    targets: [a, b, c]
    rpo: 48h
    rto: 48h
    drill: {sample: 20}
`

func drillTick(id string) *custosv1.ScheduleTick {
	return &custosv1.ScheduleTick{Meta: &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", DataClass: "critical"},
		Schedule: "drill", Method: event.MethodDrill, ScheduledFor: timestamppb.Now()}
}

// TestDrillTrigger: a ScheduleTick with method "drill" makes the worker drill the class from
// each of its targets; the results are in the audit log and the event is acknowledged, even
// when a target's drill fails (the failure is alerted, not retried).
func TestDrillTrigger(t *testing.T) {
	p, err := policy.Parse("policy.yaml", []byte(drillPolicy))
	if err != nil {
		t.Fatal(err)
	}
	var alerted []drill.Result
	alerts := make(chan struct{}, 3)
	b := setup(t, func(c *Config) {
		c.AckWait = time.Second // a drill held longer than this must get heartbeats, not a redelivery
		c.Drill = DrillConfig{Policy: p, Alert: func(_ context.Context, r drill.Result) {
			alerted = append(alerted, r)
			alerts <- struct{}{}
		}}
	})
	w := b.startWorker()
	b.publish(60, 6)
	b.waitSettled()
	// Target b is down: its drill fails; a and c pass. Target a is slow, so the drill outlasts
	// AckWait: the heartbeat must keep the event from being redelivered mid-run.
	b.faults[1].Down()
	b.faults[0].Delay(100 * time.Millisecond)
	if _, err := b.producer.PublishScheduleTick(context.Background(), drillTick("drill.t1.critical.1")); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	b.faults[1].Up()
	b.faults[0].Delay(0)
	var drills []audit.Entry
	entries, _ := b.auditEntries()
	for _, e := range entries {
		if e.Kind == audit.KindDrill {
			drills = append(drills, e)
		}
	}
	if len(drills) != 3 {
		t.Fatalf("%d drill entries: %+v", len(drills), drills)
	}
	for i, e := range drills {
		wantOutcome := audit.OutcomePassed
		if i == 1 {
			wantOutcome = audit.OutcomeFailed
		}
		if e.Outcome != wantOutcome || e.Targets[0] != b.targets[i].Name() || e.EventID != "drill.t1.critical.1/"+b.targets[i].Name() {
			t.Fatalf("entry %d: %+v", i, e)
		}
		if wantOutcome == audit.OutcomePassed && (e.Figures.Items != 20 || e.Figures.RTOSeconds != 48*3600) {
			t.Fatalf("entry %d figures %+v", i, e.Figures)
		}
	}
	<-alerts
	if len(alerted) != 1 || alerted[0].Target != b.targets[1].Name() || !strings.Contains(alerted[0].Reason, "could not be read") {
		t.Fatalf("alerted %+v", alerted)
	}
	if st := w.Stats(); st.DeadLettered != 0 || st.Redelivered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDrillTriggerWithoutPolicy: a worker given no drill policy dead-letters a drill trigger,
// so a drill nobody runs is visible.
func TestDrillTriggerWithoutPolicy(t *testing.T) {
	b := setup(t)
	b.startWorker()
	if _, err := b.producer.PublishScheduleTick(context.Background(), drillTick("drill.t1.critical.2")); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	dl := b.dlq()
	if len(dl) != 1 || !strings.Contains(dl[0].Header.Get(HeaderDLQReason), "no policy for the class") {
		t.Fatalf("dead letters: %v", dl)
	}
}
