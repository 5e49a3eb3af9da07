package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Progress is how far a running task has got, reported by its worker every few seconds so that
// `custos jobs` can show records, bytes, rate and an ETA before the task is durable. It is
// advisory: only the task's result (Done) counts, and the worker removes its progress once the
// result is recorded.
type Progress struct {
	Job     string    `json:"job"`
	Task    int       `json:"task"`
	Records int64     `json:"records"` // records read from the source so far
	Bytes   int64     `json:"bytes"`   // record bytes read so far
	Stored  int64     `json:"stored"`  // encrypted bytes in durable packs so far
	Updated time.Time `json:"updated"`
}

func progressKey(job string, n int) string { return "progress." + job + "." + strconv.Itoa(n) }

// ReportProgress records p, replacing the task's earlier report.
func (s *Store) ReportProgress(ctx context.Context, p Progress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := s.jobs.Put(ctx, progressKey(p.Job, p.Task), b); err != nil {
		return fmt.Errorf("snapshot: progress of task %d of job %s: %w", p.Task, p.Job, err)
	}
	return nil
}

// ClearProgress removes a task's progress report (its result has been recorded).
func (s *Store) ClearProgress(ctx context.Context, job string, n int) error {
	if err := s.jobs.Purge(ctx, progressKey(job, n)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("snapshot: clear progress of task %d of job %s: %w", n, job, err)
	}
	return nil
}

// Progress returns the progress reports of a job's running tasks, in task order.
func (s *Store) Progress(ctx context.Context, job string) ([]Progress, error) {
	var out []Progress
	err := s.each(ctx, s.jobs, "progress."+job+".*", func(b []byte) error {
		var p Progress
		if err := getJSON(b, &p, "task progress"); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Task < out[j].Task })
	return out, err
}
