package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

func restoreCmd() *cobra.Command {
	var tenant, customer, out, asOf, snap, class, fromTarget, progressMode string
	var all bool
	var parallel int
	cmd := &cobra.Command{
		Use:   "restore (--customer ID --tenant T | --all) --out DIR [--as-of TIME | --snapshot ID|latest [--class C]]",
		Short: "Restore one customer (latest, or as of a time) or all customers; or a snapshot",
		Long: `Restore reads each item from the first target that has a good copy, checks its SHA-256
against the manifest, authenticates every encrypted segment, and writes the newest version of
each record to DIR/<tenant>/<customer>/<record key>. It exits non-zero if any item fails to
verify. Erased customers are never restored; they are listed by pseudonym.

With --snapshot it restores exactly the state a snapshot read from a source describes (see
custos snapshots): the full snapshot it builds on, then each incremental up to it, with records
deleted at the source left out. "latest" means the newest complete snapshot of --class.

With --from-target it needs no broker at all: it reads the catalog, the data keys, the erasure
records and the snapshot records from that one target and the key file (docs/design.md section
11), and reads items from that target first, then from the other configured targets.

A replica that was missing or failed a check while another target's copy served is named on
stderr ("SKIPPED") and counted in the summary.

Packs are read once each (one ranged read for the items wanted from a pack), --parallel at a
time. Progress goes to stderr: one updating line on a terminal and nothing otherwise (auto), a
JSON object a second (json), or nothing (none).`,
		Example: `  custos restore --config custos.yaml --tenant shop --customer c-0042 --out ./restored
  custos restore --config custos.yaml --all --out ./restored --as-of 2026-11-01T00:00:00Z
  custos restore --config custos.yaml --all --snapshot latest --class critical --out ./restored
  custos restore --config custos.yaml --all --from-target s3 --out ./restored`,
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
			prog, err := restoreProgress(progressMode)
			if err != nil {
				return err
			}
			var rep restore.Report
			start := time.Now()
			if fromTarget != "" {
				rep, err = runOfflineRestore(cmd, fromTarget, snap, class, tenant, customer, all, opts, prog, parallel)
				fmt.Fprintln(cmd.ErrOrStderr(), "NOTE: this restore read no broker and is not recorded in the audit log")
			} else {
				var parts *config.Parts
				if parts, err = openParts(cmd, "custos-restore"); err != nil {
					return err
				}
				defer parts.Close()
				r := &restore.Restorer{Index: parts.Index, Targets: target.Readers(parts.Targets), Keys: parts.Keys,
					Repo: parts.Repository(), Pseudonyms: parts.KMS, Logger: logger(), Progress: prog, Parallelism: parallel}
				if snap != "" {
					rep, err = runSnapshotRestore(cmd, r, parts.Snapshots, snap, class, tenant, customer, opts)
				} else {
					rep, err = runRestore(cmd, r, tenant, customer, all, opts)
				}
				if err == nil {
					erasedLines(cmd.Context(), parts.JS, rep.Erased)
				}
				var pseudonym string
				if customer != "" {
					pseudonym = parts.KMS.Pseudonym(tenant, customer)
				}
				recordAudit(cmd.Context(), parts.JS, restoreEntry(rep, err, time.Since(start), parts.Targets, pseudonym, snap, class),
					cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			printRestore(rep)
			if !rep.OK() {
				// Failures are items, manifests, catalog objects or whole customers (a key
				// marked destroyed with no erasure record): not only items that failed to verify.
				return &exitError{code: 2, msg: fmt.Sprintf("restore incomplete: %d failure(s), each named in a FAILED line", len(rep.Failures))}
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
	cmd.Flags().StringVar(&fromTarget, "from-target", "", "restore with no broker: read the catalog and keys from this target")
	cmd.Flags().StringVar(&progressMode, "progress", "auto", "progress on stderr: auto (a line on a terminal, else none), json (one object a line) or none")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "ranged reads of packs in flight, and as many file writes (default: twice the CPUs)")
	return cmd
}

// snapshotLister resolves snapshots: the broker's store, or records read from a target.
type snapshotLister interface {
	Head(class string) (snapshot.Snapshot, error)
	Chain(id string) ([]snapshot.Snapshot, error)
}

// kvSnapshots adapts the broker's snapshot store.
type kvSnapshots struct {
	ctx context.Context
	s   *snapshot.Store
}

// Head is the newest complete snapshot of class: the class's head, or a newer complete snapshot
// that is not one. A point-in-time snapshot of an event-fed class has no source position to
// resume from, so it never becomes the head (docs/design.md section 10).
func (k kvSnapshots) Head(class string) (snapshot.Snapshot, error) {
	head, err := k.s.Head(k.ctx, class)
	list, lerr := k.s.List(k.ctx, class)
	if lerr != nil {
		return head, errors.Join(err, lerr)
	}
	found := err == nil
	for _, sn := range list {
		if !sn.Partial && (!found || sn.Time.After(head.Time)) {
			head, found = sn, true
		}
	}
	if !found {
		return head, err
	}
	return head, nil
}
func (k kvSnapshots) Chain(id string) ([]snapshot.Snapshot, error) { return k.s.Chain(k.ctx, id) }

func runSnapshotRestore(cmd *cobra.Command, r *restore.Restorer, store *snapshot.Store, id, class, tenant, customer string, opts restore.Options) (restore.Report, error) {
	return snapshotRestore(cmd, r, kvSnapshots{cmd.Context(), store}, id, class, tenant, customer, opts)
}

func snapshotRestore(cmd *cobra.Command, r *restore.Restorer, snaps snapshotLister, id, class, tenant, customer string, opts restore.Options) (restore.Report, error) {
	ctx := cmd.Context()
	if id == "latest" {
		head, err := snaps.Head(class)
		if err != nil {
			return restore.Report{}, err
		}
		id = head.ID
	}
	chain, err := snaps.Chain(id)
	if err != nil {
		return restore.Report{}, err
	}
	var pseudonym string
	if customer != "" {
		pseudonym = r.Pseudonyms.Pseudonym(tenant, customer)
	}
	defer clearLine()
	fmt.Fprintf(os.Stderr, "snapshot %s (%s, %d in chain)\n", id, chain[len(chain)-1].Method, len(chain))
	return r.Snapshot(ctx, chain, pseudonym, opts)
}

// runOfflineRestore restores with no broker: the catalog is read from one target.
func runOfflineRestore(cmd *cobra.Command, from, snap, class, tenant, customer string, all bool, opts restore.Options, prog func(restore.Progress), parallel int) (restore.Report, error) {
	cfgPath, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return restore.Report{}, err
	}
	off, err := cfg.OpenOffline(cmd.Context())
	if err != nil {
		return restore.Report{}, err
	}
	defer off.Close()
	src, others, err := config.FindTarget(off.Targets, from)
	if err != nil {
		return restore.Report{}, err
	}
	mem := repository.NewMemory(off.KMS)
	opener := off.Opener()
	rb, err := repository.Rebuild(cmd.Context(), src, target.Readers(others), opener, mem,
		repository.RebuildOptions{Progress: rebuildProgress()})
	clearLine()
	if err != nil {
		return restore.Report{}, err
	}
	fmt.Fprintf(os.Stderr, "read from %s: packs=%d keys=%d erased=%d snapshots=%d\n", src.Name(), rb.Packs, rb.Keys, rb.Erased, rb.Snapshots)
	for _, u := range rb.Unreachable {
		fmt.Fprintf(os.Stderr, "WARNING: %s did not answer: an erasure recorded only there is not known to this restore\n", u)
	}
	ordered := append([]target.Target{src}, others...)
	r := &restore.Restorer{Index: mem, Targets: target.Readers(ordered), Keys: mem,
		Repo: repository.NewReader(opener, target.Readers(ordered)...), Pseudonyms: off.KMS, Logger: logger(), Progress: prog, Parallelism: parallel}
	var rep restore.Report
	if snap != "" {
		rep, err = snapshotRestore(cmd, r, mem, snap, class, tenant, customer, opts)
	} else {
		rep, err = runRestore(cmd, r, tenant, customer, all, opts)
	}
	for _, f := range rb.Failures {
		rep.Failures = append(rep.Failures, "catalog: "+f)
	}
	return rep, err
}

func printRestore(rep restore.Report) {
	fmt.Printf("restored customers=%d records=%d items=%d bytes=%d erased_skipped=%d skipped_replicas=%d keys_recovered=%d failures=%d\n",
		rep.Customers, rep.Records, rep.Items, rep.Bytes, len(rep.Erased), len(rep.Skipped), len(rep.Recovered), len(rep.Failures))
	for _, s := range rep.Skipped {
		fmt.Fprintln(os.Stderr, "SKIPPED:", s)
	}
	if len(rep.Unindexed) > 0 {
		fmt.Fprintf(os.Stderr, "WARNING: %d packs in the targets are missing from the index (restored all the same); run custos catalog rebuild\n", len(rep.Unindexed))
	}
	for _, c := range rep.Recovered {
		fmt.Fprintf(os.Stderr, "WARNING: data key of %s was missing from the key store; read from the targets\n", c)
	}
	for _, f := range rep.Failures {
		fmt.Fprintln(os.Stderr, "FAILED:", f)
	}
}

func runRestore(cmd *cobra.Command, r *restore.Restorer, tenant, customer string, all bool, opts restore.Options) (restore.Report, error) {
	defer clearLine()
	if all {
		return r.All(cmd.Context(), opts)
	}
	return r.Customer(cmd.Context(), tenant, customer, opts)
}

// restoreProgress returns the progress reporter --progress asks for: on a terminal one line
// with items, bytes, rate and time left; JSON lines (one a second, and the last) with json.
func restoreProgress(mode string) (func(restore.Progress), error) {
	switch mode {
	case "auto":
		if !isTerminal() {
			return nil, nil
		}
		return restore.ProgressLine(os.Stderr, time.Now), nil
	case "json":
		return restore.ProgressJSON(os.Stderr, time.Now, time.Second), nil
	case "none":
		return nil, nil
	}
	return nil, fmt.Errorf("--progress must be auto, json or none, not %q", mode)
}

// restoreEntry is the audit entry of a restore through the broker: which customer (by
// pseudonym, when one), from which targets, what it restored and whether everything verified.
// The reason gives counts only: failure texts may name items.
func restoreEntry(rep restore.Report, err error, took time.Duration, targets []target.Target, pseudonym, snap, class string) audit.Entry {
	e := audit.Entry{Time: time.Now(), Kind: audit.KindRestore, Customer: pseudonym, Class: class,
		Count: int64(rep.Customers), Bytes: rep.Bytes, Outcome: audit.OutcomePassed,
		Figures: &audit.Figures{Items: int64(rep.Items), Bytes: rep.Bytes, Seconds: took.Seconds()}}
	for _, t := range targets {
		e.Targets = append(e.Targets, audit.Name(t.Name()))
	}
	if _, err := hex.DecodeString(snap); err == nil && len(snap) == 32 && snap == strings.ToLower(snap) {
		e.Snapshot = snap // "latest" is resolved later; the class says which
	}
	for _, f := range rep.Failures {
		if strings.Contains(f, restore.ErrChecksum.Error()) {
			e.Figures.ChecksumFailures++
		}
	}
	switch {
	case err != nil:
		e.Outcome, e.Reason = audit.OutcomeFailed, "the restore stopped with an error"
	case !rep.OK():
		e.Outcome, e.Reason = audit.OutcomeFailed, fmt.Sprintf("%d failures (%d checksum mismatches)", len(rep.Failures), e.Figures.ChecksumFailures)
	}
	return e
}
