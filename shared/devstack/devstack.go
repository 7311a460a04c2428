// Package devstack starts an embedded nats-server with JetStream for tests and the local stack, and
// for tests a JetStream cluster whose nodes are child processes that can be killed and restarted
// (StartCluster).
// The embedded MongoDB-compatible store lives in devstack/ferret, so that code needing only NATS
// does not link FerretDB.
package devstack

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is a running embedded nats-server.
type NATS struct {
	Server *server.Server
	dir    string
}

// StartNATS starts nats-server with JetStream on a file store under dir, listening on host:port
// (port -1 picks a free one).
func StartNATS(dir, host string, port int) (*NATS, error) {
	s, err := server.NewServer(&server.Options{
		ServerName: "policyhooks-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("devstack: nats-server on %s:%d not ready", host, port)
	}
	return &NATS{Server: s, dir: dir}, nil
}

// URL returns the client URL of the server.
func (n *NATS) URL() string { return n.Server.ClientURL() }

// Shutdown stops the server and waits until it is down.
func (n *NATS) Shutdown() {
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

// Restart stops the server and starts a new one on the same address and store, as a crash and
// restart of the NATS server would.
func (n *NATS) Restart() (*NATS, error) {
	host, portStr, err := net.SplitHostPort(n.Server.Addr().String())
	if err != nil {
		return nil, fmt.Errorf("devstack: restart: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	n.Shutdown()
	return StartNATS(n.dir, host, port)
}

// NATSForTest starts a server on a random loopback port in a temporary directory and stops it
// when the test ends.
func NATSForTest(t testing.TB) *NATS {
	t.Helper()
	n, err := StartNATS(t.TempDir(), "127.0.0.1", -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}
