package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestCircuitBreaker runs requests against a connection that fails and recovers (SPEC §6.3):
// three failed calls in a row open its breaker and publish privacy.connection.unhealthy; the
// requests that need the connection then wait (waiting_for connection) without calling it or
// using attempts; after the cool-down one probe call finds it back, closes the breaker
// (privacy.connection.healthy) and every request completes, none in error. Then an operator
// closes a breaker by hand through the config API, and the request held on it goes on.
func TestCircuitBreaker(t *testing.T) {
	// The cool-down is long enough that the request held in the second part could only go on
	// before its probe because the operator closed the breaker (held requests look every 5 s).
	const cooldown = 12 * time.Second
	f := newFlow(t, map[string]string{
		"EXECUTION_STAGE": "skip", "CIRCUIT_BREAKER_FAILURES": "3", "CIRCUIT_BREAKER_COOLDOWN": cooldown.String(),
		"WEBHOOK_RETRY_BASE_DELAY": "50ms", "WEBHOOK_RETRY_MAX_DELAY": "100ms", "WEBHOOK_MAX_ATTEMPTS": "20",
	})
	down := f.downAt("/crm")
	f.policy("flaky", []hookSpec{{"crm", "one_way", "/crm"}}, []hookSpec{{"after", "one_way", "/after"}})

	var mu sync.Mutex
	var events []event.ConnectionHealthChanged
	var eventsAt []time.Time
	sub, err := f.nc.Subscribe(event.SubjectConnectionAll, func(m *nats.Msg) {
		var ev event.ConnectionHealthChanged
		if json.Unmarshal(m.Data, &ev) == nil {
			mu.Lock()
			events, eventsAt = append(events, ev), append(eventsAt, time.Now())
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	eventsSeen := func(n int) []event.ConnectionHealthChanged {
		return testkit.WaitFor(t, 20*time.Second, "connection events", func() ([]event.ConnectionHealthChanged, bool) {
			mu.Lock()
			defer mu.Unlock()
			return append([]event.ConnectionHealthChanged(nil), events...), len(events) >= n
		})
	}

	f.submit("pri_cb_1", "flaky", "a@example.com")
	ev := eventsSeen(1)[0]
	if ev.ConnectionKey != "flaky_crm" || ev.State != event.BreakerOpen || ev.Failures != 3 || ev.By != "executor" {
		t.Fatalf("opening event %+v", ev)
	}
	mu.Lock()
	opened := eventsAt[0]
	mu.Unlock()
	for _, id := range []string{"pri_cb_2", "pri_cb_3"} {
		f.submit(id, "flaky", "b@example.com")
	}
	for _, id := range []string{"pri_cb_1", "pri_cb_2", "pri_cb_3"} {
		w := f.waitingFor(id, "connection", 10*time.Second)
		if w.WebhookKey == nil || *w.WebhookKey != "crm" || w.Until == nil {
			t.Fatalf("%s waits for %+v, want the connection of webhook crm until its probe", id, w)
		}
	}
	var h struct {
		State     string  `json:"state"`
		Failures  int     `json:"failures"`
		ChangedBy *string `json:"changed_by"`
	}
	_ = json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/connection/flaky_crm/health", ""), &h)
	if h.State != "open" || h.Failures != 3 {
		t.Fatalf("config shows the breaker %+v, want open after 3 failures", h)
	}
	status, metrics := f.call(http.MethodGet, f.stack.ExecutorURL+"/metrics", "", "")
	for _, want := range []string{
		"\nexecutor_connection_breakers_open 1\n",
		"\nexecutor_connection_calls_total{connection=\"flaky_crm\",outcome=\"retry\"} 3\n",
	} {
		if status != 200 || !strings.Contains(string(metrics), want) {
			t.Fatalf("executor metrics (%d) lack %q", status, strings.TrimSpace(want))
		}
	}
	down.Store(false)

	for _, id := range []string{"pri_cb_1", "pri_cb_2", "pri_cb_3"} {
		f.waitStatus(id, "complete", 30*time.Second)
	}
	ev = eventsSeen(2)[1]
	if ev.State != event.BreakerClosed || ev.By != "executor" {
		t.Fatalf("closing event %+v", ev)
	}
	calls := f.callsTo("/crm")
	perRequest := map[string]int{}
	for _, c := range calls {
		perRequest[c.RequestID]++
		if c.At.After(opened.Add(time.Second)) && c.At.Before(opened.Add(cooldown-time.Second)) {
			t.Errorf("%s called the connection %s after it opened, inside its cool-down", c.RequestID, c.At.Sub(opened))
		}
	}
	if perRequest["pri_cb_1"] != 4 || perRequest["pri_cb_2"] != 1 || perRequest["pri_cb_3"] != 1 {
		t.Fatalf("calls per request %v: want the 3 failures and a success for pri_cb_1, one call each for the others", perRequest)
	}
	_ = json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/connection/flaky_crm/health", ""), &h)
	if h.State != "closed" || h.Failures != 0 || h.ChangedBy == nil || *h.ChangedBy != "executor" {
		t.Fatalf("after the probe: %+v, want closed by the executor", h)
	}

	// An operator closes a breaker by hand; the request held on it goes on within seconds, not at
	// its probe (a long cool-down would not let it until then).
	down.Store(true)
	f.submit("pri_cb_4", "flaky", "c@example.com")
	eventsSeen(3)
	mu.Lock()
	reopened := eventsAt[2]
	mu.Unlock()
	f.waitingFor("pri_cb_4", "connection", 10*time.Second)
	down.Store(false)
	f.mustAPI(http.MethodPost, "/api/v1/connection/flaky_crm/health/close", "")
	f.waitStatus("pri_cb_4", "complete", cooldown)
	if ev := eventsSeen(4)[3]; ev.State != event.BreakerClosed || ev.By != "operator" {
		t.Fatalf("closing by hand: %+v", ev)
	}
	last := f.rcv.CallsOf("pri_cb_4", "/crm")
	if n := len(last); n != 4 || !last[n-1].At.Before(reopened.Add(cooldown-time.Second)) {
		t.Fatalf("pri_cb_4 called %d times, last %s after the breaker opened; want 3 failures and a call before the probe was due",
			n, last[len(last)-1].At.Sub(reopened))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 4 {
		t.Fatalf("events %+v, want 4 (two openings, two closings)", events)
	}
}

// downAt makes the receiver answer 503 at path while the returned switch is on, as it is at first,
// and 200 once it is turned off: an endpoint that is down and comes back.
func (f *flow) downAt(path string) *atomic.Bool {
	var down atomic.Bool
	down.Store(true)
	f.rcv.On(path, func(int, testkit.Call) testkit.Answer {
		if down.Load() {
			return testkit.Answer{Status: http.StatusServiceUnavailable}
		}
		return testkit.Answer{}
	})
	return &down
}

type waitingView struct {
	Reason     string     `json:"reason"`
	WebhookKey *string    `json:"webhook_key"`
	Until      *time.Time `json:"until"`
}

// waitingFor waits until request id's waiting_for has reason and returns it.
func (f *flow) waitingFor(id, reason string, within time.Duration) waitingView {
	f.t.Helper()
	return testkit.WaitFor(f.t, within, "request "+id+" to wait for "+reason, func() (waitingView, bool) {
		status, b := f.api(http.MethodGet, f.stack.CallbackURL+"/api/v1/privacy-request/"+id, "")
		var v struct {
			WaitingFor *waitingView `json:"waiting_for"`
		}
		if status != 200 || json.Unmarshal(b, &v) != nil || v.WaitingFor == nil {
			return waitingView{}, false
		}
		return *v.WaitingFor, v.WaitingFor.Reason == reason
	})
}

// TestCircuitBreakerMaxWait is row WH1 end to end (SPEC §6.3): a request that waits on an open
// breaker for longer than CIRCUIT_BREAKER_MAX_WAIT goes to error, naming the webhook and the
// setting, with no call made while it waited; once the endpoint is back and the breaker closed
// by hand, a retry scoped by connection_key picks it up and it completes.
func TestCircuitBreakerMaxWait(t *testing.T) {
	const maxWait = 3 * time.Second
	f := newFlow(t, map[string]string{
		"EXECUTION_STAGE": "skip", "CIRCUIT_BREAKER_FAILURES": "2", "CIRCUIT_BREAKER_COOLDOWN": "1h",
		"CIRCUIT_BREAKER_MAX_WAIT": maxWait.String(),
		"WEBHOOK_RETRY_BASE_DELAY": "50ms", "WEBHOOK_RETRY_MAX_DELAY": "100ms", "WEBHOOK_MAX_ATTEMPTS": "20",
	})
	down := f.downAt("/crm")
	f.policy("stuck", []hookSpec{{"crm", "one_way", "/crm"}}, nil)

	f.submit("pri_cbw_1", "stuck", "a@example.com")
	f.waitingFor("pri_cbw_1", "connection", 10*time.Second)
	held := time.Now()
	// The request looks at the breaker at least every 5 s: it fails within MAX_WAIT and a look.
	v := f.waitStatus("pri_cbw_1", "error", maxWait+10*time.Second)
	if waited := time.Since(held); waited < maxWait-time.Second {
		t.Fatalf("in error %s after it was held, before CIRCUIT_BREAKER_MAX_WAIT (%s)", waited, maxWait)
	}
	var e struct {
		WebhookKey *string `json:"webhook_key"`
		Message    string  `json:"message"`
	}
	if err := json.Unmarshal(v.Error, &e); err != nil || e.WebhookKey == nil || *e.WebhookKey != "crm" ||
		!strings.Contains(e.Message, "unhealthy for longer than "+maxWait.String()) {
		t.Fatalf("error %s (%v), want webhook crm unhealthy for longer than %s", v.Error, err, maxWait)
	}
	if n := len(f.rcv.CallsOf("pri_cbw_1", "/crm")); n != 2 {
		t.Fatalf("pri_cbw_1 called /crm %d times, want the 2 failures that opened the breaker and none while held", n)
	}

	down.Store(false)
	f.mustAPI(http.MethodPost, "/api/v1/connection/stuck_crm/health/close", "")
	status, b := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/retry", `{"connection_key": "stuck_crm"}`)
	if got := strings.Join(strings.Fields(string(b)), ""); status != 200 || got != `{"queued":1,"more":false}` {
		t.Fatalf("retry by connection_key: %d %s, want 200 queuing 1", status, b)
	}
	f.waitStatus("pri_cbw_1", "complete", 20*time.Second)
	if n := len(f.rcv.CallsOf("pri_cbw_1", "/crm")); n != 3 {
		t.Fatalf("pri_cbw_1 called /crm %d times, want 3 (2 failures, the retried call)", n)
	}
}
