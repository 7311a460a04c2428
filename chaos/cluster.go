package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Services built from the source tree, by directory under services/.
var services = []string{"config", "callback", "executor"}

// FindRepoRoot walks up from dir to the directory holding go.work and services/executor.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "go.work")) && isDir(filepath.Join(dir, "services", "executor")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("chaos: no policyhooks repository (go.work and services/executor) above the working directory")
		}
		dir = parent
	}
}

func isFile(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }
func isDir(p string) bool  { st, err := os.Stat(p); return err == nil && st.IsDir() }

// Build builds the three services from src into out (go build -o out/<name> ./services/<name>),
// in parallel. It uses src's own go.work, whatever GOWORK the test runs with.
func Build(ctx context.Context, src, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(services))
	for i, name := range services {
		wg.Go(func() {
			cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(out, name), "./services/"+name)
			cmd.Dir = src
			cmd.Env = withoutEnv(os.Environ(), "GOWORK")
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build ./services/%s in %s: %v\n%s", name, src, err, b)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Cluster is the system under test: a NATS node and the FerretDB store (the test binary re-executed
// in a role, see RunRole), config, callback and the executors, each a supervised process.
type Cluster struct {
	Dir         string
	NATSURL     string
	StoreURI    string
	ConfigURL   string
	CallbackURL string
	AppKey      string
	RootID      string
	RootSecret  string

	NATS      *Proc
	Store     *Proc
	Config    *Proc
	Callback  *Proc
	Executors []*Proc

	logf Logf
}

// ClusterConfig is what a cluster is made of.
type ClusterConfig struct {
	Dir       string // logs and data
	Bin       string // the built services
	Self      string // the test binary, re-executed as the NATS node and the store
	Executors int
	CAFile    string // the receivers' CA (WEBHOOK_CA_FILE)
	Start     time.Time
	Logf      Logf
	// NATSURL, when set, is a NATS the suite does not run (a cluster's URLs, comma-separated): the
	// cluster then has no NATS process (NATS is nil). Empty: the suite runs its own node.
	NATSURL string
	// Replicas is the services' NATS_REPLICAS; 0 leaves it unset (1).
	Replicas int
}

// NewCluster lays out the processes on fixed loopback ports, so that restarts keep their
// addresses; nothing runs yet.
func NewCluster(cc ClusterConfig) (*Cluster, error) {
	ports := make([]int, 4+cc.Executors)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	natsPort, storePort, configPort, callbackPort := ports[0], ports[1], ports[2], ports[3]
	c := &Cluster{
		Dir:         cc.Dir,
		NATSURL:     fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		StoreURI:    fmt.Sprintf("mongodb://127.0.0.1:%d/?maxPoolSize=1", storePort),
		ConfigURL:   fmt.Sprintf("http://127.0.0.1:%d", configPort),
		CallbackURL: fmt.Sprintf("http://127.0.0.1:%d", callbackPort),
		AppKey:      randomHex(16), // 32 characters
		RootID:      "chaos-root",
		RootSecret:  randomHex(24),
		logf:        cc.Logf,
	}
	logDir := filepath.Join(cc.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logOf := func(name string) string { return filepath.Join(logDir, name+".log") }
	roleEnv := baseEnv()
	if cc.NATSURL != "" {
		c.NATSURL = cc.NATSURL
	} else {
		c.NATS = NewProc("nats", cc.Self,
			[]string{"-chaos.role=nats", "-chaos.dir=" + filepath.Join(cc.Dir, "nats"), "-chaos.port=" + strconv.Itoa(natsPort)},
			roleEnv, logOf("nats"), c.natsReady, cc.Start, cc.Logf)
	}
	c.Store = NewProc("store", cc.Self,
		[]string{"-chaos.role=store", "-chaos.dir=" + filepath.Join(cc.Dir, "store"), "-chaos.addr=" + fmt.Sprintf("127.0.0.1:%d", storePort)},
		roleEnv, logOf("store"), tcpReady(fmt.Sprintf("127.0.0.1:%d", storePort)), cc.Start, cc.Logf)

	common := append(baseEnv(),
		"APP_ENCRYPTION_KEY="+c.AppKey,
		"OAUTH_ROOT_CLIENT_ID="+c.RootID,
		"OAUTH_ROOT_CLIENT_SECRET="+c.RootSecret,
		"NATS_URL="+c.NATSURL,
		"LOG_LEVEL=info",
		"LOG_FORMAT=json",
	)
	if cc.Replicas > 0 {
		common = append(common, "NATS_REPLICAS="+strconv.Itoa(cc.Replicas))
	}
	with := func(addr string, kv ...string) []string {
		return append(append(append([]string(nil), common...), "HTTP_ADDR="+addr), kv...)
	}
	bin := func(name string) string { return filepath.Join(cc.Bin, name) }
	cfgAddr := fmt.Sprintf("127.0.0.1:%d", configPort)
	c.Config = NewProc("config", bin("config"), nil, with(cfgAddr,
		"MONGODB_URI="+c.StoreURI,
		"MONGODB_DATABASE=policyhooks",
		"WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
		"WEBHOOK_CA_FILE="+cc.CAFile,
		"PRE_APPROVAL=true",
	), logOf("config"), httpReady(c.ConfigURL), cc.Start, cc.Logf)
	cbAddr := fmt.Sprintf("127.0.0.1:%d", callbackPort)
	c.Callback = NewProc("callback", bin("callback"), nil, with(cbAddr), logOf("callback"), httpReady(c.CallbackURL), cc.Start, cc.Logf)
	for i := range cc.Executors {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[4+i])
		name := fmt.Sprintf("executor-%d", i+1)
		c.Executors = append(c.Executors, NewProc(name, bin("executor"), nil, with(addr,
			"WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
			"WEBHOOK_CA_FILE="+cc.CAFile,
			"CALLBACK_PUBLIC_URL="+c.CallbackURL,
			"WEBHOOK_TIMEOUT=3s",
			"WEBHOOK_MAX_ATTEMPTS=10",
			// Not in SPEC §8, read by the executor at ecfa425: short backoffs keep the short form short.
			"WEBHOOK_RETRY_BASE_DELAY=250ms",
			"WEBHOOK_RETRY_MAX_DELAY=2s",
			"EXECUTION_STAGE=await",
			// A NATS node SIGKILLed may bring back identities removed just before (a removed
			// message revived as it recovers); the sweep removes them again within seconds here.
			"IDENTITY_SWEEP_INTERVAL=3s",
			// Circuit breakers on (SPEC §6.3), so that their writes, probes and holds run under
			// the faults too: two 503s in a row (the receivers answer about one call in twelve
			// so) open a connection's breaker, and every request must still complete. The
			// statistics count the openings and closings.
			"CIRCUIT_BREAKER_FAILURES=2",
			"CIRCUIT_BREAKER_COOLDOWN=1s",
		), logOf(name), httpReady("http://"+addr), cc.Start, cc.Logf))
	}
	return c, nil
}

// baseEnv is the environment every child starts from: only what a Go program and the race
// detector need, so that nothing of the developer's environment (NATS_URL, ...) leaks in.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Cluster) natsReady(ctx context.Context) error {
	nc, err := nats.Connect(c.NATSURL, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	return nc.FlushWithContext(ctx)
}

func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

func httpReady(base string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ready", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /ready: %d", resp.StatusCode)
		}
		return nil
	}
}

// Procs returns every process, in start order (without NATS when the suite does not run it).
func (c *Cluster) Procs() []*Proc {
	var out []*Proc
	for _, p := range append([]*Proc{c.Store, c.NATS, c.Config, c.Callback}, c.Executors...) {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// StartTimeout bounds how long a process may take to become ready.
const StartTimeout = 60 * time.Second

// Start starts every process that does not run, in order, and waits until each is ready.
func (c *Cluster) Start(ctx context.Context) error {
	for _, p := range c.Procs() {
		if err := p.Start(ctx, StartTimeout); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every process, executors first, NATS and the store last.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, p := range c.Executors {
		wg.Go(func() { p.Close(20 * time.Second) })
	}
	wg.Wait()
	for _, p := range []*Proc{c.Callback, c.Config, c.NATS, c.Store} {
		if p != nil {
			p.Close(10 * time.Second)
		}
	}
}

// Tails returns the last n lines of every process's log.
func (c *Cluster) Tails(n int) string {
	var b strings.Builder
	for _, p := range c.Procs() {
		fmt.Fprintf(&b, "  == %s (%s), started %d times:\n%s", p.Name, p.Log, p.Starts(), p.Tail(n))
	}
	return b.String()
}
