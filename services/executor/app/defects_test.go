package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// Regression tests of the executor defects of known-defects.md, one per defect, each written from
// the reproduction there: real NATS, real HTTPS receivers and the executor started with app.Start.

// dataLayer is a fake data layer: it records every execute it sees and, when it answers, publishes
// a successful executed naming the execute's execution id.
type dataLayer struct {
	mu       sync.Mutex
	executes []event.Execute
}

func (e *env) startDataLayer(answer bool) *dataLayer {
	e.t.Helper()
	dl := &dataLayer{}
	sub, err := e.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		var ex event.Execute
		if err := json.Unmarshal(m.Data, &ex); err != nil {
			return
		}
		dl.mu.Lock()
		dl.executes = append(dl.executes, ex)
		dl.mu.Unlock()
		if answer {
			b, _ := json.Marshal(event.Executed{ID: ex.ID, ExecutionID: ex.ExecutionID, Succeeded: true})
			_, _ = e.js.Publish(context.Background(), event.SubjectExecuted, b)
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return dl
}

// runs waits until the data layer saw n different execution runs of request id and returns one
// execute of each, in the order they came.
func (dl *dataLayer) runs(t *testing.T, id string, n int) []event.Execute {
	t.Helper()
	return testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d execution runs of %s", n, id), func() ([]event.Execute, bool) {
		dl.mu.Lock()
		defer dl.mu.Unlock()
		var out []event.Execute
		seen := map[string]bool{}
		for _, ex := range dl.executes {
			if ex.ID == id && !seen[ex.ExecutionID] {
				seen[ex.ExecutionID] = true
				out = append(out, ex)
			}
		}
		return out, len(out) >= n
	})
}

// statusEventsOf returns the status events of request id in the stream, in stream order.
func (e *env) statusEventsOf(id string) []event.StatusChanged {
	e.t.Helper()
	var out []event.StatusChanged
	for _, ev := range e.nats.StatusEvents(e.t, event.SubjectStatusPrefix+">") {
		if ev.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

// waitStatusEvent waits until the stream holds a status event of request id with status s.
func (e *env) waitStatusEvent(id string, s event.Status, within time.Duration) event.StatusChanged {
	e.t.Helper()
	return testkit.WaitFor(e.t, within, fmt.Sprintf("a %s event of %s in the stream", s, id), func() (event.StatusChanged, bool) {
		for _, ev := range e.nats.StatusEvents(e.t, event.StatusSubject(s)) {
			if ev.ID == id {
				return ev, true
			}
		}
		return event.StatusChanged{}, false
	})
}

// TestD1PostWebhooksAfterStop pins D1: with EXECUTION_STAGE=await, an executor that stopped after
// the request entered its post-webhooks (a crash or a restart during a post call) left it
// in_processing forever. A fake data layer answers execute; the request must complete.
func TestD1PostWebhooksAfterStop(t *testing.T) {
	t.Parallel()
	await := func(c *app.Config) { c.ExecutionStage = "await" }

	// An AfterCall hook abandons the message that made the post call once, after the receiver
	// answered and before the answer is written: the post webhook is called twice with the same
	// webhook-id, one attempt is recorded and the cut-off call is counted as interrupted.
	t.Run("crash after the post call", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.startDataLayer(true)
		var crashed atomic.Bool
		e.start(e.config(await, func(c *app.Config) {
			c.Hooks.AfterCall = func(_, key string) error {
				if key == "post" && crashed.CompareAndSwap(false, true) {
					return errors.New("crash after the post call")
				}
				return nil
			}
		}))
		e.putPlan("d1", []hook{{Key: "pre", URL: e.rc.URL("/d1/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/d1/post")}})
		e.submit("pri_d1", "d1", identity("d1@example.com", ""))
		r := e.waitStatus("pri_d1", 30*time.Second, event.StatusComplete, event.StatusError)
		if r.Status != event.StatusComplete {
			t.Fatalf("record %s, want complete", describe(r))
		}
		if !crashed.Load() {
			t.Fatal("the AfterCall hook never abandoned the post call's message")
		}
		calls := e.rc.CallsOf("pri_d1", "/d1/post")
		if len(calls) != 2 || calls[0].Header.Get("webhook-id") == "" ||
			calls[0].Header.Get("webhook-id") != calls[1].Header.Get("webhook-id") {
			t.Fatalf("post calls %v, want 2 with the same webhook-id", calls)
		}
		post := r.Webhooks[len(r.Plan.Pre)]
		if post.Key != "post" || len(post.Attempts) != 1 || post.Interrupted != 1 || post.Outcome != event.OutcomeSucceeded {
			t.Fatalf("post webhook record %+v, want succeeded with 1 attempt and 1 interrupted call", post)
		}
	})

	// The executor is stopped while the post webhook's receiver is answering (its grace period
	// too short for the call to finish) and another one is started: the request must complete,
	// the call being made again with the same webhook-id.
	t.Run("restart during the post call", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.startDataLayer(true)
		e.rc.On("/d1/post", seq(testkit.Answer{Sleep: 1500 * time.Millisecond}, ok("")))
		e.putPlan("d1", []hook{{Key: "pre", URL: e.rc.URL("/d1/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/d1/post")}})
		first := e.start(e.config(await, func(c *app.Config) { c.ShutdownGrace = 100 * time.Millisecond }))
		e.submit("pri_d1_restart", "d1", identity("d1@example.com", ""))
		testkit.Eventually(t, 20*time.Second, "the post webhook to be called", func() bool {
			return len(e.rc.CallsOf("pri_d1_restart", "/d1/post")) == 1
		})
		first.stop()
		e.start(e.config(await))
		r := e.waitStatus("pri_d1_restart", 30*time.Second, event.StatusComplete, event.StatusError)
		if r.Status != event.StatusComplete {
			t.Fatalf("record %s, want complete", describe(r))
		}
		calls := e.rc.CallsOf("pri_d1_restart", "/d1/post")
		if len(calls) != 2 || calls[0].Header.Get("webhook-id") != calls[1].Header.Get("webhook-id") {
			t.Fatalf("post calls %v, want the cut-off call made again with the same webhook-id", calls)
		}
	})
}

// TestD4OversizedIdentityRefused pins D4: an 800 KB identity was taken, its sealed form did not
// fit, and the submitted message was redelivered forever with no status. The test submits an
// 800 KB email and asserts that it is refused with a status.error event and no record within 8 s,
// that no webhook is called, and that the submitted consumer holds nothing and delivered it once.
func TestD4OversizedIdentityRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.putPlan("d4", []hook{{Key: "pre", URL: e.rc.URL("/d4/pre")}}, nil)
	start := time.Now()
	seq := e.submit("pri_d4", "d4", identity(strings.Repeat("a", 800<<10)+"@example.com", ""))
	ev := e.waitStatusEvent("pri_d4", event.StatusError, 8*time.Second)
	if !strings.Contains(ev.Error, "identity.email") || len(ev.Error) > event.MaxReason {
		t.Errorf("status.error event %+v, want a bounded reason naming identity.email", ev)
	}
	info := e.settled(app.ConsumerSubmitted, seq, max(8*time.Second-time.Since(start), 10*time.Millisecond))
	if info.Delivered.Consumer != 1 || info.NumRedelivered != 0 {
		t.Errorf("submitted consumer: %d deliveries, %d redelivered; want 1 and 0", info.Delivered.Consumer, info.NumRedelivered)
	}
	if r := e.record("pri_d4"); r != nil {
		t.Errorf("record %.300s written, want none", describe(r))
	}
	if n := len(e.rc.Calls()); n != 0 {
		t.Errorf("%d webhook calls, want 0", n)
	}
}

// TestD5LateExecutedOfEarlierRun pins D5: a late executed of execution run 1 (timed out, then
// retried) was taken as the answer of run 2. With a 2 s execution timeout the request goes to
// error; a retry starts run 2 (a new execute with another execution_id); executed of run 1 then
// leaves the request in_processing at execution, and only executed of run 2 completes it.
func TestD5LateExecutedOfEarlierRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dl := e.startDataLayer(false)
	e.start(e.config(func(c *app.Config) {
		c.ExecutionStage = "await"
		c.ExecutionTimeout = 2 * time.Second
	}))
	e.putPlan("d5", nil, []hook{{Key: "post", URL: e.rc.URL("/d5/post")}})
	e.submit("pri_d5", "d5", identity("d5@example.com", ""))
	r := e.waitStatus("pri_d5", 15*time.Second, event.StatusError)
	if r.Step != event.StepExecution || r.Error == nil || !strings.Contains(r.Error.Message, "execution did not finish") {
		t.Fatalf("record %s, want an execution timeout", describe(r))
	}
	run1 := dl.runs(t, "pri_d5", 1)[0]

	e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_d5", FromError: 1})
	run2 := dl.runs(t, "pri_d5", 2)[1]
	if run2.ExecutionID == "" || run2.ExecutionID == run1.ExecutionID {
		t.Fatalf("execution ids %q then %q, want two different ones", run1.ExecutionID, run2.ExecutionID)
	}
	late := e.publishJSON(event.SubjectExecuted, event.Executed{ID: "pri_d5", ExecutionID: run1.ExecutionID, Succeeded: true})
	e.settled(app.ConsumerControl, late, 5*time.Second)
	r = e.record("pri_d5")
	if r.Status != event.StatusInProcessing || r.Step != event.StepExecution || r.Executed != nil {
		t.Fatalf("after the late executed of run 1: record %s, want in_processing at execution", describe(r))
	}
	if n := len(e.rc.CallsOf("pri_d5", "/d5/post")); n != 0 {
		t.Fatalf("post webhook called %d times during run 2, want 0", n)
	}

	e.publishJSON(event.SubjectExecuted, event.Executed{ID: "pri_d5", ExecutionID: run2.ExecutionID, Succeeded: true})
	e.waitStatus("pri_d5", 10*time.Second, event.StatusComplete)
	if n := len(e.rc.CallsOf("pri_d5", "/d5/post")); n != 1 {
		t.Fatalf("post webhook called %d times, want 1", n)
	}
}

// TestD6SlowHostDoesNotHoldEverySlot pins D6: one webhook host that times out held every slot,
// and every other request waited behind it. With EXECUTOR_CONCURRENCY 4, a 2 s WEBHOOK_TIMEOUT
// and 3 attempts, 8 requests call a host that answers after 5 s; a request to another, fast host
// submitted meanwhile must complete within 2 s of its submission. It does not run in parallel
// with other tests: it asserts a latency.
func TestD6SlowHostDoesNotHoldEverySlot(t *testing.T) {
	e := newEnv(t)
	slow, fast := e.rc, e.addReceiver()
	slow.On("/d6/slow", func(int, testkit.Call) testkit.Answer { return testkit.Answer{Sleep: 5 * time.Second} })
	e.start(e.config(func(c *app.Config) {
		c.Concurrency = 4
		c.WebhookTimeout = 2 * time.Second
		c.WebhookMaxAttempts = 3
	}))
	e.putPlan("d6_slow", []hook{{Key: "slow", URL: slow.URL("/d6/slow")}}, nil)
	e.putPlan("d6_fast", []hook{{Key: "fast", URL: fast.URL("/d6/fast")}}, nil)
	for i := range 8 {
		e.submit(fmt.Sprintf("pri_d6_slow_%d", i), "d6_slow", identity("slow@example.com", ""))
	}
	testkit.Eventually(t, 10*time.Second, "3 calls to the slow host", func() bool { return len(slow.Calls()) >= 3 })
	submitted := time.Now()
	e.submit("pri_d6_fast", "d6_fast", identity("fast@example.com", ""))
	r := e.waitStatus("pri_d6_fast", 30*time.Second, event.StatusComplete)
	if took := r.FinishedProcessingAt.Sub(submitted); took > 2*time.Second {
		t.Fatalf("the request to the fast host completed %s after its submission, want within 2s", took.Round(time.Millisecond))
	}
}

// TestD8RefusedStatusPublishRetried pins D8: a status event whose publish failed at once was
// dropped and its message acked. A BeforePublish hook refuses the first publish of the request's
// complete event; the request must end complete with its outbox empty, and the stream must hold
// exactly one complete event of it (and every one of its events once).
func TestD8RefusedStatusPublishRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var refused atomic.Int32
	e.start(e.config(func(c *app.Config) {
		c.Hooks.BeforePublish = func(ev event.StatusChanged) error {
			if ev.ID == "pri_d8" && ev.Status == event.StatusComplete && refused.Add(1) == 1 {
				return errors.New("publish buffer full")
			}
			return nil
		}
	}))
	e.putPlan("d8", []hook{{Key: "pre", URL: e.rc.URL("/d8/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/d8/post")}})
	seq := e.submit("pri_d8", "d8", identity("d8@example.com", ""))
	r := e.waitStatus("pri_d8", 15*time.Second, event.StatusComplete)
	if refused.Load() == 0 {
		t.Fatal("the BeforePublish hook never saw the complete event")
	}
	e.settled(app.ConsumerSubmitted, seq, 10*time.Second)
	events := e.statusEventsOf("pri_d8")
	completes, seqs := 0, map[int]int{}
	for _, ev := range events {
		if ev.Status == event.StatusComplete {
			completes++
		}
		seqs[ev.Seq]++
	}
	if completes != 1 {
		t.Errorf("%d complete events of pri_d8 in the stream, want 1: %+v", completes, events)
	}
	for s := 1; s <= r.EventSeq; s++ {
		if seqs[s] != 1 {
			t.Errorf("event seq %d is %d times in the stream, want once: %+v", s, seqs[s], events)
		}
	}
	if r = e.record("pri_d8"); len(r.Outbox) != 0 {
		t.Errorf("outbox %+v, want empty", r.Outbox)
	}
}

// TestD11WaitingMessagesKeptAlive pins D11: messages pulled while every slot was busy waited
// without a sign of life, outlived the ack wait and were redelivered. With EXECUTOR_CONCURRENCY 2
// and a 1 s ack wait, two requests whose calls (to two hosts) take 4 s hold both slots while 2
// resume events arrive (for unknown requests: they are dropped); once everything is handled, the
// control consumer must have made exactly 2 deliveries.
func TestD11WaitingMessagesKeptAlive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := e.addReceiver()
	hold := func(int, testkit.Call) testkit.Answer { return testkit.Answer{Sleep: 4 * time.Second} }
	e.rc.On("/d11/a", hold)
	other.On("/d11/b", hold)
	e.start(e.config(func(c *app.Config) {
		c.Concurrency = 2
		c.AckWait = time.Second
		c.WebhookTimeout = 10 * time.Second
	}))
	e.putPlan("d11_a", []hook{{Key: "a", URL: e.rc.URL("/d11/a")}}, nil)
	e.putPlan("d11_b", []hook{{Key: "b", URL: other.URL("/d11/b")}}, nil)
	e.submit("pri_d11_a", "d11_a", identity("a@example.com", ""))
	e.submit("pri_d11_b", "d11_b", identity("b@example.com", ""))
	testkit.Eventually(t, 10*time.Second, "both slow calls under way", func() bool {
		return len(e.rc.Calls()) == 1 && len(other.Calls()) == 1
	})
	e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_d11_unknown_1", WebhookID: "wh", Pause: 1, TokenID: "d11t1"})
	last := e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_d11_unknown_2", WebhookID: "wh", Pause: 1, TokenID: "d11t2"})
	for _, id := range []string{"pri_d11_a", "pri_d11_b"} {
		e.waitStatus(id, 20*time.Second, event.StatusComplete)
	}
	info := e.settled(app.ConsumerControl, last, 10*time.Second)
	if info.Delivered.Consumer != 2 || info.NumRedelivered != 0 {
		t.Fatalf("control consumer: %d deliveries (%d redelivered) of 2 resume events, want 2 (0)", info.Delivered.Consumer, info.NumRedelivered)
	}
}

// TestD13NoAttemptWithoutCall pins D13: after a crash right after a write that claimed a call, the
// next worker recorded "no answer recorded" as an attempt of a call never made, and counted it
// towards WEBHOOK_MAX_ATTEMPTS. With WEBHOOK_MAX_ATTEMPTS 1, an AfterWrite hook abandons the
// message once, right after the write that creates the record (holding the first call's claim);
// the request must complete, the receiver must have seen that call once or twice, and no attempt
// may be recorded beyond the calls the receiver saw, nor as "no answer recorded".
func TestD13NoAttemptWithoutCall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var crashed atomic.Bool
	var claimed atomic.Bool
	e.start(e.config(func(c *app.Config) {
		c.WebhookMaxAttempts = 1
		c.Hooks.AfterWrite = func(id string) error {
			if id != "pri_d13" || !crashed.CompareAndSwap(false, true) {
				return nil
			}
			if r := e.record(id); r != nil && r.Claim != nil {
				claimed.Store(true)
			}
			return errors.New("crash after the creating write")
		}
	}))
	e.putPlan("d13", []hook{{Key: "pre", URL: e.rc.URL("/d13/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/d13/post")}})
	e.submit("pri_d13", "d13", identity("d13@example.com", ""))
	r := e.waitStatus("pri_d13", 30*time.Second, event.StatusComplete, event.StatusError)
	if !claimed.Load() {
		t.Fatalf("the record the crash left held no claim: the test did not crash where D13 happens")
	}
	if r.Status != event.StatusComplete {
		t.Fatalf("record %s, want complete", describe(r))
	}
	if n := len(e.rc.CallsOf("pri_d13", "/d13/pre")); n < 1 || n > 2 {
		t.Errorf("the claimed call reached the receiver %d times, want once or twice", n)
	}
	for _, w := range r.Webhooks {
		path := "/d13/" + w.Key
		if calls := len(e.rc.CallsOf("pri_d13", path)); len(w.Attempts) > calls {
			t.Errorf("%s: %d attempts recorded for %d calls the receiver saw", w.Key, len(w.Attempts), calls)
		}
		for _, a := range w.Attempts {
			if strings.Contains(a.Error, "no answer recorded") {
				t.Errorf("%s: attempt %+v records a call without an answer", w.Key, a)
			}
		}
	}
}

// TestD14DeletedConsumerRecreated pins D14: when the durable consumer executor-submitted was
// deleted, its loop ended silently, /ready stayed 200 and submissions were never consumed again,
// even after the consumer was re-created. After the deletion (re-created by the executor, or by
// the test as an operator would), a new submission must complete and /ready must answer 200.
func TestD14DeletedConsumerRecreated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		recreate bool
	}{
		{"re-created by the executor", false},
		{"re-created by an operator", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			x := e.start(e.config())
			e.putPlan("d14", []hook{{Key: "pre", URL: e.rc.URL("/d14/pre")}}, nil)
			e.submit("pri_d14_before", "d14", identity("a@example.com", ""))
			e.waitStatus("pri_d14_before", 10*time.Second, event.StatusComplete)

			ctx := context.Background()
			before := e.consumerInfo(app.ConsumerSubmitted)
			if err := e.js.DeleteConsumer(ctx, event.Stream, app.ConsumerSubmitted); err != nil {
				t.Fatal(err)
			}
			if tc.recreate {
				if _, err := e.js.CreateOrUpdateConsumer(ctx, event.Stream, before.Config); err != nil {
					t.Fatal(err)
				}
			}
			e.submit("pri_d14_after", "d14", identity("b@example.com", ""))
			e.waitStatus("pri_d14_after", 20*time.Second, event.StatusComplete)
			testkit.WaitFor(t, 10*time.Second, "GET /ready to answer 200", func() (int, bool) {
				resp, err := http.Get("http://" + x.addr + "/ready")
				if err != nil {
					return 0, false
				}
				_ = resp.Body.Close()
				return resp.StatusCode, resp.StatusCode == http.StatusOK
			})
			if n := len(e.rc.CallsOf("pri_d14_after", "/d14/pre")); n != 1 {
				t.Errorf("webhook called %d times for the submission after the deletion, want 1", n)
			}
		})
	}
}

// TestD15HugeAnswerValuesBounded pins D15: a two-way answer {"halt": "<400 KB>"} or a huge
// derived identity made the record exceed the payload limit, so the call repeated after each claim
// expiry and the error said "no answer recorded". Each must instead fail the request after one
// call, with an error naming the bad value, bounded by event.MaxReason on the record, its attempt
// and its status.error event.
func TestD15HugeAnswerValuesBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.rc.On("/d15/halt", seq(ok(`{"halt": "`+strings.Repeat("x", 400<<10)+`"}`)))
	e.rc.On("/d15/derived", seq(ok(`{"derived_identity": {"email": "`+strings.Repeat("d", 2000)+`"}}`)))
	for _, tc := range []struct {
		name, key, path, want string
	}{
		{"halt of 400 KB", "talker", "/d15/halt", "halt"},
		{"derived identity of 2,000 characters", "deriver", "/d15/derived", "derived identity.email"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy, id := "d15_"+tc.key, "pri_d15_"+tc.key
			e.putPlan(policy, []hook{{Key: tc.key, Direction: event.TwoWay, URL: e.rc.URL(tc.path)}}, nil)
			seq := e.submit(id, policy, identity("a@example.com", ""))
			ee := *e
			ee.t = t
			r := ee.waitStatus(id, 15*time.Second, event.StatusError, event.StatusComplete)
			if r.Status != event.StatusError || r.Error == nil || r.Error.WebhookKey != tc.key ||
				!strings.Contains(r.Error.Message, tc.want) || len(r.Error.Message) > event.MaxReason {
				t.Fatalf("record %.1000s, want error at %s naming %q, at most %d bytes", describe(r), tc.key, tc.want, event.MaxReason)
			}
			for _, a := range r.Webhooks[0].Attempts {
				if len(a.Error) > event.MaxReason {
					t.Errorf("attempt error of %d bytes, want at most %d", len(a.Error), event.MaxReason)
				}
			}
			ev := ee.waitStatusEvent(id, event.StatusError, 5*time.Second)
			if len(ev.Error) > event.MaxReason || !strings.Contains(ev.Error, tc.want) {
				t.Errorf("status.error event error %.600q, want at most %d bytes naming %q", ev.Error, event.MaxReason, tc.want)
			}
			ee.settled(app.ConsumerSubmitted, seq, 10*time.Second)
			if n := len(e.rc.CallsOf(id, tc.path)); n != 1 {
				t.Errorf("%d calls, want 1", n)
			}
		})
	}
}

// TestD19FirstStatusEventPreviousNull pins D19: the first status event of every request said
// previous "pending". It reads the raw JSON of the stream's status events of a request that
// completes and of one whose policy is unknown: the first has "previous": null, every later one
// the status of the event before it.
func TestD19FirstStatusEventPreviousNull(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.putPlan("d19", []hook{{Key: "pre", URL: e.rc.URL("/d19/pre")}}, nil)
	e.submit("pri_d19", "d19", identity("a@example.com", ""))
	e.submit("pri_d19_nopolicy", "d19_unknown", identity("a@example.com", ""))
	e.waitStatus("pri_d19", 10*time.Second, event.StatusComplete)
	e.waitStatus("pri_d19_nopolicy", 10*time.Second, event.StatusError)
	type raw struct {
		ID       string          `json:"id"`
		Seq      int             `json:"seq"`
		Status   string          `json:"status"`
		Previous json.RawMessage `json:"previous"`
	}
	byID := map[string][]raw{}
	for _, m := range e.nats.Msgs(t, event.SubjectStatusPrefix+">") {
		var ev raw
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("status event %s: %v", m.Data(), err)
		}
		byID[ev.ID] = append(byID[ev.ID], ev)
	}
	for _, id := range []string{"pri_d19", "pri_d19_nopolicy"} {
		evs := byID[id] // in stream order: a request's events are published in order
		if len(evs) < 2 {
			t.Fatalf("%s: %d status events, want at least 2", id, len(evs))
		}
		if string(evs[0].Previous) != "null" {
			t.Errorf("%s: first event (%s) has previous %s, want null", id, evs[0].Status, evs[0].Previous)
		}
		for i, ev := range evs {
			if ev.Seq != i+1 {
				t.Errorf("%s: event %d (%s) has seq %d, want %d", id, i+1, ev.Status, ev.Seq, i+1)
			}
			if i == 0 {
				continue
			}
			if want := `"` + evs[i-1].Status + `"`; string(ev.Previous) != want {
				t.Errorf("%s: event %d (%s) has previous %s, want %s", id, i+1, ev.Status, ev.Previous, want)
			}
		}
	}
}

// TestD25MalformedSubmissionLeavesIDFree pins D25: a malformed first submission created an error
// record that used up its id, so the corrected submission was ignored. A submission without
// policy_key is reported on status.error and writes no record; the corrected submission of the
// same id (another Nats-Msg-Id) must complete.
func TestD25MalformedSubmissionLeavesIDFree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.putPlan("d25", []hook{{Key: "pre", URL: e.rc.URL("/d25/pre")}}, nil)
	bad := e.publish(event.SubjectSubmitted, []byte(`{"id": "pri_d25", "identity": {"email": "a@example.com"}}`), "pri_d25")
	ev := e.waitStatusEvent("pri_d25", event.StatusError, 10*time.Second)
	if !strings.Contains(ev.Error, "policy_key") {
		t.Errorf("status.error event %+v, want it to name policy_key", ev)
	}
	e.settled(app.ConsumerSubmitted, bad, 10*time.Second)
	if r := e.record("pri_d25"); r != nil {
		t.Fatalf("record %s written for the malformed submission, want none", describe(r))
	}
	e.publish(event.SubjectSubmitted, []byte(`{"id": "pri_d25", "policy_key": "d25", "identity": {"email": "a@example.com"}}`), "pri_d25-corrected")
	e.waitStatus("pri_d25", 10*time.Second, event.StatusComplete)
	if n := len(e.rc.CallsOf("pri_d25", "/d25/pre")); n != 1 {
		t.Errorf("webhook called %d times, want 1", n)
	}
}

// TestD27LowerIdentityTTLKeepsStoredIdentities pins D27: IDENTITY_TTL was the bucket's MaxAge,
// rewritten at every start, so lowering it removed identities stored under the longer one. A
// request pauses under IDENTITY_TTL 1h; the executor restarts with IDENTITY_TTL 2s; 3 s later the
// identity is still in privacy_identities, the bucket's TTL was not lowered, and a resume
// completes the request with that identity.
func TestD27LowerIdentityTTLKeepsStoredIdentities(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.start(e.config(func(c *app.Config) { c.IdentityTTL = time.Hour }))
	plan := e.putPlan("d27", []hook{
		{Key: "halter", Direction: event.TwoWay, URL: e.rc.URL("/d27/halter")},
		{Key: "after", URL: e.rc.URL("/d27/after")},
	}, nil)
	e.rc.On("/d27/halter", seq(ok(`{"halt": true}`)))
	e.submit("pri_d27", "d27", identity("d27@example.com", ""))
	e.waitStatus("pri_d27", 10*time.Second, event.StatusPaused)
	ctx := context.Background()
	kv := e.nats.Bucket(t, event.BucketIdentities)
	before, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.stop()
	e.start(e.config(func(c *app.Config) { c.IdentityTTL = 2 * time.Second }))
	// Letting the new, shorter IDENTITY_TTL pass is the thing under test: no event marks it.
	time.Sleep(3 * time.Second)
	if _, err := kv.Get(ctx, event.KVKey("pri_d27")); err != nil {
		t.Fatalf("identity of the paused request after the shorter TTL passed: %v, want it still stored", err)
	}
	after, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.TTL() < before.TTL() {
		t.Errorf("bucket TTL lowered from %s to %s", before.TTL(), after.TTL())
	}
	e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_d27", WebhookID: plan.Pre[0].ID, Pause: 1, TokenID: "d27t1"})
	e.waitStatus("pri_d27", 10*time.Second, event.StatusComplete)
	calls := e.rc.CallsOf("pri_d27", "/d27/after")
	if len(calls) != 1 {
		t.Fatalf("%d calls after the resume, want 1", len(calls))
	}
	if ident, _ := bodyOf(t, calls[0])["identity"].(map[string]any); ident["email"] != "d27@example.com" {
		t.Errorf("identity after the resume %v, want the submitted email", ident)
	}
}
