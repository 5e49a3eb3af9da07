package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/natsauth"
)

// authConfigFile is the file `custos auth generate` writes beside the seeds, which
// deploy/nats/nats-server.conf includes.
const authConfigFile = "nats-auth.conf"

func authCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Make the broker credentials: one NATS user per role, with least-privilege permissions",
	}
	cmd.AddCommand(authGenerateCmd())
	return cmd
}

func authGenerateCmd() *cobra.Command {
	var (
		dir     string
		opts    natsauth.Options
		uploads []string
	)
	cmd := &cobra.Command{
		Use:   "generate --dir DIR [--reserve-deletion]",
		Short: "Write one NKey seed per role and the nats-server authorization file for them",
		Long: `Generate writes DIR/<role>.nk, the private seed of one NATS user per role (producer, worker,
scheduler, admin, operator, restorer, auditor; mode 0600), and DIR/nats-auth.conf, the
authorization block that gives each user the subject permissions of its role. Seeds already in
DIR are kept, so running it again (say, with --reserve-deletion) changes permissions, never
credentials. Copy nats-auth.conf beside nats-server.conf (deploy/nats) and reload the server;
give each service only its own seed file. deploy/nats/README.md says what each role may do.`,
		Example: `  custos auth generate --dir /etc/nats/custos --reserve-deletion`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			if cmd.Flags().Changed("upload-bucket") {
				opts.UploadBuckets = append([]string{}, uploads...)
			}
			set, err := natsauth.Generate(dir, opts)
			if err != nil {
				return err
			}
			conf := filepath.Join(dir, authConfigFile)
			if err := writeFileAtomic(conf, []byte(set.ServerConfig()), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", conf, err)
			}
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROLE\tPUBLIC KEY\tSEED FILE")
			for _, u := range set.Users() {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Role, u.PublicKey, u.SeedFile)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "wrote %s (deletion requests reserved: %v)\n", conf, opts.ReserveDeletion)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the seed files and nats-auth.conf (created 0700 if missing)")
	cmd.Flags().BoolVar(&opts.ReserveDeletion, "reserve-deletion", false,
		"producers may not publish deletion requests; only the operator and the admin may")
	cmd.Flags().StringVar(&opts.WorkerConsumer, "worker-consumer", natsauth.DefaultWorkerConsumer,
		"the durable consumer the workers share (the worker's consumer setting)")
	cmd.Flags().StringSliceVar(&uploads, "upload-bucket", []string{natsauth.DefaultUploadBucket},
		"object stores producers upload large records to (repeat; an empty value allows none)")
	return cmd
}

// writeFileAtomic replaces path with data: a reader sees the old file or the new one, whole.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
