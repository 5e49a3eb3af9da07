package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
)

func restoreCmd() *cobra.Command {
	var tenant, customer, out, asOf, snap, class string
	var all bool
	cmd := &cobra.Command{
		Use:   "restore (--customer ID --tenant T | --all) --out DIR [--as-of TIME | --snapshot ID|latest [--class C]]",
		Short: "Restore one customer (latest, or as of a time) or all customers; or a snapshot",
		Long: `Restore reads each item from the first target that has a good copy, checks its SHA-256
against the manifest, authenticates every encrypted segment, and writes the newest version of
each record to DIR/<tenant>/<customer>/<record key>. It exits non-zero if any item fails to
verify. Erased customers are never restored; they are listed by pseudonym.

With --snapshot it restores exactly the state a snapshot read from a source describes (see
custos snapshots): the full snapshot it builds on, then each incremental up to it, with records
deleted at the source left out. "latest" means the newest complete snapshot of --class.`,
		Example: `  custos restore --config custos.yaml --tenant shop --customer c-0042 --out ./restored
  custos restore --config custos.yaml --all --out ./restored --as-of 2026-11-01T00:00:00Z
  custos restore --config custos.yaml --all --snapshot latest --class critical --out ./restored`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (customer != "") {
				return fmt.Errorf("give exactly one of --all or --customer")
			}
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			var opts restore.Options
			opts.Out = out
			if asOf != "" {
				t, err := time.Parse(time.RFC3339, asOf)
				if err != nil {
					return fmt.Errorf("--as-of must be RFC 3339, like 2026-11-01T00:00:00Z: %w", err)
				}
				opts.AsOf = t
			}
			if snap != "" && asOf != "" {
				return fmt.Errorf("give --as-of or --snapshot, not both: a snapshot has its own time")
			}
			if snap == "latest" && class == "" {
				return fmt.Errorf("--snapshot latest needs --class")
			}
			parts, err := openParts(cmd, "custos-restore")
			if err != nil {
				return err
			}
			defer parts.Close()
			var rep restore.Report
			if snap != "" {
				rep, err = runSnapshotRestore(cmd, parts, snap, class, tenant, customer, opts)
			} else {
				rep, err = runRestore(cmd, parts, tenant, customer, all, opts)
			}
			if err != nil {
				return err
			}
			fmt.Printf("restored customers=%d records=%d items=%d bytes=%d erased_skipped=%d failures=%d\n",
				rep.Customers, rep.Records, rep.Items, rep.Bytes, len(rep.Erased), len(rep.Failures))
			for _, f := range rep.Failures {
				fmt.Fprintln(os.Stderr, "FAILED:", f)
			}
			if !rep.OK() {
				return &exitError{code: 2, msg: fmt.Sprintf("%d items failed to verify", len(rep.Failures))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the customer")
	cmd.Flags().StringVar(&customer, "customer", "", "customer id to restore")
	cmd.Flags().BoolVar(&all, "all", false, "restore every customer")
	cmd.Flags().StringVar(&out, "out", "", "directory to write restored records to")
	cmd.Flags().StringVar(&asOf, "as-of", "", "restore records as they were at this time (RFC 3339)")
	cmd.Flags().StringVar(&snap, "snapshot", "", `restore this snapshot (an id from "custos snapshots", or latest)`)
	cmd.Flags().StringVar(&class, "class", "", "data class, for --snapshot latest")
	return cmd
}

func runSnapshotRestore(cmd *cobra.Command, parts *config.Parts, id, class, tenant, customer string, opts restore.Options) (restore.Report, error) {
	ctx := cmd.Context()
	if id == "latest" {
		head, err := parts.Snapshots.Head(ctx, class)
		if err != nil {
			return restore.Report{}, err
		}
		id = head.ID
	}
	chain, err := parts.Snapshots.Chain(ctx, id)
	if err != nil {
		return restore.Report{}, err
	}
	var pseudonym string
	if customer != "" {
		pseudonym = parts.KMS.Pseudonym(tenant, customer)
	}
	r := &restore.Restorer{Index: parts.Index, Targets: readerList(parts.Targets), Keys: parts.Keys, Pseudonyms: parts.KMS,
		Logger: logger(), Progress: progress()}
	defer fmt.Fprint(os.Stderr, "\r\033[K")
	fmt.Fprintf(os.Stderr, "snapshot %s (%s, %d in chain)\n", id, chain[len(chain)-1].Method, len(chain))
	return r.Snapshot(ctx, chain, pseudonym, opts)
}

func readerList(ts []target.Target) []target.Reader {
	readers := make([]target.Reader, len(ts))
	for i, t := range ts {
		readers[i] = t
	}
	return readers
}

func runRestore(cmd *cobra.Command, parts *config.Parts, tenant, customer string, all bool, opts restore.Options) (restore.Report, error) {
	r := &restore.Restorer{Index: parts.Index, Targets: readerList(parts.Targets), Keys: parts.Keys, Pseudonyms: parts.KMS,
		Logger: logger(), Progress: progress()}
	defer fmt.Fprint(os.Stderr, "\r\033[K")
	if all {
		return r.All(cmd.Context(), opts)
	}
	return r.Customer(cmd.Context(), tenant, customer, opts)
}

// progress prints "items done/total" on a terminal, at most ten times a second.
func progress() func(done, total int) {
	fi, err := os.Stderr.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	var last time.Time
	return func(done, total int) {
		if now := time.Now(); now.Sub(last) > 100*time.Millisecond || done == total {
			last = now
			fmt.Fprintf(os.Stderr, "\rrestoring items %d/%d", done, total)
		}
	}
}
