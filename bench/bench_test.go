package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the benchmark's NATS server too: the harness starts
// os.Executable() with -nats-server DIR PORT, which under go test is this binary.
func TestMain(m *testing.M) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, Options{Quick: true, Concurrency: "32"}, &out); err != nil {
		t.Fatalf("bench run: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var scenarios []string
	for _, line := range lines[len(lines)-2:] {
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("last lines are not JSON results: %q (%v)\n%s", line, err, out.String())
		}
		if r.Failed != 0 || r.RequestsPerSecond <= 0 || r.Requests != 300 {
			t.Fatalf("result %+v: want 300 requests, none failed", r)
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
		scenarios = append(scenarios, r.Scenario)
	}
	if strings.Join(scenarios, ",") != "skip,await" {
		t.Fatalf("scenarios = %v, want skip, await", scenarios)
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
