package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/target"
)

func drillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drill",
		Short: "Restore drills: restore a sample of a class from each target and measure it against the RTO",
		Long: `A restore drill (docs/drills.md) restores a sample of a data class's items from each of the
class's targets in turn, from that target alone, into a scratch directory it removes afterwards,
verifies every item's checksum, measures the time, extrapolates it to the class's whole stored
size and compares the estimate with the class's RTO. The scheduler triggers drills as the
policy's drill schedule says (default quarterly, seed 002 3.4); these commands run one now and
list past ones.`,
	}
	cmd.AddCommand(drillRunCmd(), drillListCmd())
	return cmd
}

func drillRunCmd() *cobra.Command {
	var class, sampleFlag string
	var targets []string
	cmd := &cobra.Command{
		Use:   "run --class CLASS [--target T ...] [--sample N|P%|all]",
		Short: "Run a restore drill of one class now and print the measured figures per target",
		Long: `Run drills one class now, from each of its targets in turn (or those --target names), and
prints per target: items restored and checked, their plaintext bytes, the wall time, the rate
(MB/s of stored bytes), the class's stored size, the estimated time to restore all of it from
that target, the class's RTO, and PASS or FAIL with the reason. Each result is written to the
audit log (kind drill). It exits 1 when any target's drill failed.

--sample overrides the policy's drill sample: a number of items, a percentage of the class's
items, or all.`,
		Example: `  custos drill run --config custos.yaml --class critical
  custos drill run --config custos.yaml --class critical --target offsite --sample all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if class == "" {
				return fmt.Errorf("--class is required")
			}
			var sample *policy.Sample
			if sampleFlag != "" {
				s, err := policy.ParseSample(sampleFlag)
				if err != nil {
					return fmt.Errorf("--sample: %w", err)
				}
				sample = &s
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			p := cfg.Policy()
			if p.Class(class) == nil {
				return fmt.Errorf("class %q is not in the policy (classes: %s)", class, strings.Join(p.ClassNames(), ", "))
			}
			cl, ok := cfg.Classes[class]
			if !ok {
				return fmt.Errorf("class %q is not in the configuration's classes", class)
			}
			parts, err := open(cmd.Context(), cfg, "custos-drill")
			if err != nil {
				return err
			}
			defer parts.Close()
			log, err := audit.Open(cmd.Context(), parts.JS)
			if err != nil {
				return err
			}
			var readers []target.Reader
			for _, name := range cfg.TargetNames(cl.Targets) {
				for _, t := range parts.Targets {
					if t.Name() == name {
						readers = append(readers, t)
					}
				}
			}
			d, err := drill.New(drill.Config{Policy: p, Index: parts.Index, Targets: map[string][]target.Reader{class: readers},
				Keys: parts.Keys, Pseudonyms: parts.KMS, Audit: log, Logger: logger()})
			if err != nil {
				return err
			}
			results, err := d.Run(cmd.Context(), drill.Options{Class: class, Targets: targets, Sample: sample})
			printDrill(cmd, results)
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range results {
				if !r.Passed() {
					failed++
				}
			}
			if failed > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("restore drill of %s failed from %d of %d target(s)", class, failed, len(results))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&class, "class", "", "data class to drill (required)")
	cmd.Flags().StringSliceVar(&targets, "target", nil, "drill only this target (repeatable; default every target of the class)")
	cmd.Flags().StringVar(&sampleFlag, "sample", "", "items per target: a number, a percentage (5%) or all (default: the policy's)")
	return cmd
}

func printDrill(cmd *cobra.Command, results []drill.Result) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tSAMPLE\tITEMS\tBYTES\tSECONDS\tMB/S\tCLASS SIZE\tESTIMATED\tRTO\tRESULT\tREASON")
	for _, r := range results {
		f := r.Figures
		verdict := "PASS"
		if !r.Passed() {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%.3f\t%.2f\t%d\t%s\t%s\t%s\t%s\n", r.Target, r.Sample, f.Items, f.Bytes, f.Seconds,
			r.Rate()/1e6, f.ClassBytes, seconds(f.EstimatedSeconds), seconds(f.RTOSeconds), verdict, dash(r.Reason))
	}
	w.Flush()
}

// seconds shows a duration in seconds the way the policy writes durations (1d2h3m4s), with
// milliseconds under a minute.
func seconds(s float64) string {
	if s < 60 {
		return fmt.Sprintf("%.3fs", s)
	}
	return policy.FormatDuration(time.Duration(s * float64(time.Second)).Round(time.Second))
}

func drillListCmd() *cobra.Command {
	var class string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--class CLASS] [--limit N]",
		Short: "List recent restore drills from the audit log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			nc, js, err := connectNATS(cfg, "custos-drill")
			if err != nil {
				return err
			}
			defer nc.Drain()
			entries, err := audit.ListKind(cmd.Context(), js, audit.KindDrill)
			if err != nil {
				return err
			}
			shown := slices.DeleteFunc(entries, func(e audit.Entry) bool {
				return e.Kind != audit.KindDrill || e.Figures == nil || (class != "" && e.Class != class)
			})
			if limit > 0 && len(shown) > limit {
				shown = shown[len(shown)-limit:]
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIME\tCLASS\tTARGET\tOUTCOME\tITEMS\tSECONDS\tESTIMATED\tRTO\tREASON")
			for _, e := range shown {
				f := e.Figures
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%.3f\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Class,
					strings.Join(e.Targets, ","), e.Outcome, f.Items, f.Seconds, seconds(f.EstimatedSeconds),
					seconds(f.RTOSeconds), dash(e.Reason))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&class, "class", "", "only this class")
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many, newest last (0: all)")
	return cmd
}
