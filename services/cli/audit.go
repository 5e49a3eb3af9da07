package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

func auditCmd() *cobra.Command {
	var limit int
	var kind string
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--kind KIND]",
		Short: "List the audit log; verify it, sign checkpoints of it",
		Long: `Audit lists the entries of the audit stream (CUSTOS_AUDIT), oldest first: the entry's position,
when it was written, its kind, class, the customer's pseudonym (never the raw id), severity,
outcome, the packs that hold its records, the event id, who asked or detected it, other details
and the reason.

The log is tamper-evident (docs/audit.md): "custos audit checkpoint" signs its head and writes
it, with the entries, to every target; "custos audit verify" checks the whole log against them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "" && !slices.Contains(audit.Kinds, kind) {
				return fmt.Errorf("--kind %q: give one of %s", kind, strings.Join(audit.Kinds, ", "))
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
			fmt.Fprintln(w, "INDEX\tTIME\tKIND\tCLASS\tCUSTOMER\tSEVERITY\tOUTCOME\tPACKS\tEVENT\tBY\tDETAIL\tREASON")
			for _, e := range shown {
				by := e.RequestedBy
				if e.DetectedBy != "" {
					by = e.DetectedBy
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%q\n", e.Index, e.Time.UTC().Format(time.RFC3339),
					e.Kind, dash(e.Class), dash(e.Customer), dash(e.Severity), e.Outcome, dash(strings.Join(e.Packs, ",")),
					dash(e.EventID), dash(by), dash(auditDetail(e)), e.Reason)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "show at most this many, newest last (0: all)")
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind")
	cmd.AddCommand(auditVerifyCmd(), auditCheckpointCmd())
	return cmd
}

// auditDetail is the entry's kind-specific fields, "name=value" separated by spaces.
func auditDetail(e audit.Entry) string {
	var d []string
	add := func(name, v string) {
		if v != "" {
			d = append(d, name+"="+v)
		}
	}
	add("snapshot", e.Snapshot)
	add("certificate", e.Certificate)
	add("targets", strings.Join(e.Targets, ","))
	add("key", e.Key)
	if e.Count != 0 {
		add("count", strconv.FormatInt(e.Count, 10))
	}
	return strings.Join(d, " ")
}

func auditVerifyCmd() *cobra.Command {
	var fromTarget, verifierKey string
	var prove []int64
	cmd := &cobra.Command{
		Use:   "verify [--from-target NAME] [--prove N ...] [--verifier-key KEY]",
		Short: "Check the whole audit log against the signed checkpoints in the targets",
		Long: `Verify reads every entry of the audit log, from the stream or, with --from-target, from that
target's export of the entries (no broker needed), and every checkpoint from every configured
target that answers. It checks each checkpoint's signature, each entry's position, the hash
chain and each checkpoint's tree hash (docs/audit.md, "Verifying"), and prints

  audit verify entries=N checkpoints=M head=SIZE OK

or, naming the first entry that was changed, deleted or moved,

  audit verify entries=N checkpoints=M head=SIZE FAILED: entry K: WHY

and then exits 2. --prove N prints the inclusion proof of entry N in the tree of the newest
checkpoint and checks it. The signature is checked with the key derived from the key file, or
with --verifier-key (the "verifier key:" line "custos audit checkpoint" prints).`,
		Example: `  custos audit verify --config custos.yaml
  custos audit verify --config custos.yaml --from-target b --prove 0 --prove 41`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			log, err := readAuditLog(ctx, cfg, fromTarget, verifierKey, "custos-audit-verify", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer log.close()
			entries, cps, verifierKey := log.entries, log.checkpoints, log.verifierKey
			rep, ok := printAuditVerify(cmd.OutOrStdout(), entries, cps, verifierKey)
			if !ok {
				return &exitError{code: 2, msg: "the audit log does not verify"}
			}
			if rep.Checkpoints == 0 && len(entries) > 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: no target holds a checkpoint: only positions and the hash chain were checked; run custos audit checkpoint")
			} else if rep.Head < rep.Entries {
				fmt.Fprintf(cmd.ErrOrStderr(), "NOTE: entries %d to %d come after the newest checkpoint and are proven by the hash chain alone\n",
					rep.Head, rep.Entries-1)
			}
			failed := 0
			for _, n := range prove {
				if err := printAuditProof(cmd.OutOrStdout(), entries, cps, rep, n, verifierKey); err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "proof entry=%d FAILED: %v\n", n, err)
					failed++
				}
			}
			if failed > 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("%d inclusion proofs failed", failed)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&fromTarget, "from-target", "", "read the entries from this target's export instead of the stream")
	cmd.Flags().Int64SliceVar(&prove, "prove", nil, "print and check the inclusion proof of this entry (repeatable)")
	cmd.Flags().StringVar(&verifierKey, "verifier-key", "", "check signatures with this verifier key instead of the key file's")
	return cmd
}

func auditCheckpointCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "checkpoint",
		Short: "Sign the head of the audit log and write it, with the entries, to every target",
		Long: `Checkpoint reads the whole audit stream and the checkpoints the targets hold, and verifies the
log as "custos audit verify" does: a log that does not verify is not signed (exit 2). Then it
signs a checkpoint of every entry with the key derived from the key file and writes to every
target, create-only, the entries the target lacks (audit/entries/…) and then the checkpoint
(audit/checkpoints/…), retained as long as the longest retention of any class. A target that
fails is reported and the command exits 2; run it again once the target answers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			key, err := loadAuditKey(cfg)
			if err != nil {
				return err
			}
			signer, err := audit.NewSigner(key.priv)
			if err != nil {
				return err
			}
			nc, js, err := connectNATS(cfg, "custos-audit-checkpoint")
			if err != nil {
				return err
			}
			defer nc.Drain()
			entries, err := audit.ReadEntries(ctx, js)
			if err != nil {
				return err
			}
			targets, err := cfg.OpenTargets(ctx)
			if err != nil {
				return err
			}
			defer closeTargets(targets)
			cps := readAuditCheckpoints(ctx, targets, cmd.ErrOrStderr())
			if _, ok := printAuditVerify(io.Discard, entries, cps, key.vkey); !ok {
				printAuditVerify(cmd.OutOrStdout(), entries, cps, key.vkey)
				return &exitError{code: 2, msg: "the audit log does not verify: no checkpoint written"}
			}
			if len(entries) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "audit checkpoint: the log is empty; nothing written")
				return nil
			}
			v, err := audit.ParseVerifierKey(key.vkey)
			if err != nil {
				return err
			}
			now := time.Now()
			var longest time.Duration
			for _, cl := range cfg.Classes {
				longest = max(longest, cl.Retain)
			}
			opts := target.PutOptions{}
			if longest > 0 {
				opts.RetainUntil = now.Add(longest)
			}
			res, err := audit.WriteCheckpoint(ctx, audit.CheckpointWrite{Entries: entries, Held: cps, Targets: targets,
				Signer: signer, Verifier: v, Now: now, Put: opts})
			if err != nil {
				return err
			}
			for _, err := range res.Failures {
				fmt.Fprintln(cmd.ErrOrStderr(), "FAILED:", err)
			}
			c, failures := res.Checkpoint, len(res.Failures)
			fmt.Fprintf(cmd.OutOrStdout(), "audit checkpoint size=%d root=%s targets=%d failures=%d\nverifier key: %s\n",
				c.Size, base64.StdEncoding.EncodeToString(c.Root[:]), len(targets)-failures, failures, key.vkey)
			if failures > 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("the checkpoint is missing from %d targets: run the command again once they answer", failures)}
			}
			return nil
		},
	}
}

// readAuditCheckpoints reads the checkpoints of every target that answers; a target that does
// not, or that lacks checkpoints another holds, is named on errw.
// auditLogRead is the audit log as read for verification: its entries (from the broker, or from
// one target's export with no broker), the checkpoints every target holds, and the key that
// verifies them (the key file's, unless one was given).
type auditLogRead struct {
	entries     [][]byte
	checkpoints audit.TargetCheckpoints
	verifierKey string
	targets     []target.Target
	closers     []func()
}

func (l *auditLogRead) close() {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
}

// readAuditLog reads what `audit verify` and `report` check. fromTarget names the target whose
// export is read instead of the broker's stream.
func readAuditLog(ctx context.Context, cfg *config.Config, fromTarget, verifierKey, connName string, errw io.Writer) (l *auditLogRead, err error) {
	l = &auditLogRead{verifierKey: verifierKey}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.verifierKey == "" {
		key, err := loadAuditKey(cfg)
		if err != nil {
			return nil, err
		}
		l.verifierKey = key.vkey
	}
	if _, err := audit.ParseVerifierKey(l.verifierKey); err != nil {
		return nil, fmt.Errorf("--verifier-key: %w", err)
	}
	if l.targets, err = cfg.OpenTargets(ctx); err != nil {
		return nil, err
	}
	l.closers = append(l.closers, func() { closeTargets(l.targets) })
	if fromTarget != "" {
		t, _, err := config.FindTarget(l.targets, fromTarget)
		if err != nil {
			return nil, fmt.Errorf("--from-target: %w", err)
		}
		if l.entries, err = repository.ReadAuditEntries(ctx, t); err != nil {
			return nil, err
		}
	} else {
		nc, js, err := connectNATS(cfg, connName)
		if err != nil {
			return nil, err
		}
		l.closers = append(l.closers, func() { nc.Drain() }) //nolint:errcheck // closing
		if l.entries, err = audit.ReadEntries(ctx, js); err != nil {
			return nil, err
		}
	}
	l.checkpoints = readAuditCheckpoints(ctx, l.targets, errw)
	return l, nil
}

func readAuditCheckpoints(ctx context.Context, targets []target.Target, errw io.Writer) audit.TargetCheckpoints {
	cps := audit.ReadTargetCheckpoints(ctx, targets)
	for _, err := range cps.Unreachable {
		fmt.Fprintln(errw, "WARNING:", err)
	}
	for _, t := range targets {
		if n, ok := cps.Lagging[t.Name()]; ok {
			fmt.Fprintf(errw, "NOTE: target %s holds %d of the %d checkpoint sizes the targets hold (it missed a custos audit checkpoint, or lost some)\n",
				t.Name(), n, cps.Sizes)
		}
	}
	return cps
}

// printAuditVerify verifies and prints the summary line.
func printAuditVerify(w io.Writer, entries [][]byte, cps audit.TargetCheckpoints, vkey string) (audit.Report, bool) {
	v, err := audit.ParseVerifierKey(vkey)
	if err != nil {
		fmt.Fprintln(w, "audit verify FAILED:", err)
		return audit.Report{}, false
	}
	rep, err := audit.Verify(entries, cps.Data, v)
	line := fmt.Sprintf("audit verify entries=%d checkpoints=%d head=%d", rep.Entries, rep.Checkpoints, rep.Head)
	switch {
	case err == nil:
		fmt.Fprintln(w, line, "OK")
		return rep, true
	case rep.FirstBad >= 0:
		fmt.Fprintf(w, "%s FAILED: entry %d: %s\n", line, rep.FirstBad, rep.Problem)
	case rep.BadCheckpoint >= 0:
		fmt.Fprintf(w, "%s FAILED: checkpoint %s: %s\n", line, cps.Where[rep.BadCheckpoint], rep.Problem)
	default:
		fmt.Fprintf(w, "%s FAILED: %v\n", line, err)
	}
	return rep, false
}

// printAuditProof prints the inclusion proof of entry n in the newest checkpoint's tree and
// checks it against that checkpoint.
func printAuditProof(w io.Writer, entries [][]byte, cps audit.TargetCheckpoints, rep audit.Report, n int64, vkey string) error {
	v, err := audit.ParseVerifierKey(vkey)
	if err != nil {
		return err
	}
	if n < 0 || n >= rep.Head {
		return fmt.Errorf("entry %d is not covered by a checkpoint (the newest is of %d entries)", n, rep.Head)
	}
	var signed []byte
	for _, b := range cps.Data {
		if c, err := audit.ParseCheckpoint(b, v); err == nil && c.Size == rep.Head && c.Root == rep.Root {
			signed = b
			break
		}
	}
	p, err := audit.Prove(entries, rep.Head, n)
	if err != nil {
		return err
	}
	b64 := func(h [32]byte) string { return base64.StdEncoding.EncodeToString(h[:]) }
	fmt.Fprintf(w, "proof entry=%d size=%d leaf=%s root=%s\n", n, p.Size, b64(p.Leaf), b64(rep.Root))
	for _, h := range p.Hashes {
		fmt.Fprintf(w, "  %s\n", b64(h))
	}
	if err := audit.CheckProof(p, entries[n], signed, v); err != nil {
		return err
	}
	fmt.Fprintf(w, "proof entry=%d OK\n", n)
	return nil
}

func closeTargets(ts []target.Target) {
	for _, t := range ts {
		t.Close()
	}
}

// auditKey is the audit log's signing key and its verifier key.
type auditKey struct {
	priv ed25519.PrivateKey
	vkey string
}

// loadAuditKey derives the audit signing key from the pseudonym key in the configuration's key
// file (keys.SigningKey, purpose audit-checkpoint; docs/audit.md), whatever the KEK backend.
func loadAuditKey(cfg *config.Config) (*auditKey, error) {
	p, err := keys.LoadPseudonyms(cfg.Path(cfg.Keys.File), false)
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	priv := p.SigningKey(keys.PurposeAuditCheckpoint)
	vkey, err := audit.VerifierKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &auditKey{priv: priv, vkey: vkey}, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// auditAppendTimeout bounds the CLI's append of one audit entry.
const auditAppendTimeout = 10 * time.Second

// recordAudit appends e to the audit log through js, best effort: the action it records is done
// already, so a failure (the broker unreachable, a role that may not append) is reported on
// errw, naming what was not recorded, and the command goes on. It reports whether e was
// appended.
func recordAudit(ctx context.Context, js jetstream.JetStream, e audit.Entry, errw io.Writer) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditAppendTimeout)
	defer cancel()
	l, err := audit.Open(ctx, js)
	if err == nil {
		err = l.Append(ctx, e)
	}
	if err != nil {
		fmt.Fprintf(errw, "WARNING: this %s was not recorded in the audit log: %v\n", strings.ReplaceAll(e.Kind, "_", " "), err)
		return false
	}
	return true
}
