package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/natsauth"
)

func TestGenerateKeepsSeeds(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "auth")
	first, err := natsauth.Generate(dir, natsauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Users()) != len(natsauth.Roles) {
		t.Fatalf("%d users, want one per role", len(first.Users()))
	}
	seen := map[string]bool{}
	for i, u := range first.Users() {
		if u.Role != natsauth.Roles[i] || !strings.HasPrefix(u.PublicKey, "U") || seen[u.PublicKey] {
			t.Fatalf("user %+v", u)
		}
		seen[u.PublicKey] = true
		if u.SeedFile != filepath.Join(dir, string(u.Role)+natsauth.SeedExt) {
			t.Fatalf("seed file %s", u.SeedFile)
		}
		fi, err := os.Stat(u.SeedFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", u.SeedFile, fi.Mode().Perm())
		}
	}
	// A loosened mode is tightened again; every key is kept.
	if err := os.Chmod(first.Users()[0].SeedFile, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := natsauth.Generate(dir, natsauth.Options{ReserveDeletion: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.Users(), again.Users()) {
		t.Fatalf("generating again changed the users:\n%v\n%v", first.Users(), again.Users())
	}
	if fi, _ := os.Stat(first.Users()[0].SeedFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v not tightened", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != len(natsauth.Roles) {
		t.Fatalf("%d files in %s, want only the seeds", len(entries), dir)
	}

	// A file that holds no seed is reported, never replaced.
	bad := filepath.Join(dir, string(natsauth.Auditor)+natsauth.SeedExt)
	if err := os.WriteFile(bad, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.Generate(dir, natsauth.Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("got %v, want an error naming %s", err, bad)
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a seed\n" {
		t.Fatal("the bad seed file was overwritten")
	}
}

func TestConnectOption(t *testing.T) {
	t.Parallel()
	set, err := natsauth.Generate(t.TempDir(), natsauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := set.User(natsauth.Worker)
	opt, err := natsauth.ConnectOption(u.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	o := nats.GetDefaultOptions()
	if err := opt(&o); err != nil {
		t.Fatal(err)
	}
	if o.Nkey != u.PublicKey || o.InboxPrefix != natsauth.InboxPrefix(natsauth.Worker) {
		t.Fatalf("nkey %q inbox %q", o.Nkey, o.InboxPrefix)
	}
	if _, err := natsauth.ConnectOption(filepath.Join(t.TempDir(), "missing.nk")); err == nil {
		t.Fatal("no error for a missing seed file")
	}
}

// The rendered authorization block gives nats-server exactly the users ServerUsers gives an
// embedded server.
func TestServerConfig(t *testing.T) {
	t.Parallel()
	for _, opts := range []natsauth.Options{{}, {ReserveDeletion: true, UploadBuckets: []string{}}} {
		set, err := natsauth.Generate(t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "nats-auth.conf")
		if err := os.WriteFile(path, []byte(set.ServerConfig()), 0o600); err != nil {
			t.Fatal(err)
		}
		parsed, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("%v\n%s", err, set.ServerConfig())
		}
		want := set.ServerUsers()
		if len(parsed.Nkeys) != len(want) {
			t.Fatalf("%d users parsed, want %d", len(parsed.Nkeys), len(want))
		}
		for i, u := range want {
			got := parsed.Nkeys[i]
			if got.Nkey != u.Nkey || !samePermissions(got.Permissions, u.Permissions) {
				t.Fatalf("user %d parsed as %+v, want %+v", i, got, u)
			}
		}
	}
}

func samePermissions(a, b *server.Permissions) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	same := func(x, y *server.SubjectPermission) bool {
		if x == nil || y == nil {
			return x == nil && y == nil
		}
		return slices.Equal(x.Allow, y.Allow) && slices.Equal(x.Deny, y.Deny)
	}
	return same(a.Publish, b.Publish) && same(a.Subscribe, b.Subscribe) && a.Response == nil && b.Response == nil
}

// deploy/nats/nats-server.conf, with the file `custos auth generate` writes beside it, runs a
// server that stores encrypted and refuses clients without a credential.
func TestDeployConfig(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	set, err := natsauth.Generate(filepath.Join(dir, "seeds"), natsauth.Options{ReserveDeletion: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"nats-server.conf": string(src), "nats-auth.conf": set.ServerConfig()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CUSTOS_JS_KEY", "a-test-key-for-the-jetstream-store-0123456789")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.JetStreamCipher != server.AES || opts.JetStreamKey != "a-test-key-for-the-jetstream-store-0123456789" || !opts.JetStream {
		t.Fatalf("jetstream: enabled %v, cipher %v, key %q", opts.JetStream, opts.JetStreamCipher, opts.JetStreamKey)
	}
	if len(opts.Nkeys) != len(natsauth.Roles) {
		t.Fatalf("%d users, want %d", len(opts.Nkeys), len(natsauth.Roles))
	}
	// Run it here: a free port, a temporary store, no monitoring, no cluster.
	store := t.TempDir()
	opts.StoreDir, opts.Host, opts.Port, opts.HTTPPort, opts.HTTPHost = store, "127.0.0.1", -1, 0, ""
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	if nc, err := nats.Connect(srv.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connect: %v", err)
	}
	u, _ := set.User(natsauth.Admin)
	auth, err := natsauth.ConnectOption(u.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), auth)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "PLAIN", Subjects: []string{"plain"}}); err != nil {
		t.Fatal(err)
	}
	const marker = "customer-record-in-the-clear"
	if _, err := js.Publish(ctx(t), "plain", []byte(marker)); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	err = filepath.WalkDir(store, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), marker) {
			t.Errorf("%s holds a message in the clear", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
