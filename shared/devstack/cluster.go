package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoLeader is returned when a raft group (the meta group, a stream, a KV bucket or a consumer)
// has no leader at the moment, as while it elects one.
var ErrNoLeader = errors.New("devstack: no leader")

// clusterName is the nats-server cluster name of every cluster StartCluster starts.
const clusterName = "devstack"

// stopTimeout bounds a graceful Stop before the node is killed.
const stopTimeout = 30 * time.Second

// Cluster is a JetStream cluster of nats-server nodes, each a child process (the running binary,
// re-executed, see RunClusterNode) that can be killed with SIGKILL and restarted on the same store
// and ports.
type Cluster struct {
	nodes []*Node
}

// Node is one node of a Cluster. Its methods may be called from any goroutine.
type Node struct {
	name    string
	self    string // the executable re-executed as the node
	dir     string // the node's directory: config, log and store
	conf    string
	logPath string
	client  int // client port
	http    int // monitoring port (/healthz, /jsz)

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	starts int
}

// StartCluster starts an n-node JetStream cluster (nodes n1…nN, cluster "devstack") listening on
// 127.0.0.1, each node with its config, log (node.log) and store under dir/<name>, and returns
// once every node accepts connections; WaitReady waits for the meta leader. Every node lists the
// routes of all nodes, itself included, so that the meta group knows its size before the nodes
// meet. The nodes are the running binary re-executed, which must call RunClusterNode from
// TestMain. Close them with Close.
func StartCluster(ctx context.Context, dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("devstack: cluster of %d nodes", n)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("devstack: cluster: %w", err)
	}
	for attempt := 1; ; attempt++ {
		c, err := startCluster(ctx, self, dir, n)
		if err == nil {
			return c, nil
		}
		// Another process may have bound a port between freePorts and the node's listen; new ports
		// then. Any other failure is returned as it is.
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return nil, err
		}
	}
}

var errPortTaken = errors.New("address already in use")

func startCluster(ctx context.Context, self, dir string, n int) (*Cluster, error) {
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1])
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		nd := &Node{
			name:    name,
			self:    self,
			dir:     filepath.Join(dir, name),
			client:  ports[3*i],
			http:    ports[3*i+2],
			logPath: filepath.Join(dir, name, "node.log"),
			conf:    filepath.Join(dir, name, "node.conf"),
		}
		// A fresh store: a retry after a taken port must not find the last attempt's.
		if err := os.RemoveAll(nd.dir); err != nil {
			return nil, fmt.Errorf("devstack: cluster: %w", err)
		}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return nil, fmt.Errorf("devstack: cluster: %w", err)
		}
		conf := nodeConfig(name, nd.client, ports[3*i+1], nd.http, filepath.Join(nd.dir, "store"), routes)
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("devstack: cluster: %w", err)
		}
		c.nodes = append(c.nodes, nd)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range c.nodes {
		wg.Go(func() { errs[i] = nd.start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// nodeConfig returns the nats-server configuration of one node.
func nodeConfig(name string, client, cluster, http int, store string, routes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\n", name)
	// Timestamps in the node's log, to line its events up with a test's (a config file leaves them
	// off, unlike the nats-server command line).
	b.WriteString("logtime: true\n")
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\n", client)
	fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", http)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", store)
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", clusterName, cluster)
	for _, r := range routes {
		fmt.Fprintf(&b, "    %q\n", r)
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// freePorts returns n distinct loopback ports that were free a moment ago. They are picked in
// 20000–32767, below the ephemeral range Linux (32768–60999) and most systems give outgoing
// connections, so that a client's connection cannot take the port of a node while it is down (as
// nats-server's own cluster tests do).
func freePorts(n int) ([]int, error) {
	const lo, hi = 20000, 32768
	seen := make(map[int]bool)
	out := make([]int, 0, n)
	for tries := 0; len(out) < n; tries++ {
		if tries == 100*n {
			return nil, fmt.Errorf("devstack: cluster: no %d free loopback ports in %d-%d", n, lo, hi-1)
		}
		p := lo + rand.IntN(hi-lo)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		out = append(out, p)
	}
	return out, nil
}

// ClusterForTest starts an n-node cluster in a temporary directory, waits until it is ready
// (WaitReady) and kills its nodes when the test ends; when the test failed, it first logs the end
// of each node's log. The test's package must call RunClusterNode from TestMain.
func ClusterForTest(t testing.TB, n int) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := StartCluster(ctx, t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("devstack: end of %s:\n%s", nd.logPath, nd.LogTail(25))
			}
		}
	})
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// URLs returns the client URLs of all nodes, comma-separated (a NATS_URL, or nats.Connect's
// argument).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = nd.URL()
	}
	return strings.Join(urls, ",")
}

// Node returns node i, counting from 0 (its name is n<i+1>).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Nodes returns the nodes in order.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// NodeByName returns the node with the nats-server name name, nil if there is none.
func (c *Cluster) NodeByName(name string) *Node {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	return nil
}

// Close kills every running node and waits until they have exited.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		wg.Go(func() { _ = nd.Kill() })
	}
	wg.Wait()
}

// WaitReady waits until the cluster has a meta leader (JetStream account info is answered), every
// running node is healthy (its /healthz: current with the meta leader and in every stream and
// consumer it holds), and the meta leader lists every other running node as online and current,
// polling with short timeouts. It returns the last reason when ctx ends first.
//
// The last check matters to a caller that creates a replicated asset next: a node's own /healthz
// can pass before the meta leader has heard from it, and until then the leader counts it offline
// and refuses to place an asset on it (10005 "no suitable peers for placement, peer offline").
func (c *Cluster) WaitReady(ctx context.Context) error {
	nc, err := nats.Connect(c.URLs(), nats.Name("devstack"), nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Timeout(time.Second))
	if err != nil {
		return fmt.Errorf("devstack: cluster ready: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("devstack: cluster ready: %w", err)
	}
	return poll(ctx, "devstack: cluster ready", func(ctx context.Context) error {
		if _, err := js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("no meta leader answers: %w", err)
		}
		for _, nd := range c.nodes {
			if !nd.Running() {
				continue
			}
			if err := nd.Healthy(ctx); err != nil {
				return err
			}
		}
		return c.peersOnline(ctx)
	})
}

// peersOnline returns nil when the meta leader's /jsz lists every other running node among the
// meta group's replicas, current and not offline.
func (c *Cluster) peersOnline(ctx context.Context) error {
	leader, err := c.MetaLeader(ctx)
	if err != nil {
		return err
	}
	type peer struct {
		Name    string `json:"name"`
		Current bool   `json:"current"`
		Offline bool   `json:"offline"`
	}
	var jsz struct {
		Meta *struct {
			Leader   string `json:"leader"`
			Replicas []peer `json:"replicas"`
		} `json:"meta_cluster"`
	}
	if err := leader.getJSON(ctx, "/jsz", &jsz); err != nil {
		return err
	}
	if jsz.Meta == nil || jsz.Meta.Leader != leader.name {
		return fmt.Errorf("devstack: meta leader %s: %w", leader.name, ErrNoLeader)
	}
	for _, nd := range c.nodes {
		if !nd.Running() || nd == leader {
			continue
		}
		i := slices.IndexFunc(jsz.Meta.Replicas, func(r peer) bool { return r.Name == nd.name })
		if i < 0 || !jsz.Meta.Replicas[i].Current || jsz.Meta.Replicas[i].Offline {
			return fmt.Errorf("devstack: meta leader %s does not list %s online and current yet", leader.name, nd.name)
		}
	}
	return nil
}

// poll calls check, each call bounded by a second, every 100 ms until it returns nil or ctx ends;
// then it returns check's last error, prefixed by op.
func poll(ctx context.Context, op string, check func(context.Context) error) error {
	start := time.Now()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not after %s: %w", op, time.Since(start).Round(time.Millisecond), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MetaLeader returns the leader of the meta group, as the first running node whose monitoring
// endpoint answers names it; ErrNoLeader while there is none.
func (c *Cluster) MetaLeader(ctx context.Context) (*Node, error) {
	var errs []error
	for _, nd := range c.nodes {
		if !nd.Running() {
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if err := nd.getJSON(ctx, "/jsz", &jsz); err != nil {
			errs = append(errs, err)
			continue
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return nil, fmt.Errorf("devstack: meta leader: %w", ErrNoLeader)
		}
		return c.named(jsz.Meta.Leader)
	}
	return nil, fmt.Errorf("devstack: meta leader: no running node answers: %w", errors.Join(errs...))
}

// StreamLeader returns the node leading stream, as the stream's info names it; ErrNoLeader while
// the stream elects one.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (*Node, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("devstack: leader of stream %s: %w", stream, err)
	}
	nd, err := c.leader(s.CachedInfo().Cluster)
	if err != nil {
		return nil, fmt.Errorf("devstack: leader of stream %s: %w", stream, err)
	}
	return nd, nil
}

// KVLeader returns the node leading the KV bucket's stream (KV_<bucket>).
func (c *Cluster) KVLeader(ctx context.Context, js jetstream.JetStream, bucket string) (*Node, error) {
	return c.StreamLeader(ctx, js, kvStream(bucket))
}

// ConsumerLeader returns the node leading the consumer of stream; ErrNoLeader while it elects one.
func (c *Cluster) ConsumerLeader(ctx context.Context, js jetstream.JetStream, stream, consumer string) (*Node, error) {
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, fmt.Errorf("devstack: leader of consumer %s > %s: %w", stream, consumer, err)
	}
	nd, err := c.leader(cons.CachedInfo().Cluster)
	if err != nil {
		return nil, fmt.Errorf("devstack: leader of consumer %s > %s: %w", stream, consumer, err)
	}
	return nd, nil
}

func kvStream(bucket string) string { return "KV_" + bucket }

func (c *Cluster) leader(ci *jetstream.ClusterInfo) (*Node, error) {
	if ci == nil {
		return nil, errors.New("no cluster information: not clustered")
	}
	if ci.Leader == "" {
		return nil, ErrNoLeader
	}
	return c.named(ci.Leader)
}

func (c *Cluster) named(name string) (*Node, error) {
	if nd := c.NodeByName(name); nd != nil {
		return nd, nil
	}
	return nil, fmt.Errorf("devstack: no node named %q", name)
}

// WaitStreamCurrent waits until stream has a leader and every other replica it was configured
// with is online and current (caught up with the leader), polling its info. For a KV bucket, pass
// its stream, KV_<bucket>. It returns the last state seen when ctx ends first.
func (c *Cluster) WaitStreamCurrent(ctx context.Context, js jetstream.JetStream, stream string) error {
	return poll(ctx, "devstack: stream "+stream+" current", func(ctx context.Context) error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		ci := info.Cluster
		if ci == nil || ci.Leader == "" {
			return ErrNoLeader
		}
		var behind []string
		for _, p := range ci.Replicas {
			if !p.Current || p.Offline {
				behind = append(behind, fmt.Sprintf("%s (current %t, offline %t, lag %d)", p.Name, p.Current, p.Offline, p.Lag))
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("leader %s; replicas not current: %s", ci.Leader, strings.Join(behind, ", "))
		}
		if want := info.Config.Replicas - 1; len(ci.Replicas) < want {
			return fmt.Errorf("leader %s; %d of %d other replicas listed", ci.Leader, len(ci.Replicas), want)
		}
		return nil
	})
}

// Name returns the node's nats-server name (n1, n2, …).
func (n *Node) Name() string { return n.name }

// URL returns the node's client URL; it stays the same across restarts.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.client) }

// Dir returns the node's directory: node.conf, node.log and the store.
func (n *Node) Dir() string { return n.dir }

// Running reports whether the node's process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && !isClosed(n.done)
}

// Pid returns the process id of the running node, 0 when it does not run.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || isClosed(n.done) {
		return 0
	}
	return n.cmd.Process.Pid
}

// Kill crashes the node: SIGKILL, then it waits until the process has exited. Killing a node that
// does not run does nothing.
func (n *Node) Kill() error {
	cmd, done := n.current()
	if cmd == nil {
		return nil
	}
	n.note("SIGKILL")
	if err := cmd.Process.Kill(); err != nil && !isClosed(done) {
		return fmt.Errorf("devstack: kill %s: %w", n.name, err)
	}
	<-done
	return nil
}

// Stop stops the node gracefully (SIGTERM: nats-server hands its raft leaderships over and shuts
// down) and waits until it has exited; after 30 s it kills it and says so. Stopping a node that
// does not run does nothing.
func (n *Node) Stop() error {
	cmd, done := n.current()
	if cmd == nil {
		return nil
	}
	n.note("SIGTERM")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !isClosed(done) {
		return fmt.Errorf("devstack: stop %s: %w", n.name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("devstack: stop %s: still running after %s, killed", n.name, stopTimeout)
	}
}

// Restart starts the node again with the same configuration, store and ports, stopping it
// gracefully first if it runs, and waits until it accepts connections.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.start(ctx)
}

// Healthy returns nil when the node's /healthz answers 200: JetStream is current with the meta
// leader and in every stream and consumer the node holds.
func (n *Node) Healthy(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.http), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("devstack: %s healthz: %w", n.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devstack: %s healthz: %s: %s", n.name, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func (n *Node) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", n.http, path), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("devstack: %s %s: %w", n.name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devstack: %s %s: %s", n.name, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("devstack: %s %s: %w", n.name, path, err)
	}
	return nil
}

// LogTail returns the last lines of the node's log (nats-server's and devstack's lines, across
// restarts), each cut to 400 bytes.
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	var out strings.Builder
	for _, l := range all {
		if len(l) > 400 {
			l = l[:400] + "…"
		}
		out.WriteString("    " + l + "\n")
	}
	return out.String()
}

// current returns the running process and its done channel, nil when none runs.
func (n *Node) current() (*exec.Cmd, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || isClosed(n.done) {
		return nil, nil
	}
	return n.cmd, n.done
}

// start starts the node's process, unless it runs, and waits until it prints that it accepts
// connections.
func (n *Node) start(ctx context.Context) error {
	n.mu.Lock()
	if n.cmd != nil && !isClosed(n.done) {
		n.mu.Unlock()
		return nil
	}
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("devstack: start %s: %w", n.name, err)
	}
	n.starts++
	fmt.Fprintf(logFile, "---- devstack: start #%d of %s at %s\n", n.starts, n.name, time.Now().Format(time.RFC3339Nano))
	// -test.run=^$: a test binary without the RunClusterNode hook runs no test and exits, which
	// start reports, instead of running the tests again.
	cmd := exec.Command(n.self, "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+n.conf)
	ready := make(chan struct{})
	cmd.Stdout = &readyWriter{w: logFile, ready: ready}
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe() // never written: the node watches for its end
	if err != nil {
		logFile.Close()
		n.mu.Unlock()
		return fmt.Errorf("devstack: start %s: %w", n.name, err)
	}
	if err := StartChild(cmd); err != nil {
		logFile.Close()
		n.mu.Unlock()
		return fmt.Errorf("devstack: start %s: %w", n.name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		_ = stdin.Close()
		n.note(fmt.Sprintf("exited: %v", exitText(err)))
		logFile.Close()
		close(done)
	}()

	select {
	case <-ready:
		return nil
	case <-done:
		tail := n.LogTail(15)
		err := fmt.Errorf("devstack: %s exited before it was ready (does TestMain call devstack.RunClusterNode?); end of %s:\n%s", n.name, n.logPath, tail)
		if strings.Contains(tail, errPortTaken.Error()) {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return err
	case <-ctx.Done():
		_ = n.Kill()
		return fmt.Errorf("devstack: %s not ready: %w; end of %s:\n%s", n.name, ctx.Err(), n.logPath, n.LogTail(15))
	}
}

// note appends a devstack line to the node's log.
func (n *Node) note(what string) {
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "---- devstack: %s %s at %s\n", n.name, what, time.Now().Format(time.RFC3339Nano))
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// readyWriter passes a node's standard output on to w and closes ready at the node's ready line.
type readyWriter struct {
	w     io.Writer
	ready chan struct{}
	seen  bool
	line  []byte // the unfinished last line
}

func (r *readyWriter) Write(p []byte) (int, error) {
	if !r.seen {
		r.line = append(r.line, p...)
		for {
			i := bytes.IndexByte(r.line, '\n')
			if i < 0 {
				break
			}
			if string(r.line[:i]) == nodeReadyLine {
				r.seen = true
				close(r.ready)
				break
			}
			r.line = r.line[i+1:]
		}
		if len(r.line) > 4096 {
			r.line = r.line[len(r.line)-4096:]
		}
	}
	return r.w.Write(p)
}
