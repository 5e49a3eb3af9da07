package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBinDirEnv names a directory holding initdb and postgres; it overrides the default
// lookup.
const PostgresBinDirEnv = "CUSTOS_PG_BIN"

// PostgresDefaultBinDir is where Debian's postgresql-15 package installs the server binaries.
const PostgresDefaultBinDir = "/usr/lib/postgresql/15/bin"

// PostgresSuperuser is the name of the bootstrap superuser initdb creates.
const PostgresSuperuser = "postgres"

// Postgres is a running throwaway PostgreSQL server, for tests and the dev stack: initdb into a
// fresh directory, a postgres process on 127.0.0.1 with a random port and a unix socket in that
// directory, fsync off.
//
// The binaries are looked up in $CUSTOS_PG_BIN, then /usr/lib/postgresql/15/bin, then PATH.
// deploy/postgres/install.sh installs them (Debian's postgresql-15). A missing PostgreSQL is an
// error carrying that instruction.
//
// initdb and postgres refuse to run as root. When the caller runs as root (as CI does), the
// server runs as the "postgres" system user (or "nobody" when there is none) through
// SysProcAttr.Credential, in a directory owned by that user.
//
// initdb runs once per PostgreSQL build and user: its result is kept as a template in the system
// temp dir (custos-pgtest-template-*) and each server starts from a copy of it.
type Postgres struct {
	// Host and Port are the TCP address (always 127.0.0.1).
	Host string
	Port int
	// SocketDir holds the unix socket.
	SocketDir string
	// Version is what `postgres --version` printed.
	Version string

	dir      string
	mu       sync.Mutex // guards cmd
	cmd      *exec.Cmd
	waitDone chan struct{}
	out      *syncBuffer
	dbs      atomic.Int64
}

// PostgresBinDir returns the directory that holds initdb and postgres, or an error saying how to
// install them.
func PostgresBinDir() (string, error) {
	if d := os.Getenv(PostgresBinDirEnv); d != "" {
		if err := hasPostgres(d); err != nil {
			return "", fmt.Errorf("devstack: %s=%s: %w (point it at PostgreSQL's bin directory, or unset it and run deploy/postgres/install.sh)", PostgresBinDirEnv, d, err)
		}
		return d, nil
	}
	if hasPostgres(PostgresDefaultBinDir) == nil {
		return PostgresDefaultBinDir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// /usr/local/bin/initdb may be a symlink into the real bin directory, beside postgres.
		if real, err := filepath.EvalSymlinks(p); err == nil && hasPostgres(filepath.Dir(real)) == nil {
			return filepath.Dir(real), nil
		}
		if hasPostgres(filepath.Dir(p)) == nil {
			return filepath.Dir(p), nil
		}
	}
	return "", errors.New("devstack: PostgreSQL server binaries (initdb, postgres) not found in $" + PostgresBinDirEnv +
		", " + PostgresDefaultBinDir + " or PATH: run deploy/postgres/install.sh (as root) from the repository root")
}

func hasPostgres(dir string) error {
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

// StartPostgres initialises and starts a server in a new directory of the system temp dir. Stop
// stops it and removes the directory. The server gets Pdeathsig, so it dies with the calling
// process even if Stop never runs.
func StartPostgres() (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, owner, err := postgresUser()
	if err != nil {
		return nil, err
	}
	// A directory of our own in the system temp dir rather than a test's temp dir, whose parents
	// are private to root: the server user must be able to reach its data directory. The path
	// stays short because a unix socket path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "custos-pg-")
	if err != nil {
		return nil, fmt.Errorf("devstack: postgres: %w", err)
	}
	p := &Postgres{Host: "127.0.0.1", SocketDir: dir, dir: dir, out: &syncBuffer{}}
	fail := func(err error) (*Postgres, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if owner != nil {
		if err := os.Chown(dir, owner.uid, owner.gid); err != nil {
			return fail(fmt.Errorf("devstack: postgres: chown %s to %s: %w", dir, owner.name, err))
		}
	}
	version, err := exec.Command(filepath.Join(bin, "postgres"), "--version").CombinedOutput()
	if err != nil {
		return fail(fmt.Errorf("devstack: %s/postgres --version: %v: %s", bin, err, version))
	}
	p.Version = strings.TrimSpace(string(version))
	data := filepath.Join(dir, "data")
	if err := newDataDir(bin, p.Version, cred, owner, data); err != nil {
		return fail(err)
	}
	// The port is picked free and may be taken by someone else before postgres binds it: retry.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if p.Port, lastErr = FreePort(); lastErr != nil {
			continue
		}
		if lastErr = p.start(bin, data, cred); lastErr == nil {
			return p, nil
		}
	}
	return fail(fmt.Errorf("devstack: postgres: %w\n%s", lastErr, p.out.String()))
}

func (p *Postgres) start(bin, data string, cred *syscall.Credential) error {
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-k", p.SocketDir,
		// A throwaway server: durability off, speed on; enough connections for parallel tests.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=100", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning")
	cmd.Dir = p.dir
	cmd.Env = postgresEnv()
	cmd.Stdout = p.out
	cmd.Stderr = p.out
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
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			continue
		}
		_ = c.Close(ctx)
		p.mu.Lock()
		p.cmd, p.waitDone = cmd, done
		p.mu.Unlock()
		return nil
	}
}

// Stop shuts the server down (killing its process group if that takes too long) and removes its
// directory. Safe to call twice.
func (p *Postgres) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.waitDone
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil {
		// Immediate shutdown: the data directory is thrown away, so no checkpoint is needed.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	_ = os.RemoveAll(p.dir)
}

// Output returns what the server printed so far.
func (p *Postgres) Output() string { return p.out.String() }

// DSN returns a connection string for database db over TCP as the superuser.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", PostgresSuperuser, p.Host, p.Port, db)
}

// SocketDSN returns a connection string for database db over the unix socket.
func (p *Postgres) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", p.SocketDir, p.Port, PostgresSuperuser, db)
}

// CreateDatabase creates a new, empty database and returns its DSN. Each call makes a new one,
// so users sharing a server do not see each other's tables.
func (p *Postgres) CreateDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("custos_test_%d", p.dbs.Add(1))
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("devstack: postgres: connect: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("devstack: postgres: create database %s: %w", name, err)
	}
	return p.DSN(name), nil
}

type pgOwner struct {
	name     string
	uid, gid int
}

// postgresUser returns the credential to run the server with: nil when not root; the postgres
// user (or nobody) when root, because initdb and postgres refuse to run as root.
func postgresUser() (*syscall.Credential, *pgOwner, error) {
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
			&pgOwner{name: name, uid: uid, gid: gid}, nil
	}
	return nil, nil, fmt.Errorf("devstack: running as root and no unprivileged user to run PostgreSQL as (%s)", strings.Join(tried, "; "))
}

// postgresEnv is the environment for initdb and postgres: ours, minus what points into root's
// home (unreadable to the server user) and with a neutral locale.
func postgresEnv() []string {
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

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newDataDir fills data with a fresh cluster: a copy of a template made by initdb once per
// PostgreSQL build and user and kept in the system temp dir (initdb takes seconds; a copy
// does not).
func newDataDir(bin, version string, cred *syscall.Credential, owner *pgOwner, data string) error {
	tmpl, err := templateDir(bin, version, cred, owner)
	if err != nil {
		return err
	}
	return copyTree(tmpl, data, owner)
}

func templateDir(bin, version string, cred *syscall.Credential, owner *pgOwner) (string, error) {
	uid := os.Geteuid()
	if owner != nil {
		uid = owner.uid
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", bin, version, uid)))
	final := filepath.Join(os.TempDir(), "custos-pgtest-template-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(final, "ready")); err == nil {
		return filepath.Join(final, "data"), nil
	}
	// Build beside it and rename into place, so concurrent processes never see half a template;
	// the loser of a race uses the winner's.
	build, err := os.MkdirTemp(os.TempDir(), "custos-pgtest-build-")
	if err != nil {
		return "", fmt.Errorf("devstack: postgres template: %w", err)
	}
	if owner != nil {
		if err := os.Chown(build, owner.uid, owner.gid); err != nil {
			os.RemoveAll(build)
			return "", fmt.Errorf("devstack: postgres template: chown %s to %s: %w", build, owner.name, err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(build, "data"), "-U", PostgresSuperuser,
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = build
	initdb.Env = postgresEnv()
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(build)
		return "", fmt.Errorf("devstack: initdb: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(build, "ready"), nil, 0o644); err != nil {
		os.RemoveAll(build)
		return "", fmt.Errorf("devstack: postgres template: %w", err)
	}
	if err := os.Rename(build, final); err != nil {
		os.RemoveAll(build)
		if _, err2 := os.Stat(filepath.Join(final, "ready")); err2 != nil {
			return "", fmt.Errorf("devstack: postgres template: %w", err)
		}
	}
	return filepath.Join(final, "data"), nil
}

// copyTree copies the directory src to dst (which must not exist), keeping modes and giving
// everything to owner when set.
func copyTree(src, dst string, owner *pgOwner) error {
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
		return fmt.Errorf("devstack: copy template cluster: %w", err)
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
