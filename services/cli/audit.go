package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
)

func auditCmd() *cobra.Command {
	var limit int
	var kind string
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--kind manual|suspicious_activity]",
		Short: "List the audit log: manual backup requests and suspicious-activity alerts",
		Long: `Audit lists the entries of the audit stream (CUSTOS_AUDIT), oldest first: when the
worker handled the trigger, its kind, class, the customer's pseudonym (never the raw id),
severity, outcome, the packs that hold its records, the event id, who asked or detected it, and
the reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && kind != audit.KindManual && kind != audit.KindSuspicious {
				return fmt.Errorf("--kind %q: give %s or %s", kind, audit.KindManual, audit.KindSuspicious)
			}
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			nc, js, err := connectNATS(cfg, "custos-audit")
			if err != nil {
				return err
			}
			defer nc.Drain()
			entries, err := audit.List(cmd.Context(), js, 0)
			if err != nil {
				return err
			}
			var shown []audit.Entry
			for _, e := range entries {
				if kind == "" || e.Kind == kind {
					shown = append(shown, e)
				}
			}
			if limit > 0 && len(shown) > limit {
				shown = shown[len(shown)-limit:]
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIME\tKIND\tCLASS\tCUSTOMER\tSEVERITY\tOUTCOME\tPACKS\tEVENT\tBY\tREASON")
			for _, e := range shown {
				by := e.RequestedBy
				if e.DetectedBy != "" {
					by = e.DetectedBy
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%q\n", e.Time.UTC().Format(time.RFC3339), e.Kind, e.Class,
					dash(e.Customer), dash(e.Severity), e.Outcome, dash(strings.Join(e.Packs, ",")), e.EventID, dash(by), e.Reason)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "show at most this many, newest last (0: all)")
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
