package chaos_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/chaos"
	"github.com/policyhooks/policyhooks/shared/devstack"
)

// Internal flags: the suite re-executes this binary as the NATS node and the store.
var (
	role     = flag.String("chaos.role", "", "internal: run as a child process of the suite (nats, store)")
	roleDir  = flag.String("chaos.dir", "", "internal: the child's data directory")
	rolePort = flag.Int("chaos.port", 0, "internal: the NATS node's client port")
	roleAddr = flag.String("chaos.addr", "", "internal: the store's listen address")
)

// Settings; each falls back to its environment variable, then to the form's default.
var (
	flagLong      = flag.String("chaos.long", "", "run the long form (env CHAOS_LONG=1; make chaos)")
	flagRequests  = flag.String("chaos.requests", "", "requests in the stream (env CHAOS_REQUESTS; short 100, long 3000)")
	flagExecutors = flag.String("chaos.executors", "", "executor processes (env CHAOS_EXECUTORS; 3)")
	flagSeed      = flag.String("chaos.seed", "", "seed of the run, to reproduce one (env CHAOS_SEED; random)")
	flagSrc       = flag.String("chaos.src", "", "source tree to build the services from (env CHAOS_SRC; this repository)")
	flagKeep      = flag.String("chaos.keep", "", "directory that keeps the logs and the report (env CHAOS_KEEP; a temporary one)")
	flagRate      = flag.String("chaos.rate", "", "requests submitted per second (env CHAOS_RATE; short 2.5, long 5)")
	flagSettle    = flag.String("chaos.settle", "", "how long to wait for every request to settle after the faults (env CHAOS_SETTLE; short 120s, long 300s)")
)

func TestMain(m *testing.M) {
	// TestClusterFailover's NATS nodes are this binary, re-executed.
	if code, ok := devstack.RunClusterNode(); ok {
		os.Exit(code)
	}
	flag.Parse()
	if *role != "" {
		os.Exit(chaos.RunRole(*role, *roleDir, *rolePort, *roleAddr))
	}
	os.Exit(m.Run())
}

type options struct {
	long          bool
	requests      int
	executors     int
	seed          uint64
	src           string
	keep          string
	rate          float64
	settleTimeout time.Duration
}

func setting(flagValue *string, env string) string {
	if *flagValue != "" {
		return *flagValue
	}
	return os.Getenv(env)
}

func resolveOptions(t *testing.T) options {
	t.Helper()
	o := options{executors: 3, requests: 100, rate: 2.5, settleTimeout: 120 * time.Second}
	bad := func(name, v string, err error) { t.Fatalf("chaos: %s=%q: %v", name, v, err) }
	if v := setting(flagLong, "CHAOS_LONG"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("CHAOS_LONG", v, err)
		}
		o.long = b
	}
	if o.long {
		o.requests, o.rate, o.settleTimeout = 3000, 5, 300*time.Second
	}
	for _, s := range []struct {
		flag *string
		env  string
		dst  *int
	}{{flagRequests, "CHAOS_REQUESTS", &o.requests}, {flagExecutors, "CHAOS_EXECUTORS", &o.executors}} {
		if v := setting(s.flag, s.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				bad(s.env, v, fmt.Errorf("want a positive number (%v)", err))
			}
			*s.dst = n
		}
	}
	if o.executors < 2 {
		t.Fatalf("chaos: CHAOS_EXECUTORS=%d: the suite needs at least 2 executors", o.executors)
	}
	if v := setting(flagSeed, "CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			bad("CHAOS_SEED", v, err)
		}
		o.seed = n
	} else {
		o.seed = rand.Uint64() % 1_000_000_000
	}
	if v := setting(flagRate, "CHAOS_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			bad("CHAOS_RATE", v, fmt.Errorf("want a positive rate (%v)", err))
		}
		o.rate = r
	}
	if v := setting(flagSettle, "CHAOS_SETTLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			bad("CHAOS_SETTLE", v, err)
		}
		o.settleTimeout = d
	}
	o.src = setting(flagSrc, "CHAOS_SRC")
	if o.src == "" {
		wd, _ := os.Getwd()
		root, err := chaos.FindRepoRoot(wd)
		if err != nil {
			t.Fatal(err)
		}
		o.src = root
	}
	o.keep = setting(flagKeep, "CHAOS_KEEP")
	return o
}

// TestChaos is the fault suite: a stream of requests through a pre-approval receiver replying
// eligible, halting, deriving, failing and slow receivers while executors, NATS, config and
// callback are killed and restarted; then, per request, the assertions of chaos.Assertions.
func TestChaos(t *testing.T) {
	o := resolveOptions(t)
	start := time.Now()
	form := "short"
	if o.long {
		form = "long"
	}
	t.Logf("chaos: %s form, seed %d (reproduce with CHAOS_SEED=%d), %d requests at %.1f/s, %d executors, services built from %s",
		form, o.seed, o.seed, o.requests, o.rate, o.executors, o.src)
	dir := t.TempDir()
	if o.keep != "" {
		dir = filepath.Join(o.keep, fmt.Sprintf("chaos-%s-%d", time.Now().Format("20060102-150405"), o.seed))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("chaos: logs and report kept in %s", dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	specs := chaos.MakeSpecs(o.requests, rand.New(rand.NewPCG(o.seed, 0)))
	phases := map[string]time.Duration{}
	phase := time.Now()
	mark := func(name string) { phases[name] = time.Since(phase); phase = time.Now() }

	if err := chaos.Build(ctx, o.src, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	mark("build")

	rcv, err := chaos.NewReceivers(dir, specs, o.seed, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	st := startStack(t, ctx, "chaos", o.seed, chaos.ClusterConfig{Dir: dir, Executors: o.executors, Start: start, Logf: t.Logf}, rcv)
	c, js, api, dl := st.c, st.js, st.api, st.dl
	mark("start and configure")

	// The stream and the faults.
	var sub chaos.Submitter
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		sub.Submit(ctx, js, specs, o.rate)
	}()
	faultRng := rand.New(rand.NewPCG(o.seed, 1))
	var faults []chaos.FaultRecord
	inject := func(f chaos.Fault) {
		rec := c.Inject(ctx, faultRng, f, start)
		faults = append(faults, rec)
		t.Logf("chaos: fault %s", rec)
		if rec.Err != nil {
			t.Errorf("chaos: fault %q: the process did not come back: %v", f, rec.Err)
		}
	}
	gap := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(faultRng.Int64N(int64(hi-lo)))) }
	if o.long {
		for {
			gap(3*time.Second, 10*time.Second)
			select {
			case <-streamDone:
			default:
				inject(chaos.LongFault(faultRng))
				continue
			}
			break
		}
	} else {
		for _, f := range chaos.ShortSchedule(faultRng) {
			gap(1500*time.Millisecond, 3500*time.Millisecond)
			inject(f)
		}
	}
	<-streamDone
	mark("stream and faults")

	// Everything up again, then wait for every request to settle.
	if err := c.Start(ctx); err != nil {
		t.Errorf("chaos: restarting everything after the faults: %v", err)
	}
	records, recordErrs := settle(ctx, t, api, specs, o.settleTimeout)
	mark("settle")
	all, report := gatherEvidence(ctx, t, js, api, specs, records, recordErrs, rcv, dl, &sub)
	mark("check")

	stats := statistics(all, faults, c, rcv, dl, phases, start) + breakerStats(ctx, js)
	t.Logf("chaos: seed %d, %s form, %d requests, %d executors:\n%s\n%s", o.seed, form, o.requests, o.executors, stats, report.Summary())
	full := fmt.Sprintf("seed %d, %s form, services from %s\n%s\n%s\n%s", o.seed, form, o.src, stats, report.Summary(), report.Details(all, 0))
	reportPath := filepath.Join(dir, "report.txt")
	if err := os.WriteFile(reportPath, []byte(full), 0o644); err != nil {
		t.Logf("chaos: writing %s: %v", reportPath, err)
	}
	if len(report.Problems) > 0 {
		t.Errorf("chaos: %d of %d requests broke assertions (seed %d; reproduce with CHAOS_SEED=%d%s):\n%s\nfailing requests (at most 25 shown; all in %s):\n%s",
			len(report.Problems), len(specs), o.seed, o.seed, srcHint(o), report.Summary(), reportPath, report.Details(all, 25))
	}
}

func srcHint(o options) string {
	if v := setting(flagSrc, "CHAOS_SRC"); v != "" {
		return " CHAOS_SRC=" + v
	}
	return ""
}

// settle reads every request from callback until all are complete or error, or timeout passes; it
// returns the last record of each (and, for those without one, why).
func settle(ctx context.Context, t *testing.T, api *chaos.API, specs []chaos.Spec, timeout time.Duration) (map[string]*chaos.Record, map[string]string) {
	records := map[string]*chaos.Record{}
	errs := map[string]string{}
	var mu sync.Mutex
	deadline := time.Now().Add(timeout)
	began := time.Now()
	lastLog := time.Now()
	for {
		var pending []string
		for _, s := range specs {
			if r := records[s.ID]; r == nil || !r.Terminal() {
				pending = append(pending, s.ID)
			}
		}
		if len(pending) == 0 {
			t.Logf("chaos: every request settled %.1fs after the faults", time.Since(began).Seconds())
			return records, errs
		}
		if time.Now().After(deadline) {
			t.Logf("chaos: %d requests still not complete or error %s after the faults: %s", len(pending), timeout, statusCounts(pending, records, errs))
			return records, errs
		}
		if time.Since(lastLog) > 10*time.Second {
			t.Logf("chaos: settling, %d not settled after %.0fs: %s", len(pending), time.Since(began).Seconds(), statusCounts(pending, records, errs))
			lastLog = time.Now()
		}
		work := make(chan string)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for id := range work {
					gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					r, err := api.Get(gctx, id)
					cancel()
					mu.Lock()
					switch {
					case err == nil:
						records[id] = r
						delete(errs, id)
					case errors.Is(err, chaos.ErrNoRecord):
						errs[id] = "callback answered 404: no such request"
					default:
						errs[id] = "GET failed: " + err.Error()
					}
					mu.Unlock()
				}
			})
		}
		for _, id := range pending {
			work <- id
		}
		close(work)
		wg.Wait()
		select {
		case <-ctx.Done():
			return records, errs
		case <-time.After(time.Second):
		}
	}
}

func statusCounts(ids []string, records map[string]*chaos.Record, errs map[string]string) string {
	counts := map[string]int{}
	for _, id := range ids {
		if r := records[id]; r != nil {
			counts[r.Status+" at "+r.Step]++
		} else {
			counts["no record ("+errs[id]+")"]++
		}
	}
	var parts []string
	for k, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// statistics tells what the run did: timings, faults, unexpected exits, and what the receivers and
// the data layer saw in total.
func statistics(all []*chaos.Evidence, faults []chaos.FaultRecord, c *chaos.Cluster, rcv *chaos.Receivers, dl *chaos.DataLayer, phases map[string]time.Duration, start time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  timings: total %.1fs", time.Since(start).Seconds())
	for _, p := range []string{"build", "start and configure", "stream and faults", "settle", "check"} {
		fmt.Fprintf(&b, ", %s %.1fs", p, phases[p].Seconds())
	}
	b.WriteString("\n")
	kinds := map[chaos.Fault]int{}
	for _, f := range faults {
		kinds[f.Fault]++
	}
	fmt.Fprintf(&b, "  faults (%d):", len(faults))
	for _, k := range chaos.AllFaults {
		if kinds[k] > 0 || len(faults) == 0 {
			fmt.Fprintf(&b, " [%s: %d]", k, kinds[k])
		}
	}
	b.WriteString("\n")
	for _, f := range faults {
		fmt.Fprintf(&b, "    %s\n", f)
	}
	for _, p := range c.Procs() {
		for _, u := range p.Unexpected() {
			fmt.Fprintf(&b, "  UNEXPECTED EXIT: %s\n", u)
		}
	}
	calls, status503, left, repeats := 0, 0, 0, 0
	resumes, replies := map[string]int{}, map[string]int{}
	deliveries, reruns, noExecID := 0, 0, 0
	for _, e := range all {
		calls += len(e.Calls)
		seen := map[string]bool{}
		for _, cl := range e.Calls {
			switch cl.Status {
			case 503:
				status503++
			case 0:
				left++
			}
			if seen[cl.Hook] {
				repeats++
			}
			seen[cl.Hook] = true
		}
		for _, posts := range []struct {
			of    []chaos.TokenPost
			count map[string]int
		}{{e.Resumes, resumes}, {e.Replies, replies}} {
			for _, p := range posts.of {
				k := strconv.Itoa(p.Status)
				if p.Status == 0 {
					k = "connection error"
				}
				posts.count[k]++
			}
		}
		for _, d := range e.Deliveries {
			deliveries++
			if !d.Ran {
				reruns++
			}
			if d.ExecutionID == "" {
				noExecID++
			}
		}
	}
	fmt.Fprintf(&b, "  receivers: %d calls (%d answered 503, %d left by the caller before the answer, %d repeats of a webhook within a request)\n", calls, status503, left, repeats)
	for _, posts := range []struct {
		what  string
		count map[string]int
	}{{"resume posts", resumes}, {"eligible replies", replies}} {
		var rs []string
		for k, n := range posts.count {
			rs = append(rs, fmt.Sprintf("%s: %d", k, n))
		}
		sort.Strings(rs)
		fmt.Fprintf(&b, "  %s: %s\n", posts.what, strings.Join(rs, ", "))
	}
	fmt.Fprintf(&b, "  data layer: %d executes delivered, %d repeats answered without running, %d without execution_id (fallback key: the request id)\n", deliveries, reruns, noExecID)
	for _, s := range rcv.Strays() {
		fmt.Fprintf(&b, "  STRAY CALL: %s\n", s)
	}
	for _, p := range dl.Problems() {
		fmt.Fprintf(&b, "  DATA LAYER: %s\n", p)
	}
	return b.String()
}

// breakerStats is the statistics' line about circuit breakers.
func breakerStats(ctx context.Context, js jetstream.JetStream) string {
	opened, closed, err := chaos.BreakerEvents(ctx, js)
	if err != nil {
		return fmt.Sprintf("  circuit breakers: %v\n", err)
	}
	return fmt.Sprintf("  circuit breakers: opened %d times, closed %d times\n", opened, closed)
}
