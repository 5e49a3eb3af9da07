package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

func keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Rotate the key-encryption key (KEK) and destroy retired versions",
		Long: `A rotation completes erasures under object lock (docs/design.md section 11, KEK epochs): locked
manifests keep every customer's data key wrapped by the KEK of their time. After "keys rotate"
every live data key is wrapped by the new KEK, in the key store and in a key envelope in every
target; "keys destroy-retired" then destroys the old KEK versions in the backend (keys.backend:
the key file, a PKCS#11 token or AWS KMS), and every copy wrapped by them, including an erased
customer's, is unreadable for good.

Between the two, restart every worker and CLI: a process that opened the KEK before the rotation
creates no data key (key store entry meta.active_kek).`,
	}
	cmd.AddCommand(keysRotateCmd(), keysDestroyCmd())
	return cmd
}

func keysRotateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate --config FILE",
		Short: "Make a new KEK version active and re-wrap every live data key under it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, ring, err := openRing(cmd)
			if err != nil {
				return err
			}
			oldID, newID, err := ring.Rotate(cmd.Context())
			ring.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "KEK rotated (%s): %s is retired, %s is active\n", backendName(cfg), oldID, newID)
			rec := &audit.Entry{Kind: audit.KindKeyRotation, Key: audit.Name(newID), Outcome: "rotated",
				Reason: "retired " + oldID}
			return rewrapAndEnvelope(cmd.Context(), cfg, "rotated", rec)
		},
	}
}

func keysDestroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy-retired --config FILE",
		Short: "Destroy the retired KEK versions once every live key is wrapped by the active one in every target",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, ring, err := openRing(cmd)
			if err != nil {
				return err
			}
			defer ring.Close()
			retired, err := ring.Retired(cmd.Context())
			if err != nil {
				return err
			}
			if len(retired) == 0 {
				fmt.Println("keys destroyed=0 (no retired KEK version is held)")
				return nil
			}
			// Keys created meanwhile by processes still on the retired KEK are re-wrapped, and
			// every envelope must be in every target before anything is destroyed.
			if err := rewrapAndEnvelope(cmd.Context(), cfg, "checked", nil); err != nil {
				return fmt.Errorf("nothing destroyed: %w", err)
			}
			gone, err := ring.DestroyRetired(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Printf("keys destroyed=%d %v\n", len(gone), gone)
			rec := audit.Entry{Time: time.Now(), Kind: audit.KindKeyRotation, Key: audit.Name(ring.KeyID()),
				Outcome: "retired_destroyed", Count: int64(len(gone)), Reason: "destroyed " + strings.Join(gone, ", ")}
			nc, js, err := connectNATS(cfg, "custos-keys")
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: this key rotation was not recorded in the audit log: %v\n", err)
				return nil
			}
			defer nc.Drain()
			recordAudit(cmd.Context(), js, rec, cmd.ErrOrStderr())
			return nil
		},
	}
}

func backendName(cfg *config.Config) string {
	if cfg.Keys.Backend == "" {
		return "file"
	}
	return cfg.Keys.Backend
}

// openRing loads the configuration and opens its KEK backend (never creating a KEK).
func openRing(cmd *cobra.Command) (*config.Config, *keys.Keyring, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	ring, err := cfg.OpenKeyring(cmd.Context(), false)
	if err != nil {
		return nil, nil, err
	}
	return cfg, ring, nil
}

func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	cfgPath, _ := cmd.Flags().GetString("config")
	return config.Load(cfgPath)
}

// rewrapAndEnvelope records the active KEK in the key store, re-wraps every live data key under
// it and writes every key envelope to every target, with a retention that outlives every older
// locked manifest. It fails unless every envelope is in every target.
//
// rec, when set, is the audit entry of the rotation just made: it is appended once the keys are
// re-wrapped, with Count the data keys re-wrapped (or, when that failed, none).
func rewrapAndEnvelope(ctx context.Context, cfg *config.Config, verb string, rec *audit.Entry) error {
	parts, err := open(ctx, cfg, "custos-keys")
	if err != nil {
		if rec != nil {
			fmt.Fprintf(os.Stderr, "WARNING: the rotation to %s was not recorded in the audit log: %v\n", rec.Key, err)
		}
		return err
	}
	defer parts.Close()
	err = parts.Keys.SetActiveKEK(ctx)
	var rewrapped, live int
	if err == nil {
		rewrapped, live, err = parts.Keys.Rewrap(ctx)
	}
	if rec != nil {
		rec.Time, rec.Count = time.Now(), int64(rewrapped)
		recordAudit(ctx, parts.JS, *rec, os.Stderr)
	}
	if err != nil {
		return err
	}
	envs, err := parts.Keys.Live(ctx)
	if err != nil {
		return err
	}
	for scope, e := range envs {
		if e.KEK != parts.KMS.KeyID() {
			return fmt.Errorf("data key of %s is still wrapped by %s", scope, e.KEK)
		}
	}
	var longest time.Duration
	for _, c := range cfg.Classes {
		longest = max(longest, c.Retain)
	}
	opts := target.PutOptions{}
	if longest > 0 {
		opts.RetainUntil = time.Now().Add(longest)
	}
	rep := repository.WriteEnvelopes(ctx, parts.Targets, envs, opts)
	fmt.Printf("keys %s active=%s live=%d rewrapped=%d envelopes=%d failures=%d\n",
		verb, parts.KMS.KeyID(), live, rewrapped, rep.Written, len(rep.Failures))
	for _, f := range rep.Failures {
		fmt.Fprintln(os.Stderr, "FAILED:", f)
	}
	if len(rep.Failures) > 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("%d key envelopes not written: run the command again once every target answers", len(rep.Failures))}
	}
	return nil
}
