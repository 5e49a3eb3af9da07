// Package emulator starts the cloud emulators the tests run against (an S3 server, a GCS server,
// Azurite) as real child processes on 127.0.0.1 with random ports.
//
// The emulators are installed by `make emulators` (part of `make test`) under .cache/tools in the
// repository. A missing emulator fails the test with that instruction: it never skips.
package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ToolsDirEnv overrides where installed emulators are looked up (default <repo>/.cache/tools).
const ToolsDirEnv = "CUSTOS_TOOLS_DIR"

// ToolsDir returns the directory the emulators are installed in.
func ToolsDir() (string, error) {
	if d := os.Getenv(ToolsDirEnv); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, ".cache", "tools"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("emulator: repository root (go.work) not found above the working directory; set " + ToolsDirEnv)
		}
		dir = parent
	}
}

// Tool returns the path of an installed tool relative to ToolsDir (e.g. "bin/versitygw"), or
// fails t with the command that installs it.
func Tool(t testing.TB, rel string) string {
	t.Helper()
	dir, err := ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("emulator %s is not installed (%v): run `make emulators` from the repository root", rel, err)
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Spec describes how to run one emulator process.
type Spec struct {
	Name  string   // for messages, e.g. "versitygw"
	Path  string   // executable
	Args  []string // arguments
	Env   []string // extra environment, appended to os.Environ()
	Dir   string   // working directory; empty for a fresh temporary one
	Port  int      // the port the emulator listens on; Start waits until it accepts connections
	Ready func(ctx context.Context) error
	// Ready, when set, is polled after the port opens until it returns nil (e.g. a bucket exists).
}

// Process is a running emulator. Stop and Start may be called repeatedly to simulate an outage;
// the process is killed when the test ends.
type Process struct {
	t    testing.TB
	spec Spec
	log  *bytes.Buffer

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs spec and waits (up to a minute) until it is ready. The process's output is shown if
// the test fails.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	p := &Process{t: t, spec: spec, log: &bytes.Buffer{}}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", spec.Name, p.Output())
		}
	})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// Addr is "127.0.0.1:<port>".
func (p *Process) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.spec.Port) }

// Output returns what the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.log.Write(b)
}

// Start (re)starts a stopped process on the same port and data directory.
func (p *Process) Start() error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return nil
	}
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Dir = p.spec.Dir
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.Stdout = lockedWriter{p}
	cmd.Stderr = lockedWriter{p}
	// A process group of its own, so Stop also ends children (npx starts node, for one).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("emulator %s: start: %w", p.spec.Name, err)
	}
	p.cmd = cmd
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		select {
		case <-done:
			return fmt.Errorf("emulator %s exited before it was ready:\n%s", p.spec.Name, p.Output())
		case <-ctx.Done():
			return fmt.Errorf("emulator %s not ready on %s within a minute:\n%s", p.spec.Name, p.Addr(), p.Output())
		case <-time.After(50 * time.Millisecond):
		}
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			continue
		}
		c.Close()
		if p.spec.Ready == nil || p.spec.Ready(ctx) == nil {
			return nil
		}
	}
}

// Stop kills the process (SIGKILL to its group: an outage, not a shutdown) and waits until its
// port is closed.
func (p *Process) Stop() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", p.Addr(), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}
