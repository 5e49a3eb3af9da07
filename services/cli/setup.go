package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/worker"
)

func setupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "setup --config FILE",
		Short: "Create every stream and bucket Custos uses, and apply the stream settings (admin credential)",
		Long: `Other roles only bind to existing streams and buckets (docs/design.md section 12, least
privilege); run this once with the admin credential before starting workers, and again after an
upgrade that changes stream settings. Idempotent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			parts, err := openParts(cmd, "custos-setup") // keys, index, repairs, snapshots, records
			if err != nil {
				return err
			}
			defer parts.Close()
			if err := worker.EnsureStreams(ctx, parts.JS); err != nil { // events, dead letters, audit, intents
				return err
			}
			if err := event.ApplyStreams(ctx, parts.JS, event.StreamsConfig{}); err != nil {
				return err
			}
			if _, err := erasure.Open(ctx, parts.JS, 1); err != nil {
				return err
			}
			if _, err := broker.EnsureKV(ctx, parts.JS, audit.LeaseConfig()); err != nil {
				return err
			}
			if _, err := uploadBucket(ctx, parts.JS, defaultUploadBucket); err != nil {
				return err
			}
			fmt.Println("setup done: streams and buckets exist")
			return nil
		},
	}
}
