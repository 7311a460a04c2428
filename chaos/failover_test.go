package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/chaos"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/event"
)

// The executor's durable consumers (services/executor/app: ConsumerSubmitted, ConsumerControl).
var executorConsumers = []string{"executor-submitted", "executor-control"}

// Timings of one failover: the killed node stays down failoverDown, then, once the cluster is
// healthy again, the stream runs failoverObserve more before the next fault.
const (
	failoverWarmup  = 12 * time.Second
	failoverDown    = 3 * time.Second
	failoverObserve = 5 * time.Second
)

// failover is one SIGKILL of a raft leader's node and its restart.
type failover struct {
	what      string // what the node led
	node      string
	pid       int
	killedAt  time.Time
	restarted time.Time // Restart returned (the node accepts connections)
	healthy   time.Time // every node healthy again; zero when not within the bound
	err       error
}

// TestClusterFailover is issue 11: a stream of requests (eligible pre-approval replies and halts
// resumed by the receivers included)
// through two executors, config and callback on a 3-node JetStream cluster with NATS_REPLICAS=3;
// the node leading the PRIVACY_REQUESTS stream, then the one leading the privacy_requests bucket,
// then one leading an executor consumer are SIGKILLed and restarted on their store, one after the
// other, while requests flow. Then, per request, the assertions of chaos.Assertions, and for
// each failover how long progress stalled.
func TestClusterFailover(t *testing.T) {
	o := resolveOptions(t)
	start := time.Now()
	t.Logf("chaos cluster: seed %d (reproduce with CHAOS_SEED=%d), requests at %.1f/s, 2 executors, NATS_REPLICAS=3, services built from %s",
		o.seed, o.seed, o.rate, o.src)
	dir := t.TempDir()
	if o.keep != "" {
		dir = filepath.Join(o.keep, fmt.Sprintf("cluster-%s-%d", time.Now().Format("20060102-150405"), o.seed))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("chaos cluster: logs and report kept in %s", dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// More specs than the stream will use: it runs until the failovers are done.
	specs := chaos.MakeSpecs(1000, rand.New(rand.NewPCG(o.seed, 0)))
	phases := map[string]time.Duration{}
	phase := time.Now()
	mark := func(name string) { phases[name] = time.Since(phase); phase = time.Now() }

	if err := chaos.Build(ctx, o.src, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	mark("build")

	nctx, ncancel := context.WithTimeout(ctx, time.Minute)
	defer ncancel()
	cl, err := devstack.StartCluster(nctx, filepath.Join(dir, "nats"), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			for _, nd := range cl.Nodes() {
				t.Logf("chaos cluster: end of %s's log:\n%s", nd.Name(), nd.LogTail(25))
			}
		}
	})
	if err := cl.WaitReady(nctx); err != nil {
		t.Fatal(err)
	}

	rcv, err := chaos.NewReceivers(dir, specs, o.seed, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	st := startStack(t, ctx, "chaos cluster", o.seed,
		chaos.ClusterConfig{Dir: dir, Executors: 2, Start: start, Logf: t.Logf, NATSURL: cl.URLs(), Replicas: 3}, rcv)
	c, js, api, dl := st.c, st.js, st.api, st.dl
	checkCtx, checkCancel := context.WithTimeout(ctx, 30*time.Second)
	defer checkCancel()
	for _, s := range []string{event.Stream, "KV_" + event.BucketRequests} {
		if err := checkReplicas(checkCtx, js, s, 3); err != nil {
			t.Fatal(err)
		}
	}
	mark("start and configure")

	// The stream, and the three failovers while it runs.
	var sub chaos.Submitter
	stop := make(chan struct{})
	submitted := make(chan int, 1)
	streamStart := time.Now()
	go func() { submitted <- sub.SubmitUntil(ctx, js, specs, o.rate, stop) }()
	time.Sleep(failoverWarmup)

	kill := func(what string, find leaderFinder) failover {
		f := failover{what: what}
		lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
		defer lcancel()
		nd, led, err := findLeader(lctx, find)
		if err != nil {
			f.err = err
			return f
		}
		if led != "" {
			f.what = led
		}
		f.node, f.pid, f.killedAt = nd.Name(), nd.Pid(), time.Now()
		if err := nd.Kill(); err != nil {
			f.err = err
			return f
		}
		time.Sleep(failoverDown)
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		if err := nd.Restart(rctx); err != nil {
			f.err = err
			return f
		}
		f.restarted = time.Now()
		hctx, hcancel := context.WithTimeout(ctx, 45*time.Second)
		defer hcancel()
		if err := cl.WaitReady(hctx); err != nil {
			f.err = fmt.Errorf("cluster not healthy after the restart of %s: %w", nd.Name(), err)
			return f
		}
		f.healthy = time.Now()
		return f
	}
	var fos []failover
	run := func(what string, find leaderFinder) {
		f := kill(what, find)
		fos = append(fos, f)
		if f.err != nil {
			t.Errorf("chaos cluster: failover of %s: %v", f.what, f.err)
		} else {
			t.Logf("chaos cluster: +%.1fs SIGKILL %s (pid %d), leader of %s; restarted after %s, cluster healthy %.1fs after the restart",
				f.killedAt.Sub(start).Seconds(), f.node, f.pid, what, failoverDown, f.healthy.Sub(f.restarted).Seconds())
		}
		time.Sleep(failoverObserve)
	}
	run("stream "+event.Stream, func(ctx context.Context) (*devstack.Node, string, error) {
		nd, err := cl.StreamLeader(ctx, js, event.Stream)
		return nd, "", err
	})
	run("KV bucket "+event.BucketRequests, func(ctx context.Context) (*devstack.Node, string, error) {
		nd, err := cl.KVLeader(ctx, js, event.BucketRequests)
		return nd, "", err
	})
	run("an executor consumer", func(ctx context.Context) (*devstack.Node, string, error) {
		return consumerLeader(ctx, cl, js)
	})
	close(stop)
	n := <-submitted
	streamEnd := time.Now()
	specs = specs[:n]
	mark("stream and faults")
	t.Logf("chaos cluster: %d requests submitted in %.1fs", n, streamEnd.Sub(streamStart).Seconds())

	records, recordErrs := settle(ctx, t, api, specs, o.settleTimeout)
	mark("settle")
	all, report := gatherEvidence(ctx, t, js, api, specs, records, recordErrs, rcv, dl, &sub)
	mark("check")

	// How long progress stalled around each failover: the longest gap between two moves of any
	// request (chaos.Progress: a call, an execute, a status change), and between two completions,
	// in the window from the kill to the next kill (the end of the stream for the last one); the
	// same between the first completion and the first kill as the baseline.
	progress, completions := chaos.Progress(all)
	var stalls strings.Builder
	if len(completions) > 0 && len(fos) > 0 && completions[0].Before(fos[0].killedAt) {
		from, to := completions[0], fos[0].killedAt
		base, _ := chaos.LongestGap(progress, from, to)
		baseDone, _ := chaos.LongestGap(completions, from, to)
		fmt.Fprintf(&stalls, "  baseline (%.1fs from the first completion to the first kill): longest gap %.2fs between moves, %.2fs between completions\n",
			to.Sub(from).Seconds(), base.Seconds(), baseDone.Seconds())
	}
	var faults []chaos.FaultRecord
	for i, f := range fos {
		if f.killedAt.IsZero() {
			continue
		}
		to := streamEnd
		if i+1 < len(fos) && !fos[i+1].killedAt.IsZero() {
			to = fos[i+1].killedAt
		}
		gap, gapStart := chaos.LongestGap(progress, f.killedAt, to)
		gapDone, gapDoneStart := chaos.LongestGap(completions, f.killedAt, to)
		line := fmt.Sprintf("leader of %s: %s (pid %d) SIGKILLed at +%.1fs, restarted %s later, cluster healthy %.1fs after the restart: progress stalled %.2fs (no move from %+.2fs to %+.2fs after the kill), %.2fs without a completion (from %+.2fs)",
			f.what, f.node, f.pid, f.killedAt.Sub(start).Seconds(), failoverDown, healthyAfter(f),
			gap.Seconds(), gapStart.Sub(f.killedAt).Seconds(), gapStart.Add(gap).Sub(f.killedAt).Seconds(),
			gapDone.Seconds(), gapDoneStart.Sub(f.killedAt).Seconds())
		fmt.Fprintf(&stalls, "  %s\n", line)
		faults = append(faults, chaos.FaultRecord{At: f.killedAt.Sub(start), Fault: chaos.Fault("SIGKILL the node leading " + f.what), Detail: f.node, Err: f.err})
	}

	stats := statistics(all, faults, c, rcv, dl, phases, start)
	t.Logf("chaos cluster: seed %d, %d requests, 2 executors, 3 nodes:\n%s\n  stalls:\n%s%s", o.seed, len(specs), stats, stalls.String(), report.Summary())
	full := fmt.Sprintf("cluster failover, seed %d, services from %s\n%s\nstalls:\n%s%s\n%s", o.seed, o.src, stats, stalls.String(), report.Summary(), report.Details(all, 0))
	reportPath := filepath.Join(dir, "report.txt")
	if err := os.WriteFile(reportPath, []byte(full), 0o644); err != nil {
		t.Logf("chaos cluster: writing %s: %v", reportPath, err)
	}
	if len(report.Problems) > 0 {
		t.Errorf("chaos cluster: %d of %d requests broke assertions (seed %d):\n%s\nfailing requests (at most 25 shown; all in %s):\n%s",
			len(report.Problems), len(specs), o.seed, report.Summary(), reportPath, report.Details(all, 25))
	}
	for _, p := range c.Procs() {
		for _, u := range p.Unexpected() {
			t.Errorf("chaos cluster: a service exited on its own: %s", u)
		}
	}
}

func healthyAfter(f failover) float64 {
	if f.healthy.IsZero() {
		return -1
	}
	return f.healthy.Sub(f.restarted).Seconds()
}

// leaderFinder returns the node leading a raft group and, when it chose among groups, what the
// node leads.
type leaderFinder func(context.Context) (*devstack.Node, string, error)

// findLeader polls find until it names a running node, while the group elects a leader.
func findLeader(ctx context.Context, find leaderFinder) (*devstack.Node, string, error) {
	for {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		nd, led, err := find(fctx)
		cancel()
		if err == nil && nd.Running() {
			return nd, led, nil
		}
		if err == nil {
			err = fmt.Errorf("%s does not run", nd.Name())
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("no leader: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// consumerLeader returns the node leading one of the executor's consumers, and what it leads:
// preferably a node leading neither the stream nor the privacy_requests bucket (so that the
// failover is the consumers' alone), else one not leading the stream, else any.
func consumerLeader(ctx context.Context, cl *devstack.Cluster, js jetstream.JetStream) (*devstack.Node, string, error) {
	var stream, bucket string
	if nd, err := cl.StreamLeader(ctx, js, event.Stream); err == nil {
		stream = nd.Name()
	}
	if nd, err := cl.KVLeader(ctx, js, event.BucketRequests); err == nil {
		bucket = nd.Name()
	}
	var best *devstack.Node
	var bestWhat string
	bestRank := 3
	var errs []error
	for _, name := range executorConsumers {
		nd, err := cl.ConsumerLeader(ctx, js, event.Stream, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rank, what := 0, "consumer "+name
		switch nd.Name() {
		case stream:
			rank, what = 2, what+" (its node also leads the stream)"
		case bucket:
			rank, what = 1, what+" (its node also leads the privacy_requests bucket)"
		}
		if rank < bestRank {
			best, bestWhat, bestRank = nd, what, rank
		}
	}
	if best != nil {
		return best, bestWhat, nil
	}
	return nil, "", errors.Join(errs...)
}

// checkReplicas fails unless stream has replicas replicas: the services applied NATS_REPLICAS.
func checkReplicas(ctx context.Context, js jetstream.JetStream, stream string, replicas int) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("chaos cluster: stream %s: %w", stream, err)
	}
	if got := s.CachedInfo().Config.Replicas; got != replicas {
		return fmt.Errorf("chaos cluster: stream %s has %d replicas, want %d", stream, got, replicas)
	}
	return nil
}
