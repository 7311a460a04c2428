package app_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestTimersFireAfterRestart: the pause expiry and the execution timeout fire although the
// executor that set them was stopped, and the pause expiry sets error exactly once with two
// executors running.
func TestTimersFireAfterRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	short := func(c *app.Config) {
		c.ExecutionStage = "await"
		c.ExecutionTimeout = 2 * time.Second
		c.PauseTimeout = 2 * time.Second
	}
	first := e.start(e.config(short))
	e.putPlan("halting", []hook{{Key: "halter", Direction: event.TwoWay, URL: e.rc.URL("/halter")}}, nil)
	e.rc.On("/halter", seq(ok(`{"halt": true}`)))
	e.putPlan("executing", nil, nil)
	e.submit("pri_pause_expiry", "halting", identity("a@b", ""))
	e.submit("pri_exec_timeout", "executing", identity("a@b", ""))
	p := e.waitStatus("pri_pause_expiry", 10*time.Second, event.StatusPaused)
	x := e.waitFor("pri_exec_timeout", 10*time.Second, "execution step", func(r *lifecycle.Record) bool {
		return r.Step == event.StepExecution && r.Status == event.StatusInProcessing
	})
	first.stop()
	// Letting both deadlines pass while no executor runs is the thing under test: the timers must
	// fire after the restart although nobody was there when they were due.
	due := p.PauseExpiresAt
	if x.ExecutionDeadline.After(*due) {
		due = x.ExecutionDeadline
	}
	time.Sleep(time.Until(*due) + 1500*time.Millisecond)
	if r := e.record("pri_pause_expiry"); r.Status != event.StatusPaused {
		t.Fatalf("status %s while no executor ran, want paused", r.Status)
	}
	e.start(e.config(short))
	e.start(e.config(short))
	r := e.waitStatus("pri_pause_expiry", 10*time.Second, event.StatusError)
	if r.Error == nil || !strings.Contains(r.Error.Message, "not resumed") || r.Error.WebhookKey != "halter" {
		t.Errorf("pause expiry record %s", describe(r))
	}
	r = e.waitStatus("pri_exec_timeout", 10*time.Second, event.StatusError)
	if r.Error == nil || !strings.Contains(r.Error.Message, "execution did not finish") || r.Error.Step != event.StepExecution {
		t.Errorf("execution timeout record %s", describe(r))
	}
	// Both timers handled to the end (by either executor): any second error event is in the stream.
	e.settled(app.ConsumerControl, 0, 10*time.Second)
	n := 0
	for _, ev := range e.nats.StatusEvents(t, event.StatusSubject(event.StatusError)) {
		if ev.ID == "pri_pause_expiry" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d error events for the expired pause, want exactly 1", n)
	}
}

// crasher is a test hook that stops the executor (cancels its context and abandons the message)
// at the at-th call of the chosen point, and abandons every message that reaches it after that.
type crasher struct {
	n     atomic.Int64
	at    int64
	stop  func()
	ready chan struct{}
}

func (c *crasher) hit() error {
	if c.n.Add(1) == c.at {
		<-c.ready
		go c.stop()
		return errors.New("crash")
	}
	if c.n.Load() > c.at {
		return errors.New("crashed")
	}
	return nil
}

func TestCrashSafety(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pre := []hook{{Key: "p0", URL: e.rc.URL("/c/p0")}, {Key: "p1", Direction: event.TwoWay, URL: e.rc.URL("/c/p1")}, {Key: "p2", URL: e.rc.URL("/c/p2")}}
	post := []hook{{Key: "q0", URL: e.rc.URL("/c/q0")}, {Key: "q1", Direction: event.TwoWay, URL: e.rc.URL("/c/q1")}}
	e.putPlan("crashy", pre, post)
	const requests = 12
	for i := range requests {
		e.submit(fmt.Sprintf("pri_crash_%02d", i), "crashy", identity(fmt.Sprintf("u%d@example.com", i), ""))
	}
	// Phase 1: crash after a webhook answered, before its answer is written.
	afterCall := &crasher{at: 15, ready: make(chan struct{})}
	x1 := e.start(e.config(func(c *app.Config) {
		c.Hooks.AfterCall = func(string, string) error { return afterCall.hit() }
	}))
	afterCall.stop = x1.stop
	close(afterCall.ready)
	stop1Wait(t, afterCall)
	// Phase 2: crash right after a state write, between steps.
	afterWrite := &crasher{at: 25, ready: make(chan struct{})}
	x2 := e.start(e.config(func(c *app.Config) {
		c.Hooks.AfterWrite = func(string) error { return afterWrite.hit() }
	}))
	afterWrite.stop = x2.stop
	close(afterWrite.ready)
	stop1Wait(t, afterWrite)
	// Phase 3: a healthy executor finishes everything.
	e.start(e.config())
	order := []string{"/c/p0", "/c/p1", "/c/p2", "/c/q0", "/c/q1"}
	repeated := 0
	for i := range requests {
		id := fmt.Sprintf("pri_crash_%02d", i)
		r := e.waitStatus(id, 30*time.Second, event.StatusComplete)
		var paths []string
		ids := map[string]string{}
		for _, c := range e.rc.CallsOf(id, "") {
			if len(paths) == 0 || paths[len(paths)-1] != c.Path {
				paths = append(paths, c.Path)
			}
			wid := c.Header.Get("webhook-id")
			if _, ok := ids[c.Path]; ok {
				repeated++
			}
			if prev, ok := ids[c.Path]; ok && prev != wid {
				t.Errorf("%s: repeated call of %s with webhook-id %q then %q, want the same", id, c.Path, prev, wid)
			}
			ids[c.Path] = wid
		}
		if strings.Join(paths, ",") != strings.Join(order, ",") {
			t.Errorf("%s: calls in order %v, want %v", id, paths, order)
		}
		for _, w := range r.Webhooks {
			if w.Outcome != event.OutcomeSucceeded || len(w.Attempts) == 0 {
				t.Errorf("%s: webhook %s outcome %s with %d attempts", id, w.Key, w.Outcome, len(w.Attempts))
			}
		}
	}
	// The crash after a call (and the calls cut short by the stop) must have been repeated.
	if repeated == 0 {
		t.Errorf("no call was repeated after the crash; the test did not crash where intended")
	}
	t.Logf("%d repeated calls", repeated)
}

// stop1Wait waits until the crash point was reached c.at times, then stops the executor.
func stop1Wait(t *testing.T, c *crasher) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, fmt.Sprintf("the crash point to be reached %d times", c.at), func() (int64, bool) {
		n := c.n.Load()
		return n, n >= c.at
	})
	c.stop()
}

func TestTwoExecutors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.start(e.config())
	e.putPlan("shared", []hook{{Key: "a", URL: e.rc.URL("/s/a")}, {Key: "b", Direction: event.TwoWay, URL: e.rc.URL("/s/b")}},
		[]hook{{Key: "c", URL: e.rc.URL("/s/c")}})
	const requests = 40
	var wg sync.WaitGroup
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.submit(fmt.Sprintf("pri_two_%02d", i), "shared", identity("", fmt.Sprint(i)))
		}()
	}
	wg.Wait()
	for i := range requests {
		id := fmt.Sprintf("pri_two_%02d", i)
		e.waitStatus(id, 20*time.Second, event.StatusComplete)
		for _, p := range []string{"/s/a", "/s/b", "/s/c"} {
			if n := len(e.rc.CallsOf(id, p)); n != 1 {
				t.Errorf("%s: %s called %d times, want 1", id, p, n)
			}
		}
	}
	completes := 0
	for _, ev := range e.nats.StatusEvents(t, event.StatusSubject(event.StatusComplete)) {
		if strings.HasPrefix(ev.ID, "pri_two_") {
			completes++
		}
	}
	if completes != requests {
		t.Errorf("%d complete events, want %d", completes, requests)
	}
}

// TestCrashBeforeIdentityStored abandons the submitted message right after the record is created
// in_processing, before the identity is stored: its redelivery stores the identity it carries and
// the request completes, calling its webhooks with that identity.
func TestCrashBeforeIdentityStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var once sync.Once
	e.start(e.config(func(c *app.Config) {
		c.Hooks.AfterWrite = func(string) error {
			crashed := false
			once.Do(func() { crashed = true })
			if crashed {
				return errors.New("crash after the creation")
			}
			return nil
		}
	}))
	e.putPlan("early_crash", []hook{{Key: "pre", URL: e.rc.URL("/early/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/early/post")}})
	e.submit("pri_early_crash", "early_crash", identity("early@example.com", ""))
	e.waitStatus("pri_early_crash", 20*time.Second, event.StatusComplete)
	for _, path := range []string{"/early/pre", "/early/post"} {
		calls := e.rc.CallsOf("pri_early_crash", path)
		if len(calls) == 0 {
			t.Fatalf("%s: no call, want at least one", path)
		}
		ident, _ := bodyOf(t, calls[0])["identity"].(map[string]any)
		if got := ident["email"]; got != "early@example.com" {
			t.Errorf("%s: identity email %v, want early@example.com", path, got)
		}
	}
}
