// Package emulator starts the cloud emulators the tests run against (an S3 server, a GCS server,
// Azurite) as real child processes on 127.0.0.1 with random ports. It is the testing face of
// devstack's process runner: failures fail the test, and processes end with it.
//
// The emulators are installed by `make emulators` (part of `make test`) under .cache/tools in the
// repository. A missing emulator fails the test with that instruction: it never skips.
package emulator

import (
	"testing"

	"github.com/custos-dev/custos/pkg/devstack"
)

// ToolsDirEnv overrides where installed emulators are looked up (default <repo>/.cache/tools).
const ToolsDirEnv = devstack.ToolsDirEnv

// ToolsDir returns the directory the emulators are installed in.
func ToolsDir() (string, error) { return devstack.ToolsDir() }

// Tool returns the path of an installed tool relative to ToolsDir (e.g. "bin/versitygw"), or
// fails t with the command that installs it.
func Tool(t testing.TB, rel string) string {
	t.Helper()
	p, err := devstack.Tool(rel)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Spec describes how to run one emulator process (see devstack.Spec). An empty Dir gets a
// fresh temporary directory.
type Spec = devstack.Spec

// Process is a running emulator; Stop and Start simulate an outage and a recovery.
type Process = devstack.Process

// Start runs spec and waits (up to a minute) until it is ready. The process is killed when the
// test ends, and its output is shown if the test failed.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	p, err := devstack.StartProcess(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", spec.Name, p.Output())
		}
	})
	return p
}
