package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/event"
)

// TestMain lets the test binary serve as the benchmark's NATS server too: the harness starts
// os.Executable() with -nats-server DIR PORT, which under go test is this binary, and the nodes of
// a cluster (devstack.RunClusterNode) the same way.
func TestMain(m *testing.M) {
	if code, ok := devstack.RunClusterNode(); ok {
		os.Exit(code)
	}
	if args := os.Args[1:]; len(args) == 3 && args[0] == "-"+natsServerFlag {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := serveNATS(ctx, args[1], args[2], os.Stdin)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs the harness end to end on a few hundred requests: every request of every scenario
// must finish and the report must end with one JSON line per scenario. It asserts no timing.
func TestSmoke(t *testing.T) {
	out := smokeRun(t, Options{Quick: true, Concurrency: "32"})
	checkSmoke(t, out, []string{"skip", "await"}, 1)
}

// TestSmokeR3 runs the R3 point the same way, on three-node clusters: the executor must have made
// its buckets with three replicas (measureProduct checks every stream) and the report must end
// with skip_r3 and await_r3.
func TestSmokeR3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three three-node clusters")
	}
	out := smokeRun(t, Options{Quick: true, Concurrency: "32", Replicas: "3"})
	checkSmoke(t, out, []string{"skip_r3", "await_r3"}, 3)
}

// TestSmokeList runs the request list scenario on 3,000 records for 2 s a phase: the callback's
// index must hold them all, every query must answer, and the totals must be the records' spread.
func TestSmokeList(t *testing.T) {
	out := smokeRun(t, Options{ListOnly: true, List: 3000, ListFor: 2 * time.Second})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r ListResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("last line is not a JSON result: %v\n%s", err, out)
	}
	if r.Scenario != "list" || r.Records != 3000 || r.Queries < 50 || r.SaturatedQPS <= 0 || r.P99MS <= 0 || r.Writes == 0 {
		t.Fatalf("result %+v: want 3000 records, queries at 50 a second for 2 s, writes meanwhile", r)
	}
	want := map[string]int{"failed": 90, "attention": 180, "policy_page_20": 120, "by_updated_all": 3000, "external_id": 1, "id": 1}
	for _, q := range r.PerQuery {
		if n, ok := want[q.Name]; ok && q.Total != n {
			t.Errorf("%s: total %d, want %d", q.Name, q.Total, n)
		}
	}
}

// TestSmokePaused runs the paused-requests scenario on 200 requests: every request must pause, and
// what is held per paused request must be there and plausible. Sizes are asserted loosely, as at
// this size fixed costs (the buffers of new blocks) weigh on the figures.
func TestSmokePaused(t *testing.T) {
	out := smokeRun(t, Options{PausedOnly: true, Paused: 200, Concurrency: "32"})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("last line is not a JSON result: %v\n%s", err, out)
	}
	if r.Scenario != "paused" || r.Requests != 200 || r.Failed != 0 || r.RequestsPerSecond <= 0 || r.NATSReplicas != 1 {
		t.Fatalf("result %+v: want 200 paused requests on one server, none failed or completed", r)
	}
	if r.PausedFigures == nil {
		t.Fatalf("no figures per paused request:\n%s", out)
	}
	checkPausedFigures(t, *r.PausedFigures)
}

// checkPausedFigures checks that what is held per paused request is positive and plausible.
func checkPausedFigures(t *testing.T, f PausedFigures) {
	t.Helper()
	inRange := func(name string, v, lo, hi float64) {
		if v <= lo || v > hi {
			t.Errorf("%s = %v per paused request, want above %v and at most %v", name, v, lo, hi)
		}
	}
	inRange("server RSS KB", f.ServerRSSKBPerRequest, 0, 1024)
	inRange("disk KB", f.DiskKBPerRequest, 0, 1024)
	inRange("record bytes", f.RecordBytesPerRequest, 0, 64<<10)
	inRange("identity bytes", f.IdentityBytesPerRequest, 0, 64<<10)
	inRange("event bytes", f.EventBytesPerRequest, 0, 64<<10)
	// At least the request's key and its identity's key; the pause timer's subject too, today.
	inRange("subjects", f.SubjectsPerRequest, 1.99, 10)
	inRange("executor RSS MB", f.ExecutorRSSMB, 0, 1024)
	if f.ServerHeapKBPerRequest == nil {
		t.Errorf("no server heap: the server process did not answer on %s", heapSubject)
	} else {
		inRange("server heap KB", *f.ServerHeapKBPerRequest, 0, 1024)
	}
	if f.RestartServerRSSKBPerRequest == nil || f.RestartServerHeapKBPerRequest == nil {
		t.Errorf("no figures after the restart: %+v", f)
	}
	if s, ok := f.Streams[kvStream(event.BucketRequests)]; !ok || s.MsgsPerRequest != 1 || s.SubjectsPerRequest != 1 {
		t.Errorf("privacy_requests grew by %+v per paused request, want one record each", s)
	}
}

// smokeRun runs the benchmark with o and returns its output.
func smokeRun(t *testing.T, o Options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("bench run: %v\n%s", err, out.String())
	}
	return out.String()
}

// checkSmoke checks that out ends with one JSON result per scenario of want, in that order, each
// with 300 requests all completed on replicas replicas, and plausible figures.
func checkSmoke(t *testing.T, out string, want []string, replicas int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < len(want) {
		t.Fatalf("want %d result lines:\n%s", len(want), out)
	}
	var scenarios []string
	for _, line := range lines[len(lines)-len(want):] {
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("last lines are not JSON results: %q (%v)\n%s", line, err, out)
		}
		checkResult(t, r, replicas)
		scenarios = append(scenarios, r.Scenario)
	}
	if strings.Join(scenarios, ",") != strings.Join(want, ",") {
		t.Fatalf("scenarios = %v, want %v", scenarios, want)
	}
}

// checkResult checks the figures of one smoke result.
func checkResult(t *testing.T, r Result, replicas int) {
	t.Helper()
	if r.Failed != 0 || r.RequestsPerSecond <= 0 || r.Requests != 300 {
		t.Fatalf("result %+v: want 300 requests, none failed", r)
	}
	if r.NATSReplicas != replicas {
		t.Fatalf("result %+v: want %d replicas", r, replicas)
	}
	if r.WebhookCallsPerSec <= 0 {
		t.Fatalf("result %+v: the receivers saw no calls", r)
	}
	// The raw loop's server CPU is a few clock ticks at this size: only the product's is asserted.
	if r.ServerCPUPer1000 <= 0 {
		t.Fatalf("result %+v: want the NATS server's CPU", r)
	}
	if r.TotalCPUPer1000 < r.CPUSecondsPer1000 || r.TotalCPUPer1000 < r.ServerCPUPer1000 {
		t.Fatalf("result %+v: total CPU below one of its parts", r)
	}
	if b := r.BaselineNATSRequestsPerRequest; b == nil || *b != 1 {
		t.Fatalf("baseline NATS requests per request = %v, want 1 (the publish of its event)", b)
	}
	if n := r.NATSRequestsPerRequest; n != nil && *n <= 0 {
		t.Fatalf("executor NATS requests per request = %v, want > 0 or absent", *n)
	}
}

func TestReplicaCounts(t *testing.T) {
	tests := []struct {
		in      string
		quick   bool
		want    []int
		wantErr bool
	}{
		{in: "", want: []int{1, 3}},
		{in: "", quick: true, want: []int{1}},
		{in: "3", quick: true, want: []int{3}},
		{in: "1, 3,5", want: []int{1, 3, 5}},
		{in: "2", wantErr: true},
		{in: "1,x", wantErr: true},
		{in: "3,3", wantErr: true},
	}
	for _, tt := range tests {
		got, err := replicaCounts(tt.in, tt.quick)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("replicaCounts(%q, %t) = %v, %v; want %v, error %t", tt.in, tt.quick, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSumCounter(t *testing.T) {
	tests := []struct {
		name, text string
		want       float64
		wantOK     bool
		wantErr    bool
	}{
		{name: "absent", text: "# HELP executor_messages_in_flight x\nexecutor_messages_in_flight 3\n"},
		{name: "series summed", wantOK: true, want: 27, text: `# HELP executor_nats_requests_total NATS request/replies.
# TYPE executor_nats_requests_total counter
executor_nats_requests_total{op="kv_get"} 2
executor_nats_requests_total{op="kv_create"} 5
executor_nats_requests_total{op="kv_update"} 1.5e1
executor_nats_requests_total{op="js_publish"} 5
`},
		{name: "no labels, timestamp", wantOK: true, want: 7, text: "executor_nats_requests_total 7 1700000000000\n"},
		{name: "braces and quotes in a label value", wantOK: true, want: 4,
			text: `executor_nats_requests_total{op="a} \"b\"",x="y"} 4` + "\n"},
		{name: "longer name left alone", text: "executor_nats_requests_total_created 1.7e9\n"},
		{name: "bad value", wantErr: true, text: "executor_nats_requests_total{op=\"kv_get\"} many\n"},
		{name: "unterminated labels", wantErr: true, text: "executor_nats_requests_total{op=\"kv_get 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := sumCounter(strings.NewReader(tt.text), natsRequestsMetric)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && (got != tt.want || ok != tt.wantOK) {
				t.Fatalf("sumCounter = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
