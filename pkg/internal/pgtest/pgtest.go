// Package pgtest starts a real PostgreSQL server for tests: initdb into a fresh directory, a
// postgres process on 127.0.0.1 with a random port and a unix socket in that directory, stopped
// when the test ends.
//
// The binaries are looked up in $CUSTOS_PG_BIN, then /usr/lib/postgresql/15/bin, then PATH.
// deploy/postgres/install.sh installs them (Debian's postgresql-15). A missing PostgreSQL fails
// the test with that instruction: it never skips.
//
// initdb and postgres refuse to run as root. When the test runs as root (as it does in CI), the
// server runs as the "postgres" system user (or "nobody" when there is none) through
// SysProcAttr.Credential, in a directory owned by that user.
//
// initdb runs once per PostgreSQL build and user: its result is kept as a template in the system
// temp dir (custos-pgtest-template-*) and each server starts from a copy of it.
package pgtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDirEnv names a directory holding initdb and postgres; it overrides the default lookup.
const BinDirEnv = "CUSTOS_PG_BIN"

// DefaultBinDir is where Debian's postgresql-15 package installs the server binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Superuser is the name of the bootstrap superuser initdb creates.
const Superuser = "postgres"

// Server is a running PostgreSQL server.
type Server struct {
	// Host and Port are the TCP address (always 127.0.0.1).
	Host string
	Port int
	// SocketDir holds the unix socket.
	SocketDir string
	// Version is what `postgres --version` printed.
	Version string

	dir      string
	cmd      *exec.Cmd
	waitDone chan struct{}
	out      *lockedBuffer
	dbs      atomic.Int64
}

// BinDir returns the directory that holds initdb and postgres, or an error saying how to
// install them.
func BinDir() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		if err := hasBinaries(d); err != nil {
			return "", fmt.Errorf("pgtest: %s=%s: %w (point it at PostgreSQL's bin directory, or unset it and run deploy/postgres/install.sh)", BinDirEnv, d, err)
		}
		return d, nil
	}
	if hasBinaries(DefaultBinDir) == nil {
		return DefaultBinDir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// /usr/local/bin/initdb may be a symlink into the real bin directory, beside postgres.
		if real, err := filepath.EvalSymlinks(p); err == nil && hasBinaries(filepath.Dir(real)) == nil {
			return filepath.Dir(real), nil
		}
		if hasBinaries(filepath.Dir(p)) == nil {
			return filepath.Dir(p), nil
		}
	}
	return "", errors.New("pgtest: PostgreSQL server binaries (initdb, postgres) not found in $" + BinDirEnv +
		", " + DefaultBinDir + " or PATH: run deploy/postgres/install.sh (as root) from the repository root")
}

func hasBinaries(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", filepath.Join(dir, name))
		}
	}
	return nil
}

// Start initialises and starts a server for t; it is stopped and removed when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cred, owner, err := runAs()
	if err != nil {
		t.Fatal(err)
	}
	// A directory of our own in the system temp dir rather than t.TempDir(): t.TempDir()'s parents
	// are private to root, and the server user must be able to reach its data directory. The path
	// stays short because a unix socket path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "custos-pg-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if owner != nil {
		if err := os.Chown(dir, owner.uid, owner.gid); err != nil {
			t.Fatalf("pgtest: chown %s to %s: %v", dir, owner.name, err)
		}
	}
	data := filepath.Join(dir, "data")
	s := &Server{Host: "127.0.0.1", SocketDir: dir, dir: dir, out: &lockedBuffer{}}

	version, err := exec.Command(filepath.Join(bin, "postgres"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: %s/postgres --version: %v: %s", bin, err, version)
	}
	s.Version = strings.TrimSpace(string(version))

	if err := newDataDir(bin, s.Version, cred, owner, data); err != nil {
		t.Fatal(err)
	}

	// The port is picked free and may be taken by someone else before postgres binds it: retry.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s.Port = freePort(t)
		if lastErr = s.start(bin, data, cred); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("pgtest: %v\n%s", lastErr, s.out.String())
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("postgres output:\n%s", s.out.String())
		}
	})
	return s
}

func (s *Server) start(bin, data string, cred *syscall.Credential) error {
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-h", s.Host, "-p", strconv.Itoa(s.Port), "-k", s.SocketDir,
		// A throwaway server: durability off, speed on; enough connections for parallel tests.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=100", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning")
	cmd.Dir = s.dir
	cmd.Env = serverEnv()
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	// Pdeathsig: the server dies with the test binary even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		select {
		case <-done:
			return errors.New("postgres exited before it was ready")
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return errors.New("postgres not ready within a minute")
		case <-time.After(50 * time.Millisecond):
		}
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			continue
		}
		_ = c.Close(ctx)
		s.cmd = cmd
		s.waitDone = done
		return nil
	}
}

// stop shuts the server down and kills the process group if that takes too long.
func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	// Immediate shutdown: the data directory is thrown away, so no checkpoint is needed.
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.waitDone:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.waitDone
	}
	s.cmd = nil
}

// DSN returns a connection string for database db over TCP as the superuser.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", Superuser, s.Host, s.Port, db)
}

// SocketDSN returns a connection string for database db over the unix socket.
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.SocketDir, s.Port, Superuser, db)
}

// CreateDatabase creates a new, empty database and returns its DSN. Each call makes a new one, so
// tests sharing a server do not see each other's tables.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("custos_test_%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return s.DSN(name)
}

// StartDatabase starts a server for t and returns the DSN of a fresh database on it.
func StartDatabase(t testing.TB) string {
	t.Helper()
	return Start(t).CreateDatabase(t)
}

type owner struct {
	name     string
	uid, gid int
}

// runAs returns the credential to run the server with: nil when not root; the postgres user (or
// nobody) when root, because initdb and postgres refuse to run as root.
func runAs() (*syscall.Credential, *owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	var tried []string
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			tried = append(tried, name+": "+err.Error())
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 != nil || err2 != nil || uid == 0 {
			tried = append(tried, name+": unusable uid/gid "+u.Uid+"/"+u.Gid)
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true},
			&owner{name: name, uid: uid, gid: gid}, nil
	}
	return nil, nil, fmt.Errorf("pgtest: running as root and no unprivileged user to run PostgreSQL as (%s)", strings.Join(tried, "; "))
}

// serverEnv is the environment for initdb and postgres: ours, minus what points into root's home
// (unreadable to the server user) and with a neutral locale.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "LANG", k == "LANGUAGE", strings.HasPrefix(k, "LC_"), strings.HasPrefix(k, "PG"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "HOME=/")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newDataDir fills data with a fresh cluster: a copy of a template made by initdb once per
// PostgreSQL build and user and kept in the system temp dir (initdb takes seconds; a copy
// does not).
func newDataDir(bin, version string, cred *syscall.Credential, owner *owner, data string) error {
	tmpl, err := templateDir(bin, version, cred, owner)
	if err != nil {
		return err
	}
	return copyTree(tmpl, data, owner)
}

func templateDir(bin, version string, cred *syscall.Credential, owner *owner) (string, error) {
	uid := os.Geteuid()
	if owner != nil {
		uid = owner.uid
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", bin, version, uid)))
	final := filepath.Join(os.TempDir(), "custos-pgtest-template-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(final, "ready")); err == nil {
		return filepath.Join(final, "data"), nil
	}
	// Build beside it and rename into place, so concurrent test binaries never see half a
	// template; the loser of a race uses the winner's.
	build, err := os.MkdirTemp(os.TempDir(), "custos-pgtest-build-")
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if owner != nil {
		if err := os.Chown(build, owner.uid, owner.gid); err != nil {
			os.RemoveAll(build)
			return "", fmt.Errorf("pgtest: chown %s to %s: %w", build, owner.name, err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(build, "data"), "-U", Superuser,
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = build
	initdb.Env = serverEnv()
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(build)
		return "", fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(build, "ready"), nil, 0o644); err != nil {
		os.RemoveAll(build)
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if err := os.Rename(build, final); err != nil {
		os.RemoveAll(build)
		if _, err2 := os.Stat(filepath.Join(final, "ready")); err2 != nil {
			return "", fmt.Errorf("pgtest: template: %w", err)
		}
	}
	return filepath.Join(final, "data"), nil
}

// copyTree copies the directory src to dst (which must not exist), keeping modes and giving
// everything to owner when set.
func copyTree(src, dst string, owner *owner) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected file type %s", info.Mode().Type())
		}
		if owner != nil {
			return os.Lchown(target, owner.uid, owner.gid)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgtest: copy template cluster: %w", err)
	}
	return nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
