package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/repository"
)

func verifyCmd() *cobra.Command {
	var readData, noRepair bool
	var subset, class string
	cmd := &cobra.Command{
		Use:   "verify --config FILE [--read-data | --read-data-subset n/t] [--no-repair] [--class C]",
		Short: "Check every pack in every target of its class, and repair bad replicas",
		Long: `Verify checks, for every pack the index names, that each target of its class holds the pack
and its manifest with the recorded size, and the recorded SHA-256 where the target reports it
without a read (docs/design.md section 11, "Verify and scrub").

--read-data also downloads every replica: it checks the pack's SHA-256, authenticates the
manifest and every item it lists (the items of erased customers by SHA-256 only).
--read-data-subset n/t does so for the packs whose id, read as a number, is n-1 modulo t, and
checks the others as without --read-data: running 1/t to t/t reads everything once.

A missing or corrupt replica is repaired from a replica that verifies: the bad object is
deleted and the good bytes written create-only, then checked again, and the target is added to
the pack's index entry. An object under retention or legal hold cannot be deleted and is
reported as locked. With --no-repair nothing is changed.

It prints one line per problem on stderr (REPAIRED, CORRUPT, MISSING, UNREACHABLE, and
UNRECOVERABLE for an object with no good replica at all) and a summary on stdout. It exits 0
when there was no problem or every problem was repaired, and 2 otherwise.`,
		Example: `  custos verify --config custos.yaml
  custos verify --config custos.yaml --read-data-subset 3/7 --class critical
  custos verify --config custos.yaml --read-data --no-repair`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var sub repository.Subset
			if subset != "" {
				if readData {
					return fmt.Errorf("use --read-data or --read-data-subset, not both")
				}
				var err error
				if sub, err = repository.ParseSubset(subset); err != nil {
					return fmt.Errorf("--read-data-subset: %w", err)
				}
			}
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if _, ok := cfg.Classes[class]; class != "" && !ok {
				return fmt.Errorf("--class: no class %q in the configuration", class)
			}
			parts, err := open(cmd.Context(), cfg, "custos-verify")
			if err != nil {
				return err
			}
			defer parts.Close()
			names, retain := map[string][]string{}, map[string]time.Duration{}
			for n, c := range cfg.Classes {
				names[n], retain[n] = cfg.TargetNames(c.Targets), c.Retain
			}
			rep, err := repository.Verify(cmd.Context(), repository.VerifyConfig{
				Index: parts.Index, Catalog: parts.Index, Keys: parts.Keys,
				Opener:  parts.Repository().Opener,
				Targets: parts.Targets, Classes: repository.ClassTargets(parts.Targets, names),
				PutOptions: repository.RetainOptions(retain, nil),
				Class:      class, ReadData: readData || subset != "", Subset: sub, NoRepair: noRepair,
				SpoolDir: cfg.Path(cfg.Worker.SpoolDir), Progress: verifyProgress(),
			})
			clearLine()
			if err != nil {
				return err
			}
			if err := printVerify(cmd.OutOrStdout(), cmd.ErrOrStderr(), rep); err != nil {
				return err
			}
			// The index must name every pack the targets hold: a lost entry would hide a backup
			// from a restore of one customer.
			lost := 0
			if class == "" {
				unindexed, err := repository.Reindex(cmd.Context(), parts.Repository(), parts.Index,
					repository.KVSink{Keys: parts.Keys, Index: parts.Index, Snapshots: parts.Snapshots}, noRepair)
				if err != nil {
					return err
				}
				lost = printUnindexed(cmd.OutOrStdout(), cmd.ErrOrStderr(), unindexed)
				// Every erasure and snapshot record must be in every target that must hold it, so
				// that a rebuild from any one target knows them all.
				recs, err := repository.CheckRecords(cmd.Context(), parts.Targets, repository.ClassTargets(parts.Targets, names),
					parts.Repository().Opener, noRepair)
				if err != nil {
					return err
				}
				lost += printRecords(cmd.OutOrStdout(), cmd.ErrOrStderr(), recs)
			}
			if !rep.OK() || lost > 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("%d problems not repaired, %d objects unrecoverable, %d index entries or records missing",
					rep.Remaining(), len(rep.Unrecoverable), lost)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "download every replica and check its checksum, manifest and items")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "download only the packs of subset n/t")
	cmd.Flags().BoolVar(&noRepair, "no-repair", false, "report problems, change nothing")
	cmd.Flags().StringVar(&class, "class", "", "check only this data class")
	return cmd
}

// printVerify writes one line per problem to errw and the summary to w.
func printVerify(w, errw io.Writer, rep repository.VerifyReport) error {
	for _, p := range rep.Problems {
		label := "CORRUPT"
		switch {
		case p.Repaired:
			label = "REPAIRED"
		case p.Kind == repository.ProblemMissing:
			label = "MISSING"
		case p.Kind == repository.ProblemUnreachable:
			label = "UNREACHABLE"
		case p.Kind == repository.ProblemIndex:
			label = "INDEX"
		}
		line := label + " " + p.String()
		if p.RepairErr != nil {
			line += "; not repaired: " + p.RepairErr.Error()
		}
		fmt.Fprintln(errw, line)
	}
	for _, u := range rep.Unrecoverable {
		fmt.Fprintln(errw, "UNRECOVERABLE", u.String())
	}
	_, err := fmt.Fprintf(w, "verified packs=%d replicas=%d bytes_read=%d problems=%d repaired=%d unrecoverable=%d seconds=%.1f\n",
		rep.Packs, rep.Replicas, rep.BytesRead, len(rep.Problems), rep.Repaired, len(rep.Unrecoverable), rep.Elapsed.Seconds())
	return err
}

// verifyProgress prints "packs done/total, MB read" on a terminal, at most ten times a second.
func verifyProgress() func(repository.VerifyProgress) {
	if !isTerminal() {
		return nil
	}
	var last time.Time
	return func(p repository.VerifyProgress) {
		if now := time.Now(); now.Sub(last) > 100*time.Millisecond || p.Done == p.Total {
			last = now
			fmt.Fprintf(os.Stderr, "\rverifying packs %d/%d, %.1f MB read", p.Done, p.Total, float64(p.BytesRead)/1e6)
		}
	}
}

// printUnindexed names every pack the targets hold that the index lacked, and returns how many
// are still not indexed.
func printUnindexed(w, errw io.Writer, us []repository.Unindexed) int {
	lost, indexed := 0, 0
	for _, u := range us {
		switch {
		case u.Indexed:
			indexed++
			fmt.Fprintf(errw, "REINDEXED pack %s (held by %s)\n", u.Pack, strings.Join(u.Targets, ", "))
		case u.Err != nil:
			lost++
			fmt.Fprintf(errw, "UNINDEXED pack %s: %v\n", u.Pack, u.Err)
		default:
			lost++
			fmt.Fprintf(errw, "UNINDEXED pack %s (held by %s)\n", u.Pack, strings.Join(u.Targets, ", "))
		}
	}
	fmt.Fprintf(w, "index unindexed=%d reindexed=%d\n", len(us), indexed)
	return lost
}

// printRecords names every erasure or snapshot record a target lacked, and returns how many are
// still missing.
func printRecords(w, errw io.Writer, rep repository.RecordReport) int {
	repaired := 0
	for _, p := range rep.Problems {
		if p.Repaired {
			repaired++
			fmt.Fprintln(errw, "REPAIRED", p.String())
		} else {
			fmt.Fprintln(errw, "RECORD", p.String())
		}
	}
	for _, u := range rep.Unreachable {
		fmt.Fprintln(errw, "UNREACHABLE", u, "(its erasure and snapshot records were not checked)")
	}
	fmt.Fprintf(w, "records erasures=%d snapshots=%d problems=%d repaired=%d\n", rep.Erasures, rep.Snapshots, len(rep.Problems), repaired)
	return rep.Remaining()
}
