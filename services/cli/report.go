package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/report"
)

func reportCmd() *cobra.Command {
	var from, to, format, out, fromTarget, verifierKey string
	cmd := &cobra.Command{
		Use:   "report --from YYYY-MM-DD --to YYYY-MM-DD --format json|html [--out FILE] [--from-target NAME]",
		Short: "Compliance report for auditors: every control of the policy with its evidence from the audit log",
		Long: `Report reads the audit log, from the stream or, with --from-target, from that target's export of
the entries (no broker needed), and the checkpoints of every target, and verifies it as "custos
audit verify" does. A log that does not verify gets no report: the command names the first bad
entry and exits 2.

Then it judges, for the days --from to --to (inclusive, in the policy's time zone), every control
of the policy documents of record (seed 002 sections 3 to 6, seed 003 items 1 to 5): the
configured setting, the evidence from the entries the newest checkpoint covers, and pass, fail or
not applicable with the reason (docs/report.md). The report carries that checkpoint and the
command line that re-verifies the log offline.

--format json follows docs/report.schema.json; --format html is one self-contained page. The
report goes to --out or stdout; "controls: N pass, M fail" goes to stderr. Failing controls are
in the report: the exit code is 0.`,
		Example: `  custos report --config custos.yaml --from 2026-10-01 --to 2026-12-31 --format html --out q4.html
  custos report --config custos.yaml --from 2026-10-01 --to 2026-12-31 --format json --from-target offsite`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if format != "json" && format != "html" {
				return fmt.Errorf("--format %q: give json or html", format)
			}
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			pol := cfg.Policy()
			polFile, polBytes := "default (built in)", policy.DefaultYAML()
			if cfg.PolicyFromFile() {
				polFile = cfg.PolicyFile
				if polBytes, err = os.ReadFile(cfg.Path(cfg.PolicyFile)); err != nil {
					return fmt.Errorf("policy: %w", err)
				}
			}
			start, end, err := reportPeriod(from, to, pol.Location)
			if err != nil {
				return err
			}
			log, err := readAuditLog(ctx, cfg, fromTarget, verifierKey, "custos-report", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer log.close()
			entries, cps, verifierKey := log.entries, log.checkpoints, log.verifierKey
			rep, ok := printAuditVerify(cmd.ErrOrStderr(), entries, cps, verifierKey)
			if !ok {
				return &exitError{code: 2, msg: "the audit log does not verify: no report made"}
			}
			signed := headCheckpoint(cps.Data, rep, verifierKey)
			if signed == nil {
				return &exitError{code: 2, msg: "no checkpoint covers the audit log: run custos audit checkpoint, then report"}
			}
			verify := "custos audit verify --config " + cfgPath
			if fromTarget != "" {
				verify += " --from-target " + fromTarget
			}
			r, err := report.Build(report.Input{
				Policy: pol, PolicyFile: polFile, PolicyDigest: report.PolicyDigest(polBytes),
				Entries: entries, Checkpoint: signed, VerifierKey: verifierKey,
				From: start, To: end, Now: time.Now(), Links: reportLinks(cfg),
				VerifyCommand: verify + " --verifier-key " + verifierKey,
			})
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			var buf bytes.Buffer
			if format == "html" {
				err = r.WriteHTML(&buf)
			} else {
				var b []byte
				b, err = r.JSON()
				buf.Write(b)
			}
			if err != nil {
				return err
			}
			if err := writeReport(cmd.OutOrStdout(), out, buf.Bytes()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), reportSummary(r))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "first day of the period, YYYY-MM-DD (required)")
	cmd.Flags().StringVar(&to, "to", "", "last day of the period, YYYY-MM-DD, inclusive (required)")
	cmd.Flags().StringVar(&format, "format", "json", "json or html")
	cmd.Flags().StringVar(&out, "out", "", "write the report to this file instead of stdout")
	cmd.Flags().StringVar(&fromTarget, "from-target", "", "read the entries from this target's export instead of the stream")
	cmd.Flags().StringVar(&verifierKey, "verifier-key", "", "check signatures with this verifier key instead of the key file's")
	cmd.MarkFlagRequired("from") //nolint:errcheck // the flags exist
	cmd.MarkFlagRequired("to")   //nolint:errcheck
	return cmd
}

// reportPeriod reads the period's first and last days (inclusive) as [start, end) in loc.
func reportPeriod(from, to string, loc *time.Location) (time.Time, time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	f, err := time.ParseInLocation(time.DateOnly, from, loc)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("--from %q: give a date, YYYY-MM-DD", from)
	}
	t, err := time.ParseInLocation(time.DateOnly, to, loc)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("--to %q: give a date, YYYY-MM-DD", to)
	}
	if t.Before(f) {
		return time.Time{}, time.Time{}, fmt.Errorf("--to %s is before --from %s", to, from)
	}
	return f, time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc), nil
}

// headCheckpoint returns the signed checkpoint the verification ended at (the largest that
// verified), or nil when none did.
func headCheckpoint(cps [][]byte, rep audit.Report, vkey string) []byte {
	v, err := audit.ParseVerifierKey(vkey)
	if err != nil || rep.Head == 0 {
		return nil
	}
	for _, b := range cps {
		if c, err := audit.ParseCheckpoint(b, v); err == nil && c.Size == rep.Head && c.Root == rep.Root {
			return b
		}
	}
	return nil
}

// reportLinks are the network connections backups travel over: the broker and every cloud
// target (fs targets are local disks or mounts, not judged).
func reportLinks(cfg *config.Config) []report.Link {
	var links []report.Link
	for _, u := range strings.Split(cfg.NATS.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			links = append(links, report.Link{Name: "nats", URL: u})
		}
	}
	for _, t := range cfg.Targets {
		switch {
		case t.Kind == policy.KindFS:
		case t.Kind == policy.KindS3 || t.Kind == policy.KindGCS || t.Kind == policy.KindAzure:
			links = append(links, report.Link{Name: "target " + t.Name, URL: t.Endpoint})
		case t.Endpoint != "":
			links = append(links, report.Link{Name: "target " + t.Name, URL: t.Endpoint})
		}
	}
	return links
}

// writeReport writes the report to path, or to w when path is empty.
func writeReport(w io.Writer, path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := w.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

// reportSummary is the one-line summary on stderr; tests match it.
func reportSummary(r *report.Report) string {
	return fmt.Sprintf("controls: %d pass, %d fail", r.Summary.Pass, r.Summary.Fail)
}
