package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

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
		scenarios = append(scenarios, r.Scenario)
	}
	if strings.Join(scenarios, ",") != "skip,await" {
		t.Fatalf("scenarios = %v, want skip, await", scenarios)
	}
}
