// Package pgtest starts a real PostgreSQL server for tests: initdb into a fresh directory, a
// postgres process on 127.0.0.1 with a random port and a unix socket in that directory, stopped
// when the test ends. It is a thin testing wrapper around devstack.StartPostgres, which the
// end-to-end tests (outside this module) use directly.
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
	"context"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/devstack"
)

// BinDirEnv names a directory holding initdb and postgres; it overrides the default lookup.
const BinDirEnv = devstack.PostgresBinDirEnv

// DefaultBinDir is where Debian's postgresql-15 package installs the server binaries.
const DefaultBinDir = devstack.PostgresDefaultBinDir

// Superuser is the name of the bootstrap superuser initdb creates.
const Superuser = devstack.PostgresSuperuser

// Server is a running PostgreSQL server: Host, Port, SocketDir, Version, DSN and SocketDSN are
// devstack.Postgres's.
type Server struct {
	*devstack.Postgres
}

// BinDir returns the directory that holds initdb and postgres, or an error saying how to
// install them.
func BinDir() (string, error) { return devstack.PostgresBinDir() }

// Start initialises and starts a server for t; it is stopped and removed when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	p, err := devstack.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("postgres output:\n%s", p.Output())
		}
	})
	return &Server{p}
}

// CreateDatabase creates a new, empty database and returns its DSN. Each call makes a new one, so
// tests sharing a server do not see each other's tables.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := s.Postgres.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// StartDatabase starts a server for t and returns the DSN of a fresh database on it.
func StartDatabase(t testing.TB) string {
	t.Helper()
	return Start(t).CreateDatabase(t)
}
