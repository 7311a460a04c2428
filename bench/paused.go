package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// pausedConcurrency is the executor's EXECUTOR_CONCURRENCY and the driver's limit of requests in
// flight in the paused-requests scenario. A paused request holds no slot: the limit bounds only the
// requests on their way to their pause, not the requests paused at once.
const pausedConcurrency = 256

// PausedFigures is what the paused-requests scenario measures: the growth of what the NATS server
// and the executor hold, from just before the requests are submitted to when all of them are paused
// and the executor is quiet, divided by the number of requests.
type PausedFigures struct {
	// ServerRSSKBPerRequest is the growth of the NATS server process's resident set (VmRSS), in
	// KiB, as it is: garbage not yet collected included.
	ServerRSSKBPerRequest float64 `json:"server_rss_kb_per_request"`
	// ServerHeapKBPerRequest is the growth of the server's live Go heap (HeapAlloc right after a
	// collection forced in the server process), in KiB; nil when the server does not tell it.
	ServerHeapKBPerRequest *float64 `json:"server_heap_kb_per_request,omitempty"`
	// DiskKBPerRequest is the growth of the server's store directory, the sum of its files' sizes,
	// in KiB.
	DiskKBPerRequest float64 `json:"disk_kb_per_request"`
	// SubjectsPerRequest is the growth of the number of distinct subjects, summed over the streams.
	SubjectsPerRequest float64 `json:"subjects_per_request"`
	// RecordBytesPerRequest, IdentityBytesPerRequest and EventBytesPerRequest are the growth of the
	// stored bytes (State.Bytes) of privacy_requests, privacy_identities and PRIVACY_REQUESTS.
	RecordBytesPerRequest   float64 `json:"record_bytes_per_request"`
	IdentityBytesPerRequest float64 `json:"identity_bytes_per_request"`
	EventBytesPerRequest    float64 `json:"stream_bytes_per_request"`
	// ServerRSSMB and ExecutorRSSMB are the processes' resident sets once all the requests are
	// paused, in MiB; ExecutorRSSKBPerRequest is the executor's growth, as the server's.
	ServerRSSMB             float64 `json:"server_rss_mb"`
	ExecutorRSSMB           float64 `json:"executor_rss_mb"`
	ExecutorRSSKBPerRequest float64 `json:"executor_rss_kb_per_request"`
	// RestartServerRSSKBPerRequest and RestartServerHeapKBPerRequest are the server's resident set
	// and live heap after it was restarted on the same store (the executor stopped), less the same
	// figures before the requests were submitted, per request.
	RestartServerRSSKBPerRequest  *float64 `json:"server_rss_kb_per_request_after_restart,omitempty"`
	RestartServerHeapKBPerRequest *float64 `json:"server_heap_kb_per_request_after_restart,omitempty"`
	// Streams is the growth of every stream (the buckets' included, as KV_<bucket>), per request.
	Streams map[string]StreamFigures `json:"streams"`
}

// StreamFigures is the growth of one stream's state per paused request.
type StreamFigures struct {
	BytesPerRequest    float64 `json:"bytes_per_request"`
	MsgsPerRequest     float64 `json:"msgs_per_request"`
	SubjectsPerRequest float64 `json:"subjects_per_request"`
}

// held is what the NATS server and the executor hold at one moment.
type held struct {
	serverRSSKB float64
	// serverHeap is the server's live heap in bytes; nil when the server does not tell it.
	serverHeap    *float64
	diskBytes     int64
	streams       map[string]jetstream.StreamState
	executorRSSKB float64 // 0 without an executor
}

// measurePaused runs the paused-requests scenario with n requests and returns its result, named
// paused.
func measurePaused(ctx context.Context, bin string, n int, settleFor time.Duration, w io.Writer) ([]Result, error) {
	if n < 1 {
		return nil, fmt.Errorf("paused: want at least one request, not %d", n)
	}
	fmt.Fprintf(w, "%d paused requests (the two-way webhook answers halt), then the server restarted...\n", n)
	r, err := runPaused(ctx, bin, n, settleFor)
	if err != nil {
		return nil, fmt.Errorf("paused: %w", err)
	}
	r.Scenario = "paused"
	return []Result{r}, nil
}

// runPaused submits n requests whose plan's two-way webhook answers {"halt": true}, waits until
// every one is paused (its status.paused event), and measures what the server and the executor
// hold then against before; then it stops the executor, restarts the server on the same store and
// measures the server again. The executor skips the execution stage, which the requests never
// reach.
func runPaused(ctx context.Context, bin string, n int, settleFor time.Duration) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute+settleFor+time.Duration(n)*10*time.Millisecond)
	defer cancel()
	e, err := NewEnv(ctx, 0, 1)
	if err != nil {
		return Result{}, err
	}
	defer e.Close()
	if _, err := e.assets().Stream(ctx); err != nil {
		return Result{}, err
	}
	if err := e.PutHaltingPlan(ctx); err != nil {
		return Result{}, err
	}
	x, err := e.StartExecutor(ctx, bin, pausedConcurrency, "skip")
	if err != nil {
		return Result{}, err
	}
	defer x.Stop()
	r, before, err := e.pauseAll(ctx, x, n, settleFor)
	if err != nil {
		return Result{}, err
	}
	// The executor is stopped first, so that only the server's recovery is measured.
	x.Stop()
	restarted, err := e.restartAndMeasure(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("after restart: %w", err)
	}
	r.RestartServerRSSKBPerRequest = ptr(perRequest(restarted.serverRSSKB-before.serverRSSKB, n))
	if restarted.serverHeap != nil && before.serverHeap != nil {
		r.RestartServerHeapKBPerRequest = ptr(perRequest((*restarted.serverHeap-*before.serverHeap)/1024, n))
	}
	return r, nil
}

// pauseAll warms the executor up, then runs n requests to their pause and measures. It returns the
// result and what was held before the n requests.
func (e *Env) pauseAll(ctx context.Context, x *Executor, n int, settleFor time.Duration) (Result, held, error) {
	var current atomic.Pointer[Driver]
	stop, err := e.followStatus(&current, event.StatusPaused)
	if err != nil {
		return Result{}, held{}, err
	}
	defer stop()
	warm := newDriver(100, 100)
	current.Store(warm)
	if _, err := warm.run(ctx, "warm", 0, e.submit); err != nil {
		return Result{}, held{}, fmt.Errorf("warm-up: %w", err)
	}
	m, err := startMeter(ctx, e, x)
	if err != nil {
		return Result{}, held{}, err
	}
	// The server is measured once quiet too: startMeter waited for the executor only.
	settle(ctx, e.nats.CPUSeconds, nil)
	before, err := e.held(ctx, x)
	if err != nil {
		return Result{}, held{}, err
	}
	d := newDriver(n, pausedConcurrency)
	current.Store(d)
	load, err := d.run(ctx, "req", 0, e.submit)
	if err != nil {
		return Result{}, held{}, err
	}
	u, err := m.stop(ctx, load.Completed)
	if err != nil {
		return Result{}, held{}, err
	}
	settle(ctx, e.nats.CPUSeconds, nil)
	// The server keeps the message ids of the last 2 minutes (the stream's duplicate window) in
	// memory: waiting that out leaves what a paused request costs for as long as it is paused.
	select {
	case <-ctx.Done():
		return Result{}, held{}, ctx.Err()
	case <-time.After(settleFor):
	}
	after, err := e.held(ctx, x)
	if err != nil {
		return Result{}, held{}, err
	}
	r := productResult(point{n: n, concurrency: pausedConcurrency, stage: "skip"}, load, u, x, e.replicas)
	r.PausedFigures = pausedFigures(before, after, n)
	return r, before, nil
}

// restartAndMeasure restarts the server on its store, waits until it holds every message it held
// before and is quiet, and measures what it holds.
func (e *Env) restartAndMeasure(ctx context.Context) (held, error) {
	want, err := e.streamStates(ctx)
	if err != nil {
		return held{}, err
	}
	if err := e.RestartNATS(ctx); err != nil {
		return held{}, err
	}
	if err := e.waitRecovered(ctx, want); err != nil {
		return held{}, err
	}
	settle(ctx, e.nats.CPUSeconds, nil)
	return e.held(ctx, nil)
}

// RestartNATS restarts the Env's NATS server (one server, not a cluster) on the same store and
// connects the harness to it again.
func (e *Env) RestartNATS(ctx context.Context) error {
	p, err := e.server()
	if err != nil {
		return err
	}
	e.nc.Close()
	q, err := p.Restart(ctx)
	if err != nil {
		return err
	}
	e.nats = q
	return e.connect()
}

// waitRecovered waits, for at most a minute, until every stream of want holds as many messages
// again.
func (e *Env) waitRecovered(ctx context.Context, want map[string]jetstream.StreamState) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		got, err := e.streamStates(ctx)
		if err == nil && sameMsgs(got, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("streams not recovered (last error: %v): %w", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sameMsgs reports whether got has the streams of want, each with as many messages.
func sameMsgs(got, want map[string]jetstream.StreamState) bool {
	for name, s := range want {
		if g, ok := got[name]; !ok || g.Msgs != s.Msgs {
			return false
		}
	}
	return true
}

// server returns the Env's NATS server process; an Env on a cluster has none.
func (e *Env) server() (*NATSProcess, error) {
	p, ok := e.nats.(*NATSProcess)
	if !ok {
		return nil, errors.New("want one NATS server, not a cluster")
	}
	return p, nil
}

// held measures what the server and x (when not nil) hold. The server's heap is asked for last:
// asking forces a collection in the server, which the resident set read before must not see.
func (e *Env) held(ctx context.Context, x *Executor) (held, error) {
	p, err := e.server()
	if err != nil {
		return held{}, err
	}
	h := held{serverRSSKB: p.RSSKB()}
	if x != nil {
		h.executorRSSKB = x.RSSKB()
	}
	if h.diskBytes, err = dirBytes(p.dir); err != nil {
		return held{}, err
	}
	if h.streams, err = e.streamStates(ctx); err != nil {
		return held{}, err
	}
	if heap, err := serverHeapBytes(ctx, e.nc); err == nil {
		h.serverHeap = &heap
	}
	return h, nil
}

// streamStates returns the state of every stream, by name.
func (e *Env) streamStates(ctx context.Context) (map[string]jetstream.StreamState, error) {
	states := map[string]jetstream.StreamState{}
	streams := e.js.ListStreams(ctx)
	for info := range streams.Info() {
		states[info.Config.Name] = info.State
	}
	if err := streams.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	return states, nil
}

// pausedFigures returns the growth from before to after per request, n requests.
func pausedFigures(before, after held, n int) *PausedFigures {
	f := &PausedFigures{
		ServerRSSKBPerRequest:   perRequest(after.serverRSSKB-before.serverRSSKB, n),
		DiskKBPerRequest:        perRequest(float64(after.diskBytes-before.diskBytes)/1024, n),
		ServerRSSMB:             round(after.serverRSSKB / 1024),
		ExecutorRSSMB:           round(after.executorRSSKB / 1024),
		ExecutorRSSKBPerRequest: perRequest(after.executorRSSKB-before.executorRSSKB, n),
		Streams:                 streamFigures(before.streams, after.streams, n),
	}
	if after.serverHeap != nil && before.serverHeap != nil {
		f.ServerHeapKBPerRequest = ptr(perRequest((*after.serverHeap-*before.serverHeap)/1024, n))
	}
	for _, s := range f.Streams {
		f.SubjectsPerRequest += s.SubjectsPerRequest
	}
	f.SubjectsPerRequest = round(f.SubjectsPerRequest)
	f.RecordBytesPerRequest = f.Streams[kvStream(event.BucketRequests)].BytesPerRequest
	f.IdentityBytesPerRequest = f.Streams[kvStream(event.BucketIdentities)].BytesPerRequest
	f.EventBytesPerRequest = f.Streams[event.Stream].BytesPerRequest
	return f
}

// streamFigures returns the growth of every stream of after per request (a stream missing from
// before grew from nothing).
func streamFigures(before, after map[string]jetstream.StreamState, n int) map[string]StreamFigures {
	out := make(map[string]StreamFigures, len(after))
	for name, a := range after {
		b := before[name]
		out[name] = StreamFigures{
			BytesPerRequest:    perRequest(float64(a.Bytes)-float64(b.Bytes), n),
			MsgsPerRequest:     perRequest(float64(a.Msgs)-float64(b.Msgs), n),
			SubjectsPerRequest: perRequest(float64(a.NumSubjects)-float64(b.NumSubjects), n),
		}
	}
	return out
}

// kvStream returns the name of the stream that holds bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// perRequest returns growth divided by n, rounded to two decimals.
func perRequest(growth float64, n int) float64 { return round(growth / float64(n)) }

// reportPaused writes, for the results of the paused-requests scenario, what is held per paused
// request: the processes and the store, then every stream.
func reportPaused(w io.Writer, results []Result) {
	var paused []Result
	for _, r := range results {
		if r.PausedFigures != nil {
			paused = append(paused, r)
		}
	}
	if len(paused) == 0 {
		return
	}
	fmt.Fprintln(w, "held per paused request (growth from before submitting to all paused, per request; restart: the server restarted on its store):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tserver RSS KB\tserver heap KB\tdisk KB\tsubjects\trecord B\tidentity B\tevents B"+
		"\tRSS KB restart\theap KB restart\tserver RSS MB\texecutor RSS MB\texecutor RSS KB\t")
	for _, r := range paused {
		f := r.PausedFigures
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%s\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%.1f\t%.1f\t%.2f\t\n",
			r.Scenario, r.Requests, f.ServerRSSKBPerRequest, optional(f.ServerHeapKBPerRequest), f.DiskKBPerRequest,
			f.SubjectsPerRequest, f.RecordBytesPerRequest, f.IdentityBytesPerRequest, f.EventBytesPerRequest,
			optional(f.RestartServerRSSKBPerRequest), optional(f.RestartServerHeapKBPerRequest),
			f.ServerRSSMB, f.ExecutorRSSMB, f.ExecutorRSSKBPerRequest)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, r := range paused {
		reportStreams(w, r)
	}
}

// reportStreams writes the growth of every stream of r per paused request.
func reportStreams(w io.Writer, r Result) {
	fmt.Fprintf(w, "%s, per paused request, by stream:\n", r.Scenario)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stream\tbytes\tmsgs\tsubjects\t")
	for _, name := range slices.Sorted(maps.Keys(r.Streams)) {
		s := r.Streams[name]
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t\n", name, s.BytesPerRequest, s.MsgsPerRequest, s.SubjectsPerRequest)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
}
