// Package devstack runs the parts of the Custos dev stack: in-process, a JetStream nats-server
// storing under a directory (production uses an external NATS cluster instead); as processes,
// the storage emulators (clouds.go) and a throwaway PostgreSQL server (postgres.go) that tests
// back up from.
package devstack

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded JetStream server.
type NATS struct {
	srv *server.Server
}

// StartNATS starts a JetStream server on host:port (port -1 picks a free one), storing in dir.
func StartNATS(dir, host string, port int) (*NATS, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "custos-dev", Host: host, Port: port,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		MaxPayload: 1 << 20,
	})
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

// URL is the client URL.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Stop shuts the server down and waits for it. Safe to call twice.
func (n *NATS) Stop() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
