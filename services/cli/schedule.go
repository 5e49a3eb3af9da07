package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/schedule"
)

func scheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Show what the scheduler publishes",
	}
	cmd.AddCommand(schedulePreviewCmd())
	return cmd
}

func schedulePreviewCmd() *cobra.Command {
	var policyPath, from, to string
	var utc bool
	cmd := &cobra.Command{
		Use:   "preview [--policy FILE] [--from DATE] [--to DATE] [--utc]",
		Short: "List every schedule tick and compliance deadline due in a window",
		Long: `Preview lists, one per line, every schedule tick and compliance deadline the scheduler
publishes in [--from, --to): due time, kind, class, name, method and the event id. The ids are
the ones the scheduler uses. Dates are YYYY-MM-DD (00:00 in the policy's timezone) or RFC 3339.
Without --policy the built-in default policy (seed 002) is used. Times are shown in each
event's zone (the class's for ticks, the policy's for deadlines), or in UTC with --utc.`,
		Example: `  custos schedule preview --from 2027-01-01 --to 2027-02-01
  custos schedule preview --policy deploy/policy.example.yaml --from 2027-03-27 --to 2027-03-30`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := policy.Default()
			if policyPath != "" {
				var err error
				if p, err = policy.Load(policyPath); err != nil {
					return err
				}
			}
			start, end, err := previewWindow(p, from, to, time.Now())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIME\tKIND\tCLASS\tNAME\tMETHOD\tID")
			for _, e := range schedule.Compute(p, start, end) {
				due, method := e.Due, e.Method
				if utc {
					due = due.UTC()
				}
				if method == "" {
					method = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", due.Format(time.RFC3339), e.Kind, e.Class, e.Name, method, e.ID)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the built-in default policy)")
	cmd.Flags().StringVar(&from, "from", "", "start of the window, inclusive (default: today)")
	cmd.Flags().StringVar(&to, "to", "", "end of the window, exclusive (default: 7 days after --from)")
	cmd.Flags().BoolVar(&utc, "utc", false, "show times in UTC")
	return cmd
}

// previewWindow parses --from and --to; dates are midnight in the policy's timezone.
func previewWindow(p *policy.Policy, from, to string, now time.Time) (time.Time, time.Time, error) {
	parse := func(flag, s string) (time.Time, error) {
		if t, err := time.ParseInLocation(time.DateOnly, s, p.Location); err == nil {
			return t, nil
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("--%s %q: give a date (2027-01-01) or an RFC 3339 time (2027-01-01T02:00:00Z)", flag, s)
		}
		return t, nil
	}
	n := now.In(p.Location)
	start := time.Date(n.Year(), n.Month(), n.Day(), 0, 0, 0, 0, p.Location)
	var err error
	if from != "" {
		if start, err = parse("from", from); err != nil {
			return time.Time{}, time.Time{}, err
		}
	}
	end := start.AddDate(0, 0, 7)
	if to != "" {
		if end, err = parse("to", to); err != nil {
			return time.Time{}, time.Time{}, err
		}
	}
	if !end.After(start) {
		return time.Time{}, time.Time{}, fmt.Errorf("--to %s is not after --from %s", end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	return start, end, nil
}
