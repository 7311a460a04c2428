package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// Options of a benchmark run.
type Options struct {
	Requests    int
	Concurrency string
	InFlight    int
	Quick       bool
	// InFlightOnly measures only the memory scenario (InFlight requests held in flight).
	InFlightOnly bool
	// Paused is the number of requests of the paused-requests scenario (0 skips it).
	Paused int
	// PausedOnly measures only the paused-requests scenario (with InFlightOnly: those two only).
	PausedOnly bool
	// PausedSettle is how long the paused-requests scenario waits after the last pause before it
	// measures what the server holds (0: at once, the duplicate window's message ids included).
	PausedSettle time.Duration
	// List is the number of records of the request list scenario (0 skips it; Quick skips it
	// unless ListOnly).
	List int
	// ListOnly measures only the request list scenario.
	ListOnly bool
	// ListFor is how long each phase of the request list scenario asks (0: 20 s).
	ListFor time.Duration
	// ExecutorBin is an executor binary to measure instead of building ../services/executor.
	ExecutorBin string
	// Replicas lists the replica counts to measure, comma-separated (see replicaCounts): 1 is
	// every scenario on one server; 3 (or 5) is the skip and await scenarios at the middle
	// concurrency on a cluster of as many nodes, with as many replicas of the stream and the
	// buckets. "" is "1,3", or "1" with Quick.
	Replicas string
}

// Result is one scenario's figures; its JSON is the machine-readable line. NATSReplicas is the
// replica count of the stream and the buckets: 1 on one NATS server, else the number of nodes of
// the cluster.
type Result struct {
	Scenario           string  `json:"scenario"`
	NATSReplicas       int     `json:"nats_replicas"`
	Requests           int     `json:"requests"`
	Concurrency        int     `json:"concurrency"`
	ReceiverDelayMS    int     `json:"receiver_delay_ms"`
	RateLimit          float64 `json:"rate_limit,omitempty"`
	RequestsPerSecond  float64 `json:"requests_per_second"`
	BaselineRPS        float64 `json:"baseline_requests_per_second"`
	Ratio              float64 `json:"ratio"`
	P50MS              float64 `json:"p50_ms"`
	P95MS              float64 `json:"p95_ms"`
	P99MS              float64 `json:"p99_ms"`
	WebhookCallsPerSec float64 `json:"webhook_calls_per_second"`
	CPUSecondsPer1000  float64 `json:"executor_cpu_seconds_per_1000"`
	// ServerCPUPer1000 is the NATS server's CPU over the same run, summed over the nodes of a
	// cluster; TotalCPUPer1000 is the sum of the executor's and the servers'.
	ServerCPUPer1000  float64 `json:"server_cpu_seconds_per_1000"`
	TotalCPUPer1000   float64 `json:"total_cpu_seconds_per_1000"`
	ExecutorPeakRSSMB float64 `json:"executor_peak_rss_mb"`
	Failed            int     `json:"failed"`
	// NATSRequestsPerRequest is the executor's executor_nats_requests_total over the run divided by
	// the completed requests; nil (left out of the JSON) when the executor has no such counter.
	NATSRequestsPerRequest *float64 `json:"nats_requests_per_request,omitempty"`
	// BoundRPS is, for receivers answering after a delay, the most the concurrency allows:
	// concurrency / (webhooks per request x delay).
	BoundRPS      float64 `json:"bound_requests_per_second,omitempty"`
	BaselineP99MS float64 `json:"baseline_p99_ms,omitempty"`
	// BaselineServerCPUPer1000 is the NATS server's (or cluster's) CPU during the raw loop's run,
	// on as many nodes with as many replicas; the raw loop's own CPU is not counted (it runs
	// inside the harness, with the driver and the receivers).
	BaselineServerCPUPer1000 float64 `json:"baseline_server_cpu_seconds_per_1000,omitempty"`
	// BaselineNATSRequestsPerRequest is the raw loop's own request/replies per completed request.
	BaselineNATSRequestsPerRequest *float64 `json:"baseline_nats_requests_per_request,omitempty"`
	BaselineConcurrency            int      `json:"-"`
	// PausedFigures is what the paused-requests scenario measures beside the above (what is held
	// per paused request); nil, and left out of the JSON, for the other scenarios.
	*PausedFigures
}

// Baseline is what the raw loop measured at one point.
type Baseline struct {
	Load
	// ServerCPUPer1000 is the NATS server's CPU seconds per 1,000 requests.
	ServerCPUPer1000 float64
	// NATSRequestsPerRequest counts the loop's own request/replies, as the executor's counter does.
	NATSRequestsPerRequest float64
}

// webhooksPerRequest is the number of webhook calls of one request of the benchmark policy.
const webhooksPerRequest = 3

// point describes one measurement.
type point struct {
	n, concurrency int
	delay          time.Duration
	rate           float64
	stage          string // "skip" or "await"; "" for the baseline
	replicas       int    // of the stream and the buckets, and the nodes of the cluster; 0 is 1
}

func parseConcurrency(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("bad concurrency %q", f)
		}
		out = append(out, c)
	}
	return out, nil
}

// replicaCounts parses Options.Replicas: a comma-separated list of 1, 3 and 5, each at most once.
// "" is 1 and 3 (the R1 scenarios and the R3 point), or 1 alone when quick.
func replicaCounts(s string, quick bool) ([]int, error) {
	if s == "" {
		if quick {
			return []int{1}, nil
		}
		return []int{1, 3}, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || (r != 1 && r != 3 && r != 5) {
			return nil, fmt.Errorf("bad replica count %q (want 1, 3 or 5)", f)
		}
		if slices.Contains(out, r) {
			return nil, fmt.Errorf("replica count %d given twice", r)
		}
		out = append(out, r)
	}
	return out, nil
}

func run(ctx context.Context, o Options, w io.Writer) error {
	if o.ListFor == 0 {
		o.ListFor = 20 * time.Second
	}
	if o.ListOnly {
		r, err := measureList(ctx, o.List, o.ListFor, w)
		if err != nil {
			return err
		}
		reportList(w, r)
		return nil
	}
	concs, err := parseConcurrency(o.Concurrency)
	if err != nil {
		return err
	}
	replicas, err := replicaCounts(o.Replicas, o.Quick)
	if err != nil {
		return err
	}
	n := o.Requests
	if o.Quick {
		o.List = 0
		n, concs, o.InFlight = 300, []int{32}, 0
		if !o.PausedOnly {
			o.Paused = 0
		}
	}
	dir, err := os.MkdirTemp("", "policyhooks-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := o.ExecutorBin
	if bin == "" {
		fmt.Fprintln(w, "building the executor...")
		if bin, err = BuildExecutor(ctx, dir); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "executor: %s\n", bin)
	}
	var results []Result
	if o.InFlightOnly || o.PausedOnly {
		results, err = measureOnly(ctx, bin, o, w)
	} else {
		results, err = measureEach(ctx, bin, n, concs, o.InFlight, o.Paused, o.PausedSettle, replicas, w)
	}
	if err != nil {
		return err
	}
	report(w, results)
	if o.List > 0 && !o.InFlightOnly && !o.PausedOnly {
		r, err := measureList(ctx, o.List, o.ListFor, w)
		if err != nil {
			return err
		}
		reportList(w, r)
	}
	return nil
}

// measureOnly measures the memory scenario when o.InFlightOnly, then the paused-requests scenario
// when o.PausedOnly, both on one server.
func measureOnly(ctx context.Context, bin string, o Options, w io.Writer) ([]Result, error) {
	var results []Result
	if o.InFlightOnly {
		rs, err := measureInFlight(ctx, bin, o.InFlight, w)
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
	}
	if o.PausedOnly {
		rs, err := measurePaused(ctx, bin, o.Paused, o.PausedSettle, w)
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
	}
	return results, nil
}

// measureEach measures, for every replica count in turn, all the scenarios on one server (1), the
// paused-requests scenario last when paused > 0, or the replicated point on a cluster (3 or 5; see
// measureReplicated).
func measureEach(ctx context.Context, bin string, n int, concs []int, inFlight, paused int, pausedSettle time.Duration, replicas []int, w io.Writer) ([]Result, error) {
	var results []Result
	for _, r := range replicas {
		var rs []Result
		var err error
		if r == 1 {
			rs, err = measureAll(ctx, bin, n, concs, inFlight, w)
			if err == nil && paused > 0 {
				var p []Result
				p, err = measurePaused(ctx, bin, paused, pausedSettle, w)
				rs = append(rs, p...)
			}
		} else {
			rs, err = measureReplicated(ctx, bin, point{n: n, concurrency: concs[len(concs)/2], replicas: r}, w)
		}
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
	}
	return results, nil
}

// measureReplicated measures the skip and await scenarios at p's concurrency on a cluster of
// p.replicas nodes, every stream and bucket with p.replicas replicas, beside the raw loop on such a
// cluster (its stream replicated as much). Every measurement has a fresh cluster. The scenarios are
// named skip_r<replicas> and await_r<replicas>.
func measureReplicated(ctx context.Context, bin string, p point, w io.Writer) ([]Result, error) {
	suffix := fmt.Sprintf("_r%d", p.replicas)
	fmt.Fprintf(w, "R%d: %d-node cluster, skip and await scenarios, concurrency %d...\n", p.replicas, p.replicas, p.concurrency)
	base, err := measureBaseline(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("baseline%s c=%d: %w", suffix, p.concurrency, err)
	}
	var results []Result
	for _, stage := range []string{"skip", "await"} {
		p.stage = stage
		r, err := measureProduct(ctx, bin, p)
		if err != nil {
			return nil, fmt.Errorf("%s%s c=%d: %w", stage, suffix, p.concurrency, err)
		}
		results = append(results, withBaseline(r, stage+suffix, base))
	}
	return results, nil
}

func measureAll(ctx context.Context, bin string, n int, concs []int, inFlight int, w io.Writer) ([]Result, error) {
	var results []Result
	baselines := map[int]Baseline{}
	best := 0.0
	for _, c := range concs {
		fmt.Fprintf(w, "skip scenario, concurrency %d...\n", c)
		base, err := measureBaseline(ctx, point{n: n, concurrency: c})
		if err != nil {
			return nil, fmt.Errorf("baseline c=%d: %w", c, err)
		}
		baselines[c] = base
		r, err := measureProduct(ctx, bin, point{n: n, concurrency: c, stage: "skip"})
		if err != nil {
			return nil, fmt.Errorf("skip c=%d: %w", c, err)
		}
		results = append(results, withBaseline(r, "skip", base))
		best = max(best, r.RequestsPerSecond)
	}
	mid := concs[len(concs)/2]
	fmt.Fprintf(w, "await scenario (data-layer responder), concurrency %d...\n", mid)
	r, err := measureProduct(ctx, bin, point{n: n, concurrency: mid, stage: "await"})
	if err != nil {
		return nil, fmt.Errorf("await: %w", err)
	}
	results = append(results, withBaseline(r, "await", baselines[mid]))

	if len(concs) > 1 || n >= 1000 {
		// With slow receivers the bound is concurrency / latency: each point should come near it
		// and grow with the concurrency, which shows the executor is not the limit.
		for _, c := range concs {
			fmt.Fprintf(w, "receivers answering after 50 ms, concurrency %d...\n", c)
			slow := point{n: n, concurrency: c, delay: 50 * time.Millisecond}
			base, err := measureBaseline(ctx, slow)
			if err != nil {
				return nil, fmt.Errorf("baseline 50ms c=%d: %w", c, err)
			}
			slow.stage = "skip"
			r, err := measureProduct(ctx, bin, slow)
			if err != nil {
				return nil, fmt.Errorf("skip 50ms c=%d: %w", c, err)
			}
			r = withBaseline(r, "skip_receivers_50ms", base)
			r.BoundRPS = round(float64(c) / (webhooksPerRequest * slow.delay.Seconds()))
			results = append(results, r)
		}

		rate := best / 2
		fmt.Fprintf(w, "latency at half the peak rate (%.0f requests/s, open loop)...\n", rate)
		half := point{n: n, concurrency: concs[len(concs)-1], rate: rate, stage: "skip"}
		r, err = measureProduct(ctx, bin, half)
		if err != nil {
			return nil, fmt.Errorf("half rate: %w", err)
		}
		results = append(results, withBaseline(r, "skip_half_peak_rate", baselines[mid]))
	}
	if inFlight > 0 {
		r, err := measureInFlight(ctx, bin, inFlight, w)
		if err != nil {
			return nil, err
		}
		results = append(results, r...)
	}
	return results, nil
}

// measureInFlight holds n requests in flight at once (receivers answering after one second) and
// reports the executor's peak RSS.
func measureInFlight(ctx context.Context, bin string, n int, w io.Writer) ([]Result, error) {
	fmt.Fprintf(w, "%d requests in flight (receivers answering after 1 s)...\n", n)
	r, err := measureProduct(ctx, bin, point{n: n, concurrency: n, delay: time.Second, stage: "skip"})
	if err != nil {
		return nil, fmt.Errorf("in flight: %w", err)
	}
	return []Result{withBaseline(r, "skip_10k_in_flight", Baseline{})}, nil
}

func withBaseline(r Result, scenario string, base Baseline) Result {
	r.Scenario = scenario
	if base.Completed > 0 {
		r.BaselineRPS = round(base.RPS())
		r.Ratio = round(r.RequestsPerSecond / base.RPS())
		r.BaselineP99MS = round(base.Percentile(0.99))
		r.BaselineServerCPUPer1000 = round3(base.ServerCPUPer1000)
		r.BaselineNATSRequestsPerRequest = ptr(round(base.NATSRequestsPerRequest))
	}
	return r
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// round3 keeps three decimals, for CPU seconds per 1,000 requests.
func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func submitted(id string) []byte {
	b, _ := json.Marshal(event.Submitted{ID: id, PolicyKey: "bench", Identity: event.Identity{Email: ptr(id + "@example.com")}})
	return b
}

func ptr[T any](v T) *T { return &v }

// measureProduct runs p's requests through the executor process.
func measureProduct(ctx context.Context, bin string, p point) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	e, err := NewEnv(ctx, p.delay, p.replicas)
	if err != nil {
		return Result{}, err
	}
	defer e.Close()
	if _, err := e.assets().Stream(ctx); err != nil {
		return Result{}, err
	}
	if err := e.PutPlan(ctx); err != nil {
		return Result{}, err
	}
	x, err := e.StartExecutor(ctx, bin, p.concurrency, p.stage)
	if err != nil {
		return Result{}, err
	}
	defer x.Stop()

	var current atomic.Pointer[Driver]
	stopFollowing, err := e.followStatus(&current, event.StatusComplete)
	if err != nil {
		return Result{}, err
	}
	defer stopFollowing()
	if p.stage == "await" {
		sub, err := e.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
			var ex event.Execute
			if json.Unmarshal(m.Data, &ex) == nil {
				b, _ := json.Marshal(event.Executed{ID: ex.ID, Succeeded: true})
				_, _ = e.js.PublishAsync(event.SubjectExecuted, b)
			}
		})
		if err != nil {
			return Result{}, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		defer sub.Unsubscribe()
	}
	// Warm up: the executor starts, creates its consumers and opens its connections.
	warm := newDriver(100, 100)
	current.Store(warm)
	if _, err := warm.run(ctx, "warm", 0, e.submit); err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	if e.replicas > 1 {
		// The executor has made its buckets by now.
		if err := e.checkReplicas(ctx); err != nil {
			return Result{}, err
		}
	}
	m, err := startMeter(ctx, e, x)
	if err != nil {
		return Result{}, err
	}
	slots := p.concurrency
	if p.rate > 0 {
		slots = 0
	}
	d := newDriver(p.n, slots)
	current.Store(d)
	load, err := d.run(ctx, "req", p.rate, e.submit)
	if err != nil {
		return Result{}, err
	}
	u, err := m.stop(ctx, load.Completed)
	if err != nil {
		return Result{}, err
	}
	return productResult(p, load, u, x, e.replicas), nil
}

// submit publishes the submitted event of request id of the benchmark policy, asynchronously.
func (e *Env) submit(id string) error {
	_, err := e.js.PublishAsync(event.SubjectSubmitted, submitted(id), jetstream.WithMsgID(id))
	return err
}

// followStatus hands the status events of every request to the driver current holds: a request
// finishes well on the status done, badly on complete or error (unless done is one of them). It
// returns a function that unsubscribes.
func (e *Env) followStatus(current *atomic.Pointer[Driver], done event.Status) (func(), error) {
	onStatus := func(m *nats.Msg) {
		var s event.StatusChanged
		if json.Unmarshal(m.Data, &s) == nil {
			if d := current.Load(); d != nil {
				d.finish(s.ID, s.Status == done)
			}
		}
	}
	statuses := []event.Status{event.StatusComplete, event.StatusError}
	if !slices.Contains(statuses, done) {
		statuses = append(statuses, done)
	}
	var subs []*nats.Subscription
	stop := func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}
	for _, st := range statuses {
		sub, err := e.nc.Subscribe(event.StatusSubject(st), onStatus)
		if err != nil {
			stop()
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		subs = append(subs, sub)
	}
	return stop, nil
}

// usage is what the executor and the server did over a measured run.
type usage struct {
	calls          int64
	cpu, serverCPU float64
	// natsRequests is the executor's NATS request/replies per completed request; nil when it has
	// no such counter or no request completed.
	natsRequests *float64
}

// meter reads the executor's and the server's counters at the start of a measured run.
type meter struct {
	e                *Env
	x                *Executor
	cpu0, serverCPU0 float64
	calls0           int64
	reqs0            float64
	hasCounter       bool
}

// startMeter waits until the executor is quiet and reads the counters. CPU and NATS requests are
// read once the executor is quiet, before and after the run, so that the warm-up's trailing writes
// are left out and the run's last ones counted.
func startMeter(ctx context.Context, e *Env, x *Executor) (meter, error) {
	settle(ctx, x.CPUSeconds, x.counter(ctx))
	reqs0, hasCounter, err := x.NATSRequests(ctx)
	if err != nil {
		return meter{}, err
	}
	return meter{e: e, x: x, cpu0: x.CPUSeconds(), serverCPU0: e.nats.CPUSeconds(), calls0: e.calls.Load(),
		reqs0: reqs0, hasCounter: hasCounter}, nil
}

// stop waits until the executor is quiet again and returns what was done since startMeter, the NATS
// requests divided by completed.
func (m meter) stop(ctx context.Context, completed int) (usage, error) {
	u := usage{calls: m.e.calls.Load() - m.calls0}
	settle(ctx, m.x.CPUSeconds, m.x.counter(ctx))
	u.cpu, u.serverCPU = m.x.CPUSeconds()-m.cpu0, m.e.nats.CPUSeconds()-m.serverCPU0
	reqs1, hasCounter, err := m.x.NATSRequests(ctx)
	if err != nil {
		return usage{}, err
	}
	if m.hasCounter && hasCounter && completed > 0 {
		u.natsRequests = ptr(round((reqs1 - m.reqs0) / float64(completed)))
	}
	return u, nil
}

// counter returns a reading of the executor's NATS requests for settle.
func (x *Executor) counter(ctx context.Context) func() (float64, bool) {
	return func() (float64, bool) {
		n, ok, _ := x.NATSRequests(ctx)
		return n, ok
	}
}

// productResult returns the figures of the executor's run of p.
func productResult(p point, load Load, u usage, x *Executor, replicas int) Result {
	return Result{
		Requests: p.n, Concurrency: p.concurrency, ReceiverDelayMS: int(p.delay.Milliseconds()), RateLimit: round(p.rate),
		RequestsPerSecond:  round(load.RPS()),
		P50MS:              round(load.Percentile(0.50)),
		P95MS:              round(load.Percentile(0.95)),
		P99MS:              round(load.Percentile(0.99)),
		WebhookCallsPerSec: round(float64(u.calls) / load.Elapsed.Seconds()),
		CPUSecondsPer1000:  round3(u.cpu / float64(p.n) * 1000),
		ServerCPUPer1000:   round3(u.serverCPU / float64(p.n) * 1000),
		TotalCPUPer1000:    round3((u.cpu + u.serverCPU) / float64(p.n) * 1000),
		ExecutorPeakRSSMB:  round(x.PeakRSSMB()),
		Failed:             load.Failed,
		NATSReplicas:       replicas,

		NATSRequestsPerRequest: u.natsRequests,
	}
}

// measureBaseline runs the raw loop: consume from JetStream, make the same HTTPS POSTs to the same
// receivers, ack, and publish one event — the work with no product around it. Its stream (and so
// its consumer) has p.replicas replicas, on a cluster of as many nodes when more than one.
func measureBaseline(ctx context.Context, p point) (Baseline, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	e, err := NewEnv(ctx, p.delay, p.replicas)
	if err != nil {
		return Baseline{}, err
	}
	defer e.Close()
	stream, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage, Replicas: e.replicas,
	})
	if err != nil {
		return Baseline{}, err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "raw", FilterSubject: "bench.in", AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: p.concurrency * 2, AckWait: time.Minute,
	})
	if err != nil {
		return Baseline{}, err
	}
	client := e.HTTPClient(p.concurrency)
	url := e.recv.URL
	post := func(path string, body []byte) error {
		resp, err := client.Post(url+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
		if path == "/two-way" {
			var answer map[string]any
			return json.Unmarshal(b, &answer)
		}
		return nil
	}
	var natsRequests atomic.Int64
	handle := func(m jetstream.Msg) {
		var s event.Submitted
		if err := json.Unmarshal(m.Data(), &s); err != nil {
			_ = m.Term()
			return
		}
		for _, path := range []string{"/one-way", "/two-way", "/one-way"} {
			body, _ := json.Marshal(map[string]any{"privacy_request_id": s.ID, "policy_key": s.PolicyKey,
				"direction": "one_way", "callback_type": "pre", "identity": s.Identity})
			if err := post(path, body); err != nil {
				_ = m.Nak()
				return
			}
		}
		_ = m.Ack()
		// A JetStream publish with ack: the loop's one request/reply per request (the ack above
		// is a plain publish, and pulls bring whole batches).
		natsRequests.Add(1)
		_, _ = e.js.PublishAsync("bench.out", []byte(s.ID))
	}
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range p.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				handle(m)
			}
		}()
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(p.concurrency))
	if err != nil {
		return Baseline{}, err
	}
	go func() {
		defer close(work)
		for {
			m, err := iter.Next()
			if err != nil {
				return
			}
			work <- m
		}
	}()
	defer func() { iter.Stop(); wg.Wait() }()

	var current atomic.Pointer[Driver]
	sub, err := e.nc.Subscribe("bench.out", func(m *nats.Msg) {
		if d := current.Load(); d != nil {
			d.finish(string(m.Data), true)
		}
	})
	if err != nil {
		return Baseline{}, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	defer sub.Unsubscribe()
	submit := func(id string) error {
		_, err := e.js.PublishAsync("bench.in", submitted(id), jetstream.WithMsgID(id))
		return err
	}
	warm := newDriver(100, 100)
	current.Store(warm)
	if _, err := warm.run(ctx, "warm", 0, submit); err != nil {
		return Baseline{}, fmt.Errorf("warm-up: %w", err)
	}
	slots := p.concurrency
	if p.rate > 0 {
		slots = 0
	}
	serverCPU := func() float64 { return e.nats.CPUSeconds() }
	settle(ctx, serverCPU, nil)
	cpu0, reqs0 := serverCPU(), natsRequests.Load()
	d := newDriver(p.n, slots)
	current.Store(d)
	load, err := d.run(ctx, "req", p.rate, submit)
	if err != nil {
		return Baseline{}, err
	}
	settle(ctx, serverCPU, nil)
	b := Baseline{Load: load, ServerCPUPer1000: (serverCPU() - cpu0) / float64(p.n) * 1000}
	if load.Completed > 0 {
		b.NATSRequestsPerRequest = float64(natsRequests.Load()-reqs0) / float64(load.Completed)
	}
	return b, nil
}

func report(w io.Writer, results []Result) {
	fmt.Fprintf(w, "\nmachine: %s, %d cores, %s\n\n", cpuModel(), runtime.NumCPU(), runtime.Version())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconc\trequests\treq/s\tbaseline req/s\tratio\tbound req/s\tp50 ms\tp95 ms\tp99 ms\tcalls/s"+
		"\tcpu s/1k\tserver cpu s/1k\ttotal cpu s/1k\tbaseline server cpu s/1k\tnats req/req\tbaseline nats req/req\tpeak RSS MB\tfailed\t")
	for _, r := range results {
		bound := "-"
		if r.BoundRPS > 0 {
			bound = fmt.Sprintf("%.0f", r.BoundRPS)
		}
		baseServerCPU := "-"
		if r.BaselineRPS > 0 {
			baseServerCPU = fmt.Sprintf("%.3f", r.BaselineServerCPUPer1000)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%.2f\t%s\t%.1f\t%.1f\t%.1f\t%.0f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\t%.1f\t%d\t\n",
			r.Scenario, r.Concurrency, r.Requests, r.RequestsPerSecond, r.BaselineRPS, r.Ratio, bound,
			r.P50MS, r.P95MS, r.P99MS, r.WebhookCallsPerSec, r.CPUSecondsPer1000, r.ServerCPUPer1000, r.TotalCPUPer1000,
			baseServerCPU, optional(r.NATSRequestsPerRequest), optional(r.BaselineNATSRequestsPerRequest),
			r.ExecutorPeakRSSMB, r.Failed)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	reportPaused(w, results)
	for _, r := range results {
		b, _ := json.Marshal(r)
		fmt.Fprintln(w, string(b))
	}
}

// optional formats a figure that may be missing as "-".
func optional(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *f)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}
