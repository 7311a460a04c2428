package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/token"
)

// The list scenario (-list N): N records in privacy_requests, written straight into the bucket as
// the executor writes them (a plan reference, three webhooks' attempts, a timeline), over 30
// days, 20 policies and the statuses of a pipeline that mostly completes. The callback service runs
// as a process and builds its index from the bucket. Then, while a writer changes listWriteRate
// records a second, filtered pages are asked over HTTP: listRate a second for a while (20 s in
// make bench, ListFor), each at its
// time whatever the others take (latency counted from that time, so a slow answer delays no
// measurement), then by listClients clients as fast as they are answered for as long, which gives
// the most the replica answers.
const (
	listRate      = 50
	listClients   = 4
	listWriteRate = 200
	listPolicies  = 20
	listDays      = 30
	listRootID    = "bench-root"
)

// listEpoch is the creation time of the scenario's first record.
var listEpoch = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// ListResult is the list scenario's report.
type ListResult struct {
	Scenario string `json:"scenario"`
	Records  int    `json:"records"`
	// RecordBytes is the average size of a record's JSON.
	RecordBytes int `json:"record_bytes"`
	// LoadSeconds is how long the callback took from its start to an index of every record, and
	// RSSMB its resident memory then; PeakRSSMB is its peak over the whole run.
	LoadSeconds float64 `json:"load_seconds"`
	RSSMB       float64 `json:"callback_rss_mb"`
	PeakRSSMB   float64 `json:"callback_peak_rss_mb"`
	// Queries were asked at QueriesPerSecond (listRate) while Writes records changed; P50MS,
	// P99MS and MaxMS are their latencies.
	Queries          int     `json:"queries"`
	QueriesPerSecond float64 `json:"queries_per_second"`
	Writes           int     `json:"writes_during_queries"`
	P50MS            float64 `json:"p50_ms"`
	P99MS            float64 `json:"p99_ms"`
	MaxMS            float64 `json:"max_ms"`
	// SaturatedQPS is how many queries a second listClients clients got answered, each asking
	// again as soon as answered, and SaturatedP99MS their p99 (a queue, not a service time).
	SaturatedQPS   float64 `json:"saturated_queries_per_second"`
	SaturatedP99MS float64 `json:"saturated_p99_ms"`
	// Seconds is how long each of the two phases asked.
	Seconds float64 `json:"seconds"`
	// PerQuery is each query's p50 and p99, in milliseconds.
	PerQuery []ListQueryResult `json:"per_query"`
}

// ListQueryResult is one query's latencies.
type ListQueryResult struct {
	Name  string  `json:"name"`
	Query string  `json:"query"`
	Total int     `json:"total"`
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
}

// listStatus returns the status of the i-th record: 90% complete, the rest spread over the others.
func listStatus(i int) event.Status {
	switch i % 100 {
	case 0, 1, 2:
		return event.StatusError
	case 3, 4:
		return event.StatusPaused
	case 5, 6:
		return event.StatusInProcessing
	case 7:
		return event.StatusPending
	case 8:
		return event.StatusAwaitingPreApproval
	case 9:
		return event.StatusDenied
	}
	return event.StatusComplete
}

func listID(i int) string { return fmt.Sprintf("pri_%016x", uint64(i)*0x9e3779b97f4a7c15) }

// listRecord returns the i-th record of n, with its status at version v (0: as first written).
func listRecord(i, n, v int) event.Request {
	created := listEpoch.Add(time.Duration(float64(i) / float64(n) * float64(listDays*24*time.Hour)))
	started := created.Add(time.Second)
	status := listStatus(i + v)
	r := event.Request{Format: event.RecordFormat, ID: listID(i), PolicyKey: fmt.Sprintf("policy_%02d", i%listPolicies),
		ExternalID: "ext-" + strconv.Itoa(i), Status: status, Step: event.StepPostWebhooks,
		PlanRef: "7f3c1e9a0b2d4c6e8f1a3b5c7d9e0f12", Next: 1, Run: 1, CreatedAt: created, UpdatedAt: started.Add(4 * time.Second),
		StartedProcessingAt: &started}
	if status == event.StatusComplete || status == event.StatusError || status == event.StatusDenied {
		finished := started.Add(4 * time.Second)
		r.FinishedProcessingAt = &finished
	}
	for k, key := range []string{"wake_warehouse", "lookup_phone", "logout"} {
		at := started.Add(time.Duration(k) * time.Second)
		r.Webhooks = append(r.Webhooks, event.WebhookRecord{ID: fmt.Sprintf("wh_%d_%s", k, key[:4]), Key: key,
			CallbackType: event.Pre, Direction: event.OneWay, Order: k, Outcome: event.OutcomeSucceeded,
			Attempts: []event.Attempt{{At: at, WebhookID: "msg_" + listID(i)[4:] + strconv.Itoa(k), Status: 200, LatencyMS: 12.5}}})
	}
	prev := event.StatusPending
	r.AddToTimeline(event.TimelineEntry{Seq: 1, Status: event.StatusPending, At: created, Step: event.StepPreWebhooks})
	r.AddToTimeline(event.TimelineEntry{Seq: 2, Status: event.StatusInProcessing, Previous: &prev, At: started, Step: event.StepPreWebhooks})
	if status != event.StatusInProcessing {
		prev = event.StatusInProcessing
		r.AddToTimeline(event.TimelineEntry{Seq: 3, Status: status, Previous: &prev, At: r.UpdatedAt, Step: event.StepPostWebhooks})
	}
	return r
}

// fillRequests writes n records into privacy_requests in creation order, then changes every
// tenth one again (so that the bucket's order is not the creation order), and returns the average
// record size.
func (e *Env) fillRequests(ctx context.Context, n int) (int, error) {
	if _, err := natsconn.RequestsBucket(ctx, e.js); err != nil {
		return 0, err
	}
	var bytes int64
	put := func(i, v int) error {
		b, err := json.Marshal(listRecord(i, n, v))
		if err != nil {
			return err
		}
		bytes += int64(len(b))
		_, err = e.js.PublishAsync(natsconn.KeySubject(event.BucketRequests, listID(i)), b)
		return err
	}
	wait := func() error {
		select {
		case <-e.js.PublishAsyncComplete():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Minute):
			return errors.New("fill privacy_requests: publishes not acknowledged in 5 minutes")
		}
	}
	for i := range n {
		if err := put(i, 0); err != nil {
			return 0, err
		}
		if i%50000 == 49999 {
			if err := wait(); err != nil {
				return 0, err
			}
		}
	}
	writes := n
	for i := 0; i < n; i += 10 {
		if err := put(i, 1); err != nil {
			return 0, err
		}
		writes++
	}
	if err := wait(); err != nil {
		return 0, err
	}
	return int(bytes / int64(writes)), nil
}

// listQueries are the filtered pages asked: what an operator's console and scripts ask.
func listQueries(n int) []struct{ name, query string } {
	day := func(d int) string { return listEpoch.Add(time.Duration(d) * 24 * time.Hour).Format(time.RFC3339) }
	return []struct{ name, query string }{
		{"failed", "status=error&size=50"},
		{"attention", "status=paused&status=error&status=awaiting_pre_approval&status=pre_approval_not_eligible&size=25"},
		{"policy_page_20", "policy_key=policy_07&status=complete&page=20&size=50"},
		{"one_day", "created_gt=" + url.QueryEscape(day(10)) + "&created_lt=" + url.QueryEscape(day(11)) + "&size=50"},
		{"by_finished", "status=complete&sort_field=finished_processing_at&size=50"},
		{"by_updated_all", "sort_field=updated_at&sort_direction=asc&size=100"},
		{"deep_page", "page=5000&size=100"},
		{"external_id", "external_id=ext-" + strconv.Itoa(n/3)},
		{"id", "id=" + listID(n/2)},
	}
}

// measureList runs the list scenario with n records.
func measureList(ctx context.Context, n int, listFor time.Duration, w io.Writer) (ListResult, error) {
	res := ListResult{Scenario: "list", Records: n}
	dir, err := os.MkdirTemp("", "policyhooks-bench-list-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(w, "list: building the callback service...")
	bin, err := buildService(ctx, dir, "callback")
	if err != nil {
		return res, err
	}
	e, err := NewEnv(ctx, 0, 1)
	if err != nil {
		return res, err
	}
	defer e.Close()
	fmt.Fprintf(w, "list: writing %d records into privacy_requests...\n", n)
	start := time.Now()
	if res.RecordBytes, err = e.fillRequests(ctx, n); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "list: written in %.1fs, %d bytes a record\n", time.Since(start).Seconds(), res.RecordBytes)

	port, err := freeLoopbackPort()
	if err != nil {
		return res, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logFile, err := os.Create(filepath.Join(dir, "callback.log"))
	if err != nil {
		return res, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "NATS_URL="+e.nats.URL(), "APP_ENCRYPTION_KEY="+appKey, "HTTP_ADDR="+addr,
		"LOG_LEVEL=warn", "OAUTH_ROOT_CLIENT_ID="+listRootID)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start = time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	auth, err := listToken()
	if err != nil {
		return res, err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: listClients}}
	base := "http://" + addr + "/api/v1/privacy-request?"
	// ask GETs one page and returns the answer's status, how long it took and the page's total.
	type answer struct {
		code  int
		took  time.Duration
		total int
	}
	ask := func(query string) (answer, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+query, nil)
		if err != nil {
			return answer{}, err
		}
		req.Header.Set("Authorization", "Bearer "+auth)
		t := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		a := answer{code: resp.StatusCode, took: time.Since(t)}
		if err != nil {
			return a, err
		}
		if resp.StatusCode != http.StatusOK {
			return a, fmt.Errorf("GET ?%s: %d %s", query, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		var page struct {
			Total int `json:"total"`
		}
		err = json.Unmarshal(body, &page)
		a.total = page.Total
		return a, err
	}
	// The index is loaded when the list answers 200 rather than 503.
	for {
		select {
		case <-done:
			return res, fmt.Errorf("the callback service exited (log %s)", logFile.Name())
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		a, err := ask("size=1")
		if err == nil {
			break
		}
		if a.code != http.StatusServiceUnavailable && a.code != 0 {
			return res, err
		}
	}
	res.LoadSeconds = round(time.Since(start).Seconds())
	res.RSSMB = round(procStatusKB(cmd.Process.Pid, "VmRSS") / 1024)
	fmt.Fprintf(w, "list: the callback's index holds every record %.1fs after its start, RSS %.0f MB\n", res.LoadSeconds, res.RSSMB)

	queries := listQueries(n)
	for _, q := range queries { // every query answers, and its total is kept
		a, err := ask(q.query)
		if err != nil {
			return res, err
		}
		res.PerQuery = append(res.PerQuery, ListQueryResult{Name: q.name, Query: q.query, Total: a.total})
	}

	wctx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	writes := make(chan int, 1)
	go func() { writes <- e.changeRequests(wctx, n) }()

	var mu sync.Mutex
	var failure error
	took := make([][]float64, len(queries))
	var all []float64
	record := func(q int, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && failure == nil {
			failure = err
		}
		ms := float64(d.Microseconds()) / 1000
		took[q] = append(took[q], ms)
		all = append(all, ms)
	}
	// At listRate a second, each query at its time.
	var wg sync.WaitGroup
	begin := time.Now()
	for k := 0; time.Since(begin) < listFor && ctx.Err() == nil; k++ {
		due := begin.Add(time.Duration(k) * time.Second / listRate)
		time.Sleep(time.Until(due))
		q := k % len(queries)
		wg.Go(func() {
			_, err := ask(queries[q].query)
			record(q, time.Since(due), err)
		})
	}
	wg.Wait()
	if failure != nil {
		return res, failure
	}
	res.Queries, res.QueriesPerSecond = len(all), listRate
	res.P50MS, res.P99MS, res.MaxMS = percentile(all, 50), percentile(all, 99), percentile(all, 100)
	for i := range res.PerQuery {
		res.PerQuery[i].P50MS, res.PerQuery[i].P99MS = percentile(took[i], 50), percentile(took[i], 99)
	}

	// As fast as listClients clients are answered.
	all = nil
	qctx, cancel := context.WithTimeout(ctx, listFor)
	defer cancel()
	for c := range listClients {
		wg.Go(func() {
			for k := c; qctx.Err() == nil; k++ {
				q := k % len(queries)
				a, err := ask(queries[q].query)
				if qctx.Err() != nil {
					return
				}
				record(q, a.took, err)
			}
		})
	}
	wg.Wait()
	stopWrites()
	res.Writes = <-writes
	if failure != nil {
		return res, failure
	}
	res.SaturatedQPS = round(float64(len(all)) / listFor.Seconds())
	res.Seconds = listFor.Seconds()
	res.SaturatedP99MS = percentile(all, 99)
	res.PeakRSSMB = round(procPeakRSSMB(cmd.Process.Pid))
	return res, nil
}

// changeRequests changes listWriteRate records a second, each to its next status, until ctx ends,
// and returns how many it changed.
func (e *Env) changeRequests(ctx context.Context, n int) int {
	tick := time.NewTicker(time.Second / listWriteRate)
	defer tick.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	changed := 0
	for {
		select {
		case <-ctx.Done():
			return changed
		case <-tick.C:
		}
		i := rng.IntN(n)
		b, _ := json.Marshal(listRecord(i, n, 2+changed))
		if _, err := e.js.PublishAsync(natsconn.KeySubject(event.BucketRequests, listID(i)), b); err == nil {
			changed++
		}
	}
}

// listToken mints an access token of the root client with privacy-request:read, as the config
// service would.
func listToken() (string, error) {
	key, err := secret.DeriveKey(appKey, secret.PurposeAccessTokens)
	if err != nil {
		return "", err
	}
	s, err := token.NewSealer(key)
	if err != nil {
		return "", err
	}
	return s.Seal(&token.AccessClaims{ClientID: listRootID, Scopes: []string{scope.PrivacyRequestRead}}, time.Hour)
}

// percentile returns the p-th percentile of ms (nearest rank), rounded.
func percentile(ms []float64, p float64) float64 {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return round(s[min(max(i, 0), len(s)-1)])
}

// reportList prints the list scenario's table and its JSON line.
func reportList(w io.Writer, r ListResult) {
	fmt.Fprintf(w, "\nrequest list: %d records (%d bytes each), index loaded in %.1fs, callback RSS %.0f MB (peak %.0f MB)\n",
		r.Records, r.RecordBytes, r.LoadSeconds, r.RSSMB, r.PeakRSSMB)
	fmt.Fprintf(w, "%d queries at %.0f a second while records changed (%d changes in all): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		r.Queries, r.QueriesPerSecond, r.Writes, r.P50MS, r.P99MS, r.MaxMS)
	fmt.Fprintf(w, "saturated: %d clients asking again as soon as answered got %.1f queries a second, p99 %.2f ms\n",
		listClients, r.SaturatedQPS, r.SaturatedP99MS)
	fmt.Fprintf(w, "%-16s %9s %9s %9s  %s\n", "query", "total", "p50 ms", "p99 ms", "")
	for _, q := range r.PerQuery {
		fmt.Fprintf(w, "%-16s %9d %9.2f %9.2f  ?%s\n", q.Name, q.Total, q.P50MS, q.P99MS, q.Query)
	}
	b, _ := json.Marshal(r)
	fmt.Fprintln(w, string(b))
}
