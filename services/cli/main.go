// Command custos is the Custos admin CLI: restore customers, ask for a backup now, run the demo,
// inspect dead letters and the audit log.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/services/cli/internal/initgc"
)

// exitError carries an exit code without printing usage.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	initgc.Restore()
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
	// CUSTOS_CPUPROFILE names a file for a CPU profile of this command (make bench sets it
	// when CUSTOS_BENCH_PROFILE_DIR is given); the profile holds no data, only function names.
	if f := os.Getenv("CUSTOS_CPUPROFILE"); f != "" {
		if pf, err := os.Create(f); err == nil && pprof.StartCPUProfile(pf) == nil {
			defer pf.Close()
			defer pprof.StopCPUProfile()
		}
	}
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
