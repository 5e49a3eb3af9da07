package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/retention"
)

func retentionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Expire backups the policy no longer keeps",
	}
	cmd.AddCommand(retentionSweepCmd())
	return cmd
}

func retentionSweepCmd() *cobra.Command {
	var policyPath string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "sweep --config FILE --policy FILE [--dry-run]",
		Short: "Delete the packs no retention rule keeps",
		Long: `Sweep applies each class's retention rules (keep_last, daily, weekly, monthly, yearly,
min) to the packs in the catalog and deletes every pack no rule keeps: the pack object from every
target, then its manifest, then its index entries. It never deletes the newest pack of a class,
a pack holding some customer's latest item, or a pack younger than the class's minimum
retention. A pack a target refuses to delete (object lock, legal hold) stays, indexed, and is
reported as locked. It prints one line per pack and a summary; with --dry-run it deletes
nothing. It exits 2 when a pack could not be deleted for another reason.`,
		Example: `  custos retention sweep --config custos.yaml --policy policy.yaml --dry-run`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			p, err := cfg.PolicyOr(policyPath)
			if err != nil {
				return err
			}
			if p == nil {
				return fmt.Errorf("no policy: name it in the configuration (policy: FILE) or give --policy; retention deletes what the policy no longer keeps")
			}
			parts, err := open(cmd.Context(), cfg, "custos-retention")
			if err != nil {
				return err
			}
			defer parts.Close()
			rc := retention.Config{Index: parts.Index, Policy: p, Targets: parts.Targets, Snapshots: parts.Snapshots, Logger: logger()}
			if !dryRun {
				// Expiry is recorded in the audit log; a role that may not append is warned below.
				if log, err := audit.Open(cmd.Context(), parts.JS); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: the expiries of this sweep will not be recorded in the audit log: %v\n", err)
				} else {
					rc.Audit = log
				}
			}
			s, err := retention.New(rc)
			if err != nil {
				return err
			}
			rep, err := s.Sweep(cmd.Context(), time.Now(), dryRun)
			if err != nil {
				return err
			}
			if err := printSweep(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if rep.AuditErr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: the expiries were not all recorded in the audit log: %v\n", rep.AuditErr)
			}
			if rep.Failed > 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("%d packs could not be deleted: %v", rep.Failed, rep.Err())}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the decisions, delete nothing")
	return cmd
}

// printSweep writes one line per pack (action, pack, class, newest event, outcome, reason) and
// a summary line.
func printSweep(w io.Writer, rep retention.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tPACK\tCLASS\tNEWEST EVENT\tOUTCOME\tREASON")
	for _, d := range rep.Decisions {
		action := "delete"
		if d.Keep {
			action = "keep"
		}
		outcome := string(d.Outcome)
		if len(d.Locked) > 0 {
			outcome += "(" + strings.Join(d.Locked, ",") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", action, d.Pack.Pack, d.Pack.Class,
			d.Pack.NewestEvent.UTC().Format(time.RFC3339), outcome, d.Reason())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := "deleted"
	if rep.DryRun {
		verb = "would_delete"
	}
	_, err := fmt.Fprintf(w, "packs=%d kept=%d %s=%d locked=%d failed=%d dry_run=%t\n",
		len(rep.Decisions), rep.Kept, verb, rep.Deleted, rep.Locked, rep.Failed, rep.DryRun)
	return err
}
