package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
)

func rpoCmd() *cobra.Command {
	var policyPath, tenant, customer string
	cmd := &cobra.Command{
		Use:   "rpo --config FILE [--policy FILE] [--customer ID --tenant T]",
		Short: "Show how old the newest backup of each class is against its RPO",
		Long: `Rpo prints one line per class: the class, the age of its newest committed backup, its RPO,
and OK or BREACH. A class with no backup is in breach. With --customer and --tenant it looks
at one customer's post-transaction data instead: per class in which the customer has items,
the age of the newest pack holding them (a customer who changed nothing lately ages too). The
customer is shown by pseudonym only. Without --policy, the policy the configuration names, else the
built-in default policy, is used.
It exits 3 when any line is in breach.`,
		Example: `  custos rpo --config custos.yaml --policy policy.yaml
  custos rpo --config custos.yaml --tenant shop --customer c-0042`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (customer == "") != (tenant == "") {
				return fmt.Errorf("give --customer and --tenant together")
			}
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
				p = policy.Default()
			}
			parts, err := open(cmd.Context(), cfg, "custos-rpo")
			if err != nil {
				return err
			}
			defer parts.Close()
			ctx := cmd.Context()
			now := time.Now()
			packs, err := parts.Index.Packs(ctx)
			if err != nil {
				return err
			}
			var st []rpo.Status
			if customer == "" {
				snaps, err := parts.Snapshots.List(ctx, "")
				if err != nil {
					return err
				}
				st = rpo.Compute(p, rpo.WithSnapshots(packs, snaps), now)
			} else {
				pseudonym := parts.KMS.Pseudonym(tenant, customer)
				recs, err := parts.Index.Customer(ctx, pseudonym)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "customer %s\n", pseudonym)
				st = rpo.ForCustomer(p, recs, packs, now)
				if len(st) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no backed-up items")
				}
			}
			if err := printRPO(cmd.OutOrStdout(), st); err != nil {
				return err
			}
			if n := breaches(st); n > 0 {
				return &exitError{code: 3, msg: fmt.Sprintf("RPO breached for %d class(es)", n)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the built-in default policy)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the customer")
	cmd.Flags().StringVar(&customer, "customer", "", "customer id: show this customer's backups only")
	return cmd
}

func breaches(st []rpo.Status) int {
	n := 0
	for _, s := range st {
		if s.Breached {
			n++
		}
	}
	return n
}

// printRPO writes one line per status: class, newest backup age, RPO, OK or BREACH.
func printRPO(w io.Writer, st []rpo.Status) error {
	if len(st) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tNEWEST BACKUP AGE\tRPO\tSTATUS")
	for _, s := range st {
		age := "none"
		if !s.Newest.IsZero() {
			unit := time.Minute // an hour or more old: seconds are noise
			if s.Age < time.Hour {
				unit = time.Second
			}
			age = policy.FormatDuration(s.Age.Round(unit))
		}
		status := "OK"
		if s.Breached {
			status = "BREACH"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Class, age, policy.FormatDuration(s.RPO), status)
	}
	return tw.Flush()
}
