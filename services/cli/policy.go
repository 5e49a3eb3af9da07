package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/policy"
)

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check a backup policy file, or print the default policy",
	}
	cmd.AddCommand(policyCheckCmd(), policyDefaultCmd())
	return cmd
}

func policyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Check a policy file: OK with a summary per class, or every error with its line",
		Long: `Check parses the policy file and applies every rule of docs/policy.md: unknown keys, cron
expressions, durations, 3-2-1, retention against the RPO, schedule gaps against the RPO,
immutability, deadlines. It prints OK and a summary per class, or every error as
FILE:LINE:COLUMN: message (rule NAME), and exits 1 on errors. Warnings (rules overridden with
a reason) are printed but do not fail the check.`,
		Example: `  custos policy check deploy/policy.example.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			p, err := policy.Load(args[0])
			if err != nil {
				errs := policy.Errors(err)
				for _, e := range errs {
					fmt.Fprintln(out, e)
				}
				return &exitError{code: 1, msg: fmt.Sprintf("policy %s: %d %s", args[0], len(errs), countNoun(len(errs), "error", "errors"))}
			}
			printPolicy(out, p)
			return nil
		},
	}
}

func policyDefaultCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "default",
		Short: "Print the built-in default policy (seed 002), with comments citing the seeds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(policy.DefaultYAML())
			return err
		},
	}
}

// printPolicy writes OK and one summary line per class, then the warnings.
func printPolicy(w io.Writer, p *policy.Policy) {
	fmt.Fprintf(w, "OK %s: tenant %s, %d %s, %d %s, catch-up %s\n", p.File, p.Tenant,
		len(p.Classes), countNoun(len(p.Classes), "class", "classes"),
		len(p.Deadlines), countNoun(len(p.Deadlines), "deadline", "deadlines"), policy.FormatDuration(p.CatchUp))
	for _, c := range p.Classes {
		fmt.Fprintf(w, "  %s: %s; %s; %s; %s; RPO %s, RTO %s; %s\n", c.Name, summarySchedules(c), summaryRetention(c.Retention),
			summaryTargets(p, c), summaryImmutability(c.Immutability), policy.FormatDuration(c.RPO), policy.FormatDuration(c.RTO),
			summaryDrill(c.Drill))
	}
	for _, d := range p.Deadlines {
		fmt.Fprintf(w, "  deadline %s: %s for %s\n", d.Name, summaryDeadline(p, d), strings.Join(d.Classes, ", "))
	}
	for _, warn := range p.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
}

func summaryDrill(d *policy.Drill) string {
	if d == nil {
		return "no drills"
	}
	return fmt.Sprintf("drill %q, sample %s per target", d.Cron, d.Sample)
}

func summarySchedules(c *policy.Class) string {
	var parts []string
	for _, s := range c.Schedules {
		part := fmt.Sprintf("%s %q %s", s.Name, s.Cron, s.Method)
		if s.FullEvery > 0 {
			part += fmt.Sprintf(" (every %dth full)", s.FullEvery)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ") + " " + c.Location.String()
}

func summaryRetention(r policy.Retention) string {
	parts := []string{"keep min " + policy.FormatDuration(r.Min)}
	for _, k := range []struct {
		name string
		n    int
	}{{"last", r.KeepLast}, {"daily", r.Daily}, {"weekly", r.Weekly}, {"monthly", r.Monthly}, {"yearly", r.Yearly}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.name, k.n))
		}
	}
	return strings.Join(parts, ", ")
}

func summaryTargets(p *policy.Policy, c *policy.Class) string {
	var kinds []string
	offsite := 0
	for _, name := range c.Targets {
		t := p.Target(name)
		kinds = append(kinds, name+"="+t.Kind)
		if t.Offsite {
			offsite++
		}
	}
	return fmt.Sprintf("%d of %d targets (%s; %d off-site)", c.Replicas, len(c.Targets), strings.Join(kinds, ", "), offsite)
}

func summaryImmutability(im policy.Immutability) string {
	s := "immutability " + im.Mode
	if im.Mode != policy.ImmutabilityNone {
		s += fmt.Sprintf(" %dd", im.RetainDays)
	}
	if im.LegalHoldOnSuspicious {
		s += ", legal hold on suspicious activity"
	}
	return s
}

func summaryDeadline(p *policy.Policy, d *policy.Deadline) string {
	switch d.Kind {
	case policy.DeadlineDate:
		return d.Date.In(p.Location).Format("2006-01-02T15:04:05Z07:00")
	case policy.DeadlineEndOfFiscalYear:
		end := p.FiscalYearStartMonth - 1
		if end == 0 {
			end = 12
		}
		return fmt.Sprintf("last day of %s at %02d:%02d %s", end, d.Hour, d.Minute, p.Location)
	}
	return fmt.Sprintf("last day of each month at %02d:%02d %s", d.Hour, d.Minute, p.Location)
}

func countNoun(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
