package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/schedule"
	"github.com/custos-dev/custos/pkg/worker"
)

func setupCmd() *cobra.Command {
	var replicas int
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "setup --config FILE [--replicas 3]",
		Short: "Create every stream and bucket Custos uses, and apply the stream settings (admin credential)",
		Long: `Other roles only bind to existing streams and buckets (docs/design.md section 12, least
privilege); run this once with the admin credential before starting workers, and again after an
upgrade that changes stream settings. Idempotent. In a NATS cluster, --replicas 3 makes every
stream and bucket (events, dead letters, audit log, intents, tasks, keys, index, snapshots,
erasures, scheduler records, uploads) keep three copies. The cluster copies the data after the
change; setup then waits (up to --wait) until every stream has a leader and all its copies are
current, so that losing one server right away loses nothing and blocks nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// With --replicas, what does not exist yet is created with its copies (broker.Replicated);
			// SetReplicas below changes what existed before.
			parts, err := openParts(cmd, "custos-setup", config.WithReplicas(replicas)) // keys, index, repairs, snapshots, records
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
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if _, err := broker.EnsureKV(ctx, parts.JS, schedule.DefaultBucketConfig(cfg.Policy())); err != nil {
				return err
			}
			if replicas > 0 {
				changed, err := broker.SetReplicas(ctx, parts.JS, replicas)
				for _, name := range changed {
					fmt.Printf("%s: %d replicas\n", name, replicas)
				}
				if err != nil {
					return err
				}
				if err := waitReplicas(ctx, parts.JS, replicas, wait); err != nil {
					return err
				}
			}
			fmt.Println("setup done: streams and buckets exist")
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "set every Custos stream and bucket to this many replicas (3 in a production cluster); 0 leaves them as they are")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "with --replicas, how long to wait for the cluster to copy every stream to its new replicas")
	return cmd
}

// waitReplicas waits up to d for every stream to have n current copies, saying which are still
// being copied every few seconds.
func waitReplicas(ctx context.Context, js jetstream.JetStream, n int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var said time.Time
	err := broker.WaitReplicas(ctx, js, n, func(short []string) {
		if time.Since(said) >= 5*time.Second {
			said = time.Now()
			fmt.Printf("waiting for the cluster to copy %d streams to %d replicas: %s\n", len(short), n, strings.Join(short, ", "))
		}
	})
	if err != nil {
		return fmt.Errorf("%w; the streams are set to %d replicas, but some copies are not current yet: run setup again to wait longer", err, n)
	}
	fmt.Printf("every stream has %d current replicas\n", n)
	return nil
}
