package devstack

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// nodeEnv names the environment variable that makes a re-executed binary a cluster node: it holds
// the path of the node's nats-server configuration file. StartCluster sets it for its children only.
const nodeEnv = "POLICYHOOKS_DEVSTACK_NODE"

// nodeReadyLine is what a node prints on its standard output once it accepts connections.
const nodeReadyLine = "devstack: cluster node ready"

// RunClusterNode makes the running binary a node of a cluster started by StartCluster, when it was
// started as one, and reports ok; otherwise it returns at once with ok false. StartCluster
// re-executes the running binary (the test binary) for each node, so that a node is a process of
// its own that can be killed; call RunClusterNode first thing in TestMain of every package that
// starts a cluster:
//
//	func TestMain(m *testing.M) {
//		if code, ok := devstack.RunClusterNode(); ok {
//			os.Exit(code)
//		}
//		os.Exit(m.Run())
//	}
//
// The node runs nats-server on its configuration file until SIGTERM or SIGINT (a graceful
// shutdown, which hands its raft leaderships over first) or until its standard input ends (the
// parent is gone); SIGKILL crashes it. code is the exit code.
func RunClusterNode() (code int, ok bool) {
	conf := os.Getenv(nodeEnv) // test plumbing set by StartCluster, not configuration
	if conf == "" {
		return 0, false
	}
	if err := runNode(conf, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "devstack: cluster node:", err)
		return 1, true
	}
	return 0, true
}

func runNode(conf string, stdin io.Reader) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return fmt.Errorf("config %s: %w", conf, err)
	}
	opts.NoSigs = true // the node handles SIGTERM itself, below
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	s.ConfigureLogger() // to standard error, which the parent appends to the node's log file
	go s.Start()
	if !s.ReadyForConnections(time.Minute) {
		s.Shutdown()
		return fmt.Errorf("nats-server %s not ready for connections after a minute", opts.ServerName)
	}
	fmt.Println(nodeReadyLine)
	parentGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(parentGone)
	}()
	select {
	case sig := <-stop:
		s.Noticef("devstack: got %v, shutting down", sig)
	case <-parentGone:
		s.Noticef("devstack: standard input closed (the parent is gone), shutting down")
	}
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
