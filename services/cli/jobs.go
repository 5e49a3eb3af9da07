package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/source"
)

func openParts(cmd *cobra.Command, name string, opts ...config.OpenOption) (*config.Parts, error) {
	cfgPath, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	return open(cmd.Context(), cfg, name, opts...)
}

func jobsCmd() *cobra.Command {
	var class string
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "jobs --config FILE [--class C] [--watch 2s]",
		Short: "Show snapshot jobs: tasks done of total, bytes, rate and state",
		Long: `Jobs prints one line per snapshot job, newest first: its id, class, method, state (running,
committed or failed), tasks durable of total, records read, record bytes read from the source,
encrypted bytes stored, the read rate since the job was planned, and for a running full
snapshot an ETA (from the records of the class's last full snapshot; "-" when there is none).
A running job counts its durable tasks and what its running tasks last reported (every 2 s).
With --watch it prints the table again at that interval until every job shown has ended (or
Ctrl-C).`,
		Example: `  custos jobs --config custos.yaml
  custos jobs --config custos.yaml --class critical --watch 2s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			parts, err := openParts(cmd, "custos-jobs")
			if err != nil {
				return err
			}
			defer parts.Close()
			for {
				running, err := printJobs(cmd.Context(), cmd.OutOrStdout(), parts.Snapshots, class, time.Now())
				if err != nil {
					return err
				}
				if watch <= 0 || running == 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
		},
	}
	cmd.Flags().StringVar(&class, "class", "", "only jobs of this data class")
	cmd.Flags().DurationVar(&watch, "watch", 0, "print again at this interval while jobs run")
	return cmd
}

// printJobs writes the jobs table and returns how many jobs are still running.
func printJobs(ctx context.Context, out io.Writer, store *snapshot.Store, class string, now time.Time) (int, error) {
	jobs, err := store.Jobs(ctx)
	if err != nil {
		return 0, err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tCLASS\tMETHOD\tSTATE\tTASKS\tRECORDS\tREAD\tSTORED\tRATE\tETA\tSTARTED")
	running := 0
	for _, j := range jobs {
		if class != "" && j.Class != class {
			continue
		}
		rs, err := store.Results(ctx, j.ID)
		if err != nil {
			return 0, err
		}
		var records, read, stored int64
		end := now
		for _, r := range rs {
			records += r.Records
			read += r.Bytes
			stored += r.Stored
		}
		state := "running"
		if sn, err := store.Get(ctx, j.ID); err == nil {
			state, end = "committed", sn.Committed
		} else if j.Failed != "" {
			state = "failed: " + j.Failed
		} else {
			running++
			// Tasks not durable yet count with what their workers last reported.
			ps, err := store.Progress(ctx, j.ID)
			if err != nil {
				return 0, err
			}
			for _, p := range ps {
				if !doneTask(rs, p.Task) {
					records += p.Records
					read += p.Bytes
					stored += p.Stored
				}
			}
		}
		if state != "running" && len(rs) > 0 {
			end = rs[len(rs)-1].Done
			for _, r := range rs {
				if r.Done.After(end) {
					end = r.Done
				}
			}
		}
		rate := "-"
		if d := end.Sub(j.Created).Seconds(); d > 0 && read > 0 {
			rate = humanBytes(int64(float64(read)/d)) + "/s"
		}
		eta := "-"
		if state == "running" {
			eta = estimate(ctx, store, j, records, end.Sub(j.Created))
		}
		method := string(j.Method)
		if j.Partial {
			method += " (partial)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Class, method, state, len(rs), len(j.Tasks),
			records, humanBytes(read), humanBytes(stored), rate, eta, j.Created.Local().Format(time.DateTime))
	}
	return running, tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func snapshotsCmd() *cobra.Command {
	var class string
	cmd := &cobra.Command{
		Use:   "snapshots --config FILE [--class C]",
		Short: "List committed snapshots, oldest first",
		Long: `Snapshots lists the committed snapshots read from sources: id, class, method, the snapshot it
builds on, its time, records listed, items uploaded and items reused from earlier snapshots
(unchanged records are not stored again). Restore one with
custos restore --snapshot ID --out DIR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			parts, err := openParts(cmd, "custos-snapshots")
			if err != nil {
				return err
			}
			defer parts.Close()
			list, err := parts.Snapshots.List(cmd.Context(), class)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SNAPSHOT\tCLASS\tMETHOD\tBASE\tTIME\tRECORDS\tUPLOADED\tREUSED\tSTORED")
			for _, s := range list {
				method := string(s.Method)
				if s.Partial {
					method += " (partial)"
				}
				if s.Hold {
					method += " (legal hold)"
				}
				base := s.Base
				if base == "" {
					base = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", s.ID, s.Class, method, base,
					s.Time.UTC().Format(time.RFC3339), s.Records, s.Uploaded, s.Reused, humanBytes(s.Stored))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&class, "class", "", "only snapshots of this data class")
	return cmd
}

func doneTask(rs []snapshot.TaskResult, task int) bool {
	for _, r := range rs {
		if r.Task == task {
			return true
		}
	}
	return false
}

// estimate is the time a running full snapshot still needs: the records of the class's last
// committed full snapshot are the total expected, and the records read so far in elapsed give
// the rate. It is "-" without an earlier full snapshot (the first one, or an incremental, whose
// size nothing predicts) or before anything was read.
func estimate(ctx context.Context, store *snapshot.Store, j snapshot.Job, records int64, elapsed time.Duration) string {
	if j.Method != source.Full || j.Partial || records <= 0 || elapsed <= 0 {
		return "-"
	}
	list, err := store.List(ctx, j.Class)
	if err != nil {
		return "-"
	}
	var total int64
	var at time.Time
	for _, sn := range list {
		if sn.Method == source.Full && !sn.Partial && sn.ID != j.ID && sn.Committed.After(at) {
			total, at = sn.Records, sn.Committed
		}
	}
	if total <= 0 {
		return "-"
	}
	left := max(total-records, 0)
	return (time.Duration(float64(elapsed) * float64(left) / float64(records))).Round(time.Second).String()
}
