package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/secret"
)

// appKey is the benchmark's APP_ENCRYPTION_KEY: the executor opens the plan's secrets with it.
const appKey = "bench-key-0123456789abcdef012345"

// Env is one measured environment: fresh NATS servers with file storage, each in its own process
// (one server, or a cluster of replicas nodes), and the HTTPS receivers, on loopback.
type Env struct {
	dir string
	// replicas is the replica count of the stream and the buckets: 1 on one server, else the
	// number of nodes of the cluster.
	replicas int
	nats     natsServers
	nc       *nats.Conn
	js       jetstream.JetStream
	recv     *httptest.Server
	caFile   string
	calls    atomic.Int64
}

// natsServers is the NATS side of an Env: a NATSProcess, or a natsCluster.
type natsServers interface {
	// URL returns the client URLs, comma-separated (a NATS_URL).
	URL() string
	// CPUSeconds returns the user+system CPU time of all the servers so far.
	CPUSeconds() float64
	// Stop stops the servers and waits until they have exited.
	Stop()
}

// NewEnv starts NATS and the receivers; every receiver answer waits delay first. With replicas 1
// (or 0) NATS is one server, as a NATSProcess; with more, a ready cluster of that many nodes, on
// which the harness and the executor create the stream and the buckets with that many replicas.
func NewEnv(ctx context.Context, delay time.Duration, replicas int) (*Env, error) {
	dir, err := os.MkdirTemp("", "policyhooks-bench-")
	if err != nil {
		return nil, err
	}
	e := &Env{dir: dir, replicas: max(replicas, 1)}
	n, err := startNATSServers(ctx, dir, e.replicas)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	e.nats = n
	if err := e.connect(); err != nil {
		e.Close()
		return nil, err
	}
	e.recv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		e.calls.Add(1)
		if delay > 0 {
			time.Sleep(delay)
		}
		answer(w, r.URL.Path)
	}))
	e.recv.EnableHTTP2 = false
	e.recv.Config.ErrorLog = nil
	e.recv.StartTLS()
	e.caFile = filepath.Join(dir, "receiver-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.recv.Certificate().Raw})
	if err := os.WriteFile(e.caFile, pemBytes, 0o600); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// haltPath is the receivers' two-way path that answers {"halt": true}: a request whose plan calls
// it pauses there (the paused-requests scenario). The other two-way path, /two-way, answers
// {"halt": false}, and every other path an empty 200.
const haltPath = "/two-way-halt"

// answer writes the receivers' answer to a call of path.
func answer(w http.ResponseWriter, path string) {
	var body string
	switch {
	case strings.HasSuffix(path, haltPath):
		body = `{"halt": true}`
	case strings.HasSuffix(path, "/two-way"):
		body = `{"halt": false}`
	default:
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(body))
}

// connect connects the harness to the Env's NATS servers.
func (e *Env) connect() error {
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16))
	if err != nil {
		nc.Close()
		return err
	}
	e.nc, e.js = nc, js
	return nil
}

// storeDir returns where the NATS servers of an Env in dir keep their data.
func storeDir(dir string) string { return filepath.Join(dir, "nats") }

// startNATSServers starts one NATS server (replicas 1) or a cluster of replicas nodes, with their
// data under dir.
func startNATSServers(ctx context.Context, dir string, replicas int) (natsServers, error) {
	if replicas > 1 {
		c, err := startNATSCluster(ctx, storeDir(dir), replicas)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	p, err := StartNATSProcess(ctx, storeDir(dir), filepath.Join(dir, "nats.log"))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Close stops everything and removes the data.
func (e *Env) Close() {
	if e.recv != nil {
		e.recv.Close()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.nats != nil {
		e.nats.Stop()
	}
	_ = os.RemoveAll(e.dir)
}

// HTTPClient returns a client trusting the receivers, with keep-alive sized to concurrency.
func (e *Env) HTTPClient(concurrency int) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(e.recv.Certificate())
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}}
}

// PutPlan writes the benchmark policy's plan into policy_webhooks as the config service would.
func (e *Env) PutPlan(ctx context.Context) error { return e.putPlan(ctx, "/two-way") }

// PutHaltingPlan writes the benchmark policy's plan with its two-way webhook on haltPath: every
// request pauses after it.
func (e *Env) PutHaltingPlan(ctx context.Context) error { return e.putPlan(ctx, haltPath) }

// putPlan writes the benchmark policy's plan, its two-way webhook on twoWayPath.
func (e *Env) putPlan(ctx context.Context, twoWayPath string) error {
	keyring, err := secret.NewKeyring(appKey, "", secret.PurposeSecrets)
	if err != nil {
		return err
	}
	kv, err := e.assets().Plans(ctx)
	if err != nil {
		return err
	}
	hook := func(i int, key string, dir event.Direction, path string) (event.PlanWebhook, error) {
		conn := "bench_" + key
		b, _ := json.Marshal(event.HTTPSSecrets{URL: e.recv.URL + path, Authorization: "Bearer bench"})
		sealed, err := keyring.Seal(b, []byte(conn))
		return event.PlanWebhook{ID: "wh_" + key, Key: key, Name: key, Direction: dir, Order: i,
			ConnectionKey: conn, URL: e.recv.URL + path, Secrets: sealed}, err
	}
	pre1, err1 := hook(0, "wake_up", event.OneWay, "/one-way")
	pre2, err2 := hook(1, "lookup", event.TwoWay, twoWayPath)
	post, err3 := hook(0, "log_out", event.OneWay, "/one-way")
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	plan, _ := json.Marshal(event.Plan{PolicyKey: "bench", Version: 1, PublishedAt: time.Now(),
		Pre: []event.PlanWebhook{pre1, pre2}, Post: []event.PlanWebhook{post}})
	_, err = kv.Put(ctx, "bench", plan)
	return err
}

// assets creates the stream and the buckets the services share with the Env's replica count, as
// the services do with NATS_REPLICAS.
func (e *Env) assets() natsconn.Assets {
	return natsconn.Assets{JS: e.js, Replicas: e.replicas}
}

// checkReplicas returns an error unless every stream (the harness's and the executor's, buckets
// included) has the Env's replica count. An executor that does not read NATS_REPLICAS would make
// its buckets with one replica, or scale the harness's stream down to one, and be measured as R1.
func (e *Env) checkReplicas(ctx context.Context) error {
	streams := e.js.ListStreams(ctx)
	var wrong []string
	for info := range streams.Info() {
		if info.Config.Replicas != e.replicas {
			wrong = append(wrong, fmt.Sprintf("%s has %d", info.Config.Name, info.Config.Replicas))
		}
	}
	if err := streams.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	if len(wrong) > 0 {
		return fmt.Errorf("want %d replicas everywhere, but %s (does the executor read NATS_REPLICAS?)",
			e.replicas, strings.Join(wrong, ", "))
	}
	return nil
}

// Executor is the executor running as its own process, so that its CPU time and memory are its own.
type Executor struct {
	cmd     *exec.Cmd
	done    chan struct{}
	httpURL string // its HTTP_ADDR, as http://127.0.0.1:PORT
	client  *http.Client
}

// BuildExecutor compiles the executor (in ../services/executor, relative to the bench directory)
// into dir.
func BuildExecutor(ctx context.Context, dir string) (string, error) {
	return buildService(ctx, dir, "executor")
}

// buildService compiles the service ../services/<name> into dir.
func buildService(ctx context.Context, dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "services", name)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	return bin, nil
}

// StartExecutor runs the executor binary with its production settings against e, its HTTP_ADDR
// on a free loopback port, and waits until that port accepts connections. NATS_URL lists every
// server of e and NATS_REPLICAS is e's replica count.
func (e *Env) StartExecutor(ctx context.Context, bin string, concurrency int, stage string) (*Executor, error) {
	for attempt := 1; ; attempt++ {
		port, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		x, err := e.startExecutor(ctx, bin, port, concurrency, stage)
		if !errors.Is(err, errExited) || attempt == 3 {
			return x, err
		}
		// The port may have been taken before the executor listened on it: try another one.
	}
}

func (e *Env) startExecutor(ctx context.Context, bin string, port, concurrency int, stage string) (*Executor, error) {
	logPath := filepath.Join(e.dir, "executor.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"NATS_URL="+e.nats.URL(),
		"APP_ENCRYPTION_KEY="+appKey,
		"HTTP_ADDR="+addr,
		"LOG_LEVEL=warn",
		"WEBHOOK_CA_FILE="+e.caFile,
		"WEBHOOK_ALLOW_PRIVATE_NETWORKS=true",
		"EXECUTION_STAGE="+stage,
		"EXECUTOR_CONCURRENCY="+strconv.Itoa(concurrency),
		"NATS_REPLICAS="+strconv.Itoa(e.replicas),
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	x := &Executor{cmd: cmd, done: make(chan struct{}), httpURL: "http://" + addr,
		client: &http.Client{Timeout: 10 * time.Second}}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(x.done)
	}()
	if err := waitAccepting(ctx, addr, x.done, time.Minute); err != nil {
		x.Stop()
		return nil, fmt.Errorf("executor HTTP_ADDR %s (log %s): %w", addr, logPath, err)
	}
	return x, nil
}

// Stop sends SIGTERM and waits up to ten seconds, then kills.
func (x *Executor) Stop() {
	_ = x.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-x.done:
	case <-time.After(10 * time.Second):
		_ = x.cmd.Process.Kill()
		<-x.done
	}
}

// RSSKB returns the executor's resident set size (VmRSS) in KiB.
func (x *Executor) RSSKB() float64 { return procStatusKB(x.cmd.Process.Pid, "VmRSS") }

// CPUSeconds returns the user+system CPU time the executor used so far.
func (x *Executor) CPUSeconds() float64 { return procCPUSeconds(x.cmd.Process.Pid) }

// PeakRSSMB returns the executor's peak resident set size (VmHWM) in MiB.
func (x *Executor) PeakRSSMB() float64 { return procPeakRSSMB(x.cmd.Process.Pid) }

// NATSRequests returns the executor's NATS request/replies so far, the sum of the series of
// executor_nats_requests_total on its /metrics; ok is false when it does not expose that counter.
func (x *Executor) NATSRequests(ctx context.Context) (n float64, ok bool, err error) {
	return scrapeCounter(ctx, x.client, x.httpURL+"/metrics", natsRequestsMetric)
}

// Load is what a driver measured.
type Load struct {
	Completed int
	Failed    int
	Elapsed   time.Duration
	Latencies []time.Duration
}

// RPS returns completed requests per second.
func (l Load) RPS() float64 { return float64(l.Completed) / l.Elapsed.Seconds() }

// Percentile returns the p-th latency percentile in milliseconds.
func (l Load) Percentile(p float64) float64 {
	if len(l.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(l.Latencies)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i].Microseconds()) / 1000
}

// Driver pushes requests and watches them finish. submit publishes request i with id; the
// completion subscription calls finish(id, ok).
type Driver struct {
	mu      sync.Mutex
	started map[string]time.Time
	load    Load
	slots   chan struct{}
	allDone chan struct{}
	want    int
}

func newDriver(n, concurrency int) *Driver {
	d := &Driver{started: make(map[string]time.Time, n), allDone: make(chan struct{}), want: n}
	if concurrency > 0 {
		d.slots = make(chan struct{}, concurrency)
	}
	d.load.Latencies = make([]time.Duration, 0, n)
	return d
}

func (d *Driver) finish(id string, ok bool) {
	d.mu.Lock()
	start, known := d.started[id]
	if !known {
		d.mu.Unlock()
		return
	}
	delete(d.started, id)
	if ok {
		d.load.Completed++
		d.load.Latencies = append(d.load.Latencies, time.Since(start))
	} else {
		d.load.Failed++
	}
	finished := d.load.Completed+d.load.Failed == d.want
	d.mu.Unlock()
	if d.slots != nil {
		<-d.slots
	}
	if finished {
		close(d.allDone)
	}
}

// run submits n requests: closed-loop with at most concurrency in flight, or open-loop at rate per
// second when rate > 0.
func (d *Driver) run(ctx context.Context, prefix string, rate float64, submit func(id string) error) (Load, error) {
	start := time.Now()
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	for i := 0; i < d.want; i++ {
		id := fmt.Sprintf("%s_%06d", prefix, i)
		if d.slots != nil {
			select {
			case d.slots <- struct{}{}:
			case <-ctx.Done():
				return d.load, ctx.Err()
			}
		}
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
		}
		d.mu.Lock()
		d.started[id] = time.Now()
		d.mu.Unlock()
		if err := submit(id); err != nil {
			return d.load, err
		}
	}
	select {
	case <-d.allDone:
	case <-ctx.Done():
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.load, fmt.Errorf("%d of %d requests finished: %w", d.load.Completed+d.load.Failed, d.want, ctx.Err())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.load.Elapsed = time.Since(start)
	return d.load, nil
}
