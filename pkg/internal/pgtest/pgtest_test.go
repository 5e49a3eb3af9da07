package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStart(t *testing.T) {
	s := Start(t)
	t.Logf("%s on %s:%d", s.Version, s.Host, s.Port)
	ctx := context.Background()
	for _, dsn := range []string{s.CreateDatabase(t), s.SocketDSN("postgres")} {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 1 + 1").Scan(&n); err != nil || n != 2 {
			t.Fatalf("query: %d, %v", n, err)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBinDirOverride(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	if _, err := BinDir(); err == nil {
		t.Fatal("BinDir accepted a directory without initdb")
	}
}
