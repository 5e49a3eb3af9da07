package devstack

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
	"time"
)

// ToolsDirEnv overrides where installed emulators are looked up (default <repo>/.cache/tools,
// where `make emulators` installs them).
const ToolsDirEnv = "CUSTOS_TOOLS_DIR"

// ToolsDir returns the directory the emulators are installed in: $CUSTOS_TOOLS_DIR, or
// .cache/tools in the first directory above the working directory that holds go.work.
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
			return "", errors.New("devstack: repository root (go.work) not found above the working directory; set " + ToolsDirEnv)
		}
		dir = parent
	}
}

// Tool returns the path of an installed tool relative to ToolsDir (e.g. "bin/versitygw").
func Tool(rel string) (string, error) {
	dir, err := ToolsDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not installed (%w): run `make emulators` from the repository root", rel, err)
	}
	return p, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("devstack: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Spec describes how to run one emulator process.
type Spec struct {
	Name string   // for messages, e.g. "versitygw"
	Path string   // executable
	Args []string // arguments
	Env  []string // extra environment, appended to os.Environ()
	Dir  string   // working directory (must exist)
	Port int      // the port it listens on; Start waits until it accepts connections
	// Ready, when set, is polled after the port opens until it returns nil.
	Ready func(ctx context.Context) error
}

// Process is a running emulator. Stop and Start may be called repeatedly (an outage and a
// recovery); the data directory and port stay the same.
type Process struct {
	spec Spec

	mu  sync.Mutex
	log bytes.Buffer
	cmd *exec.Cmd
}

// StartProcess runs spec and waits (up to a minute) until it is ready.
func StartProcess(spec Spec) (*Process, error) {
	p := &Process{spec: spec}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
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

// Start (re)starts a stopped process.
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
	// A process group of its own, so Stop also ends children (node under a shim, for one);
	// Pdeathsig so nothing outlives a killed parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("emulator %s: start: %w", p.spec.Name, err)
	}
	p.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		select {
		case <-exited:
			return fmt.Errorf("emulator %s exited before it was ready:\n%s", p.spec.Name, p.Output())
		case <-ctx.Done():
			p.Stop()
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

// Stop kills the process group (SIGKILL: an outage, not a shutdown) and waits until the port
// is closed. Safe to call when stopped.
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
