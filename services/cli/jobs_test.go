package main

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
)

// TestJobsAndSnapshots: custos jobs shows a running job's progress (tasks durable of total,
// records, bytes) and a committed one's state; custos snapshots lists the committed snapshot.
func TestJobsAndSnapshots(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	store := s.parts.Snapshots
	created := time.Now().Add(-10 * time.Second).UTC()
	job := snapshot.Job{ID: snapshot.JobID("tick-1"), Class: "critical", Method: source.Full, Trigger: "schedule_tick",
		Time: created, Tasks: source.Ranges([]string{"m"}), Created: created, NextCursor: []byte(`{}`)}
	if _, _, err := store.Plan(ctx, job); err != nil {
		t.Fatal(err)
	}
	done := func(n int) {
		if err := store.Done(ctx, snapshot.TaskResult{Job: job.ID, Task: n, Records: 10, Bytes: 5 << 20, Stored: 3 << 20,
			Done: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	done(0)
	// Task 1 is running: its worker's last report counts until its result is recorded.
	progress := func(id string, n int, records int64) {
		if err := store.ReportProgress(ctx, snapshot.Progress{Job: id, Task: n, Records: records, Bytes: 2 << 20,
			Stored: 1 << 20, Updated: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	progress(job.ID, 1, 4)
	out, err := s.run(t, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	// No ETA yet: no earlier full snapshot says how many records to expect.
	row := regexp.MustCompile(job.ID + `\s+critical\s+full\s+running\s+1/2\s+14\s+7\.0 MiB\s+4\.0 MiB\s+\d+(\.\d+)? KiB/s\s+-\s`)
	if !row.MatchString(out) {
		t.Fatalf("jobs output lacks the running job's progress:\n%s", out)
	}
	done(1)
	if _, err := store.Commit(ctx, job.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if out, err = s.run(t, "jobs", "--class", "critical"); err != nil || !strings.Contains(out, "committed") || !strings.Contains(out, "2/2") {
		t.Fatalf("jobs after commit: %v\n%s", err, out)
	}
	if out, err = s.run(t, "jobs", "--class", "other"); err != nil || strings.Contains(out, job.ID) {
		t.Fatalf("jobs --class other shows another class's job: %v\n%s", err, out)
	}
	// The next full snapshot's ETA comes from this one's 20 records: 5 read in about 10 s.
	next := job
	next.ID, next.Created = snapshot.JobID("tick-2"), time.Now().Add(-10*time.Second).UTC()
	if _, _, err := store.Plan(ctx, next); err != nil {
		t.Fatal(err)
	}
	progress(next.ID, 0, 5)
	out, err = s.run(t, "jobs")
	m := regexp.MustCompile(next.ID + `\s+critical\s+full\s+running\s+0/2\s+5\s.*\s(\d+)s\s`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("jobs: the second full snapshot has no ETA: %v\n%s", err, out)
	}
	if eta, _ := strconv.Atoi(m[1]); eta < 25 || eta > 40 {
		t.Fatalf("jobs: ETA %ds, want about 30 s (15 records left at 1 every 2 s)\n%s", eta, out)
	}
	out, err = s.run(t, "snapshots")
	if err != nil || !regexp.MustCompile(job.ID+`\s+critical\s+full\s+-\s+\S+\s+20\s`).MatchString(out) {
		t.Fatalf("snapshots: %v\n%s", err, out)
	}
	if _, err := s.run(t, "restore", "--all", "--out", t.TempDir(), "--snapshot", "latest"); err == nil ||
		!strings.Contains(err.Error(), "--class") {
		t.Fatalf("restore --snapshot latest without --class: %v", err)
	}
}
