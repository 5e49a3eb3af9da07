// Package devstack runs the parts of the Custos dev stack: in-process, a JetStream nats-server
// storing under a directory (production uses an external NATS cluster instead); as processes,
// the storage emulators (clouds.go) and a throwaway PostgreSQL server (postgres.go) that tests
// back up from.
package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded JetStream server.
type NATS struct {
	srv *server.Server
}

// NATSOption configures StartNATS.
type NATSOption func(*server.Options)

// WithStoreKey encrypts the JetStream store at rest (AES-256-GCM) under key: every stream and
// bucket file under dir is ciphertext, so a copy of the directory, or a grep of it, shows no
// event body, key record or pseudonym. Keep the key apart from dir. AES rather than ChaCha20:
// the server decrypts a whole message block each time it loads one to deliver, acknowledge or
// remove an event, and on CPUs with AES instructions that costs a tenth of ChaCha20's time (it
// was a third of the broker's CPU under a full backup). A store written under ChaCha20 is
// converted by the server when it starts.
func WithStoreKey(key string) NATSOption {
	return func(o *server.Options) {
		o.JetStreamKey = key
		o.JetStreamCipher = server.AES
	}
}

// WithUsers requires every client to authenticate as one of users (NKeys), each limited to its
// role's subjects (see package natsauth).
func WithUsers(users []*server.NkeyUser) NATSOption {
	return func(o *server.Options) { o.Nkeys = users }
}

// WithSyncAlways makes JetStream flush every write to disk before it acknowledges it (sync_interval:
// always), so an acknowledged event survives the machine losing power, not just the process
// being killed. It costs throughput; `custos server` turns it on because its broker is the only
// copy of an event until the event is backed up.
func WithSyncAlways() NATSOption {
	return func(o *server.Options) { o.SyncAlways = true }
}

// StartNATS starts a JetStream server on host:port (port -1 picks a free one), storing in dir.
func StartNATS(dir, host string, port int, opts ...NATSOption) (*NATS, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	o := &server.Options{
		ServerName: "custos-dev", Host: host, Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		MaxPayload: 1 << 20,
	}
	for _, opt := range opts {
		opt(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("devstack: nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("devstack: nats-server did not become ready")
	}
	return &NATS{srv: srv}, nil
}

// LoadOrCreateStoreKey reads the JetStream store key at path, or creates it (64 hex digits of
// random, mode 0600) when missing. Losing it loses the broker's state, never a backup: the
// targets are the record (docs/design.md section 11).
func LoadOrCreateStoreKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k := strings.TrimSpace(string(b))
		if len(k) < 32 {
			return "", fmt.Errorf("devstack: store key %s is shorter than 32 characters", path)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("devstack: read store key: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	k := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateStoreKey(path)
	}
	if err != nil {
		return "", fmt.Errorf("devstack: create store key: %w", err)
	}
	_, err = f.WriteString(k + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return k, err
}

// URL is the client URL.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Stop shuts the server down and waits for it. Safe to call twice.
func (n *NATS) Stop() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
