package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

func catalogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Manage the catalog the broker holds (index, key store, snapshot list)",
	}
	cmd.AddCommand(catalogRebuildCmd())
	return cmd
}

func catalogRebuildCmd() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "rebuild --from TARGET --config FILE",
		Short: "Rebuild the index, the key store and the snapshot list from one target and the key file",
		Long: `Rebuild reads the system of record in one target (docs/design.md section 11) and writes what
the broker lost: every erasure record (read from every configured target that answers, so an
erased customer stays erased), every pack manifest with the data keys it carries, and every
snapshot record. Entries the broker still holds are kept. It needs only the key file and the
target; run it against a fresh broker after losing the JetStream store.

A pack is indexed with every configured target whose listing holds both the pack and its
manifest. The dedup cache, the job table and the repair queue are not rebuilt: run custos verify
afterwards to find replicas that are missing.`,
		Example: `  custos catalog rebuild --config custos.yaml --from s3`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return fmt.Errorf("--from is required: the name of a configured target")
			}
			parts, err := openParts(cmd, "custos-catalog-rebuild")
			if err != nil {
				return err
			}
			defer parts.Close()
			src, others, err := config.FindTarget(parts.Targets, from)
			if err != nil {
				return err
			}
			sink := repository.KVSink{Keys: parts.Keys, Index: parts.Index, Snapshots: parts.Snapshots}
			start := time.Now()
			rep, err := repository.Rebuild(cmd.Context(), src, target.Readers(others),
				parts.Repository().Opener, sink,
				repository.RebuildOptions{Progress: rebuildProgress()})
			clearLine()
			if err != nil {
				return err
			}
			printRebuild(rep, src.Name(), time.Since(start))
			if !rep.OK() {
				return &exitError{code: 2, msg: fmt.Sprintf("%d objects could not be read", len(rep.Failures))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "target to rebuild from (its name in the configuration)")
	return cmd
}

func printRebuild(rep repository.RebuildReport, from string, took time.Duration) {
	fmt.Printf("rebuilt from=%s packs=%d keys=%d erased=%d snapshots=%d failures=%d seconds=%.1f\n",
		from, rep.Packs, rep.Keys, rep.Erased, rep.Snapshots, len(rep.Failures), took.Seconds())
	for _, u := range rep.Unreachable {
		fmt.Fprintf(os.Stderr, "WARNING: %s did not answer: an erasure recorded only there is not known to this run\n", u)
	}
	for _, f := range rep.Failures {
		fmt.Fprintln(os.Stderr, "FAILED:", f)
	}
}

// rebuildProgress prints "manifests done/total" on a terminal, at most ten times a second.
func rebuildProgress() func(repository.RebuildProgress) {
	if !isTerminal() {
		return nil
	}
	var last time.Time
	return func(p repository.RebuildProgress) {
		if now := time.Now(); now.Sub(last) > 100*time.Millisecond || p.Done == p.Total {
			last = now
			fmt.Fprintf(os.Stderr, "\rreading manifests %d/%d", p.Done, p.Total)
		}
	}
}

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func clearLine() {
	if isTerminal() {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}
