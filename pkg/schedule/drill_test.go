package schedule_test

import (
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/schedule"
)

// TestDrills: every class's drill falls due on its drill cron, with a deterministic id, after a
// tick due at the same instant; NextDue sees drills.
func TestDrills(t *testing.T) {
	p := parse(t, `version: 1
tenant: acme
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    schedules: [{name: daily, cron: "0 6 * * *"}]
    retention: {min: 30d}
    targets: [a, b, c]
    rpo: 2d
    rto: 1d
    drill: {cron: "0 6 1 1,4,7,10 *", sample: all}
  d:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 30d}
    targets: [a, b, c]
    rpo: 2d
    rto: 1d
`)
	var drills []schedule.Event
	events := schedule.Compute(p, date(2027, 1, 1), date(2028, 1, 1))
	for i, e := range events {
		if e.Kind != schedule.KindDrill {
			continue
		}
		drills = append(drills, e)
		// The tick of the same class and instant comes first: the drill checks what it wrote.
		if e.Class == "c" && (i == 0 || events[i-1].Kind != schedule.KindTick || !events[i-1].Due.Equal(e.Due)) {
			t.Fatalf("drill %s not right after its tick", e.ID)
		}
	}
	var got []string
	for _, e := range drills {
		if e.Name != schedule.DrillName || e.Method != event.MethodDrill || e.ID != schedule.DrillID("acme", e.Class, e.Due) {
			t.Fatalf("drill %+v", e)
		}
		got = append(got, e.Class+" "+e.Due.Format(time.DateTime))
	}
	want := []string{
		"c 2027-01-01 06:00:00", "d 2027-02-15 06:00:00", "c 2027-04-01 06:00:00", "d 2027-05-15 06:00:00",
		"c 2027-07-01 06:00:00", "d 2027-08-15 06:00:00", "c 2027-10-01 06:00:00", "d 2027-11-15 06:00:00",
	}
	if len(got) != len(want) {
		t.Fatalf("drills %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("drills %v, want %v", got, want)
		}
	}
	if drills[0].ID != "drill.acme.c.1798783200" {
		t.Fatalf("id %s", drills[0].ID)
	}
	// Only drills left: NextDue finds them.
	only := parse(t, `version: 1
tenant: acme
targets: [{name: a, kind: fs}, {name: b, kind: s3}, {name: c, kind: s3, offsite: true}]
classes:
  c:
    schedules: [{name: leap, cron: "0 0 29 2 *"}]
    retention: {min: 2000d}
    targets: [a, b, c]
    rpo: 2000d
    rto: 1d
`)
	if got := schedule.NextDue(only, date(2027, 1, 1)); !got.Equal(time.Date(2027, 2, 15, 6, 0, 0, 0, time.UTC)) {
		t.Fatalf("NextDue %s", got)
	}
}
