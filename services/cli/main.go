// Command custos is the Custos admin CLI: restore customers, ask for a backup now, run the demo,
// inspect dead letters and the audit log.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries an exit code without printing usage.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	root := &cobra.Command{
		Use:           "custos",
		Short:         "Custos: encrypted, replicated, event-driven backups of customer data",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "custos.yaml", "configuration file; when it is not given and ./custos.yaml is missing: $CUSTOS_CONFIG, else .custos/custos.yaml (custos server)")
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) { findConfig(cmd) }
	root.AddCommand(restoreCmd(), demoCmd(), dlqCmd(), policyCmd(), scheduleCmd(), backupCmd(), auditCmd())
	root.AddCommand(retentionCmd(), rpoCmd(), jobsCmd(), snapshotsCmd(), catalogCmd(), keysCmd(), verifyCmd())
	root.AddCommand(authCmd(), eraseCmd(), setupCmd(), serverCmd())
	root.AddCommand(reportCmd())
	root.AddCommand(drillCmd())
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "custos:", err)
		if e, ok := err.(*exitError); ok {
			os.Exit(e.code)
		}
		os.Exit(1)
	}
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
