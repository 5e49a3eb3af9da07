package rclone_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/rclone"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noLocks is why the suite runs with LockUnsupported: no rclone remote can hold a lock, so a Put
// that asks for one must fail and store nothing.
const noLocks = "rclone remotes have no object lock, retention or legal hold"

// newTarget opens a target from cfg for the test and fails it on error.
func newTarget(t *testing.T, cfg rclone.Config) *rclone.Target {
	t.Helper()
	tg, err := rclone.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Backend, err)
	}
	return tg
}

// TestConformanceSFTP runs the suite against a real OpenSSH server on loopback: create-only
// through hard links, SHA-256 verified by sha256sum on the server.
func TestConformanceSFTP(t *testing.T) {
	srv := startSFTP(t)
	targettest.Run(t, func(t *testing.T) target.Target { return newTarget(t, srv.config(t)) },
		targettest.LockUnsupported(noLocks))
}

// TestConformanceWebDAV runs the suite against a WebDAV server on loopback: no hashes, so every
// Put is verified by reading the staged file back.
func TestConformanceWebDAV(t *testing.T) {
	srv := startWebDAV(t)
	targettest.Run(t, func(t *testing.T) target.Target { return newTarget(t, srv.config(t)) },
		targettest.LockUnsupported(noLocks))
}

// TestConformanceLocal runs the suite on rclone's local backend: every hash, moves by rename.
func TestConformanceLocal(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target {
		return newTarget(t, rclone.Config{Label: "local", Backend: "local", Root: t.TempDir()})
	}, targettest.LockUnsupported(noLocks))
}
