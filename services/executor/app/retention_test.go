package app_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

// TestRequestRetention runs requests through a real executor with a short REQUEST_RETENTION: a
// complete record is stored with that TTL and is gone once it runs out, a paused one carries none
// and stays, and inputs that arrive for a request after its record is gone are dropped without
// calling anything again.
func TestRequestRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const retention = 3 * time.Second
	e.start(e.config(func(c *app.Config) { c.RequestRetention = retention }))
	e.putPlan("kept", []hook{{Key: "pre", URL: e.rc.URL("/ret/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/ret/post")}})
	e.putPlan("halts", []hook{{Key: "halter", Direction: event.TwoWay, URL: e.rc.URL("/ret/halter")}}, nil)
	e.rc.On("/ret/halter", seq(ok(`{"halt": true}`)))

	e.submit("pri_retained", "kept", identity("a@example.com", ""))
	e.submit("pri_paused_kept", "halts", identity("b@example.com", ""))
	e.waitStatus("pri_retained", 10*time.Second, event.StatusComplete)
	e.waitStatus("pri_paused_kept", 10*time.Second, event.StatusPaused)

	stream, err := e.js.Stream(t.Context(), "KV_"+event.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	ttlOf := func(id string) string {
		t.Helper()
		m, err := stream.GetLastMsgForSubject(t.Context(), natsconn.KeySubject(event.BucketRequests, event.KVKey(id)))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return m.Header.Get(jetstream.MsgTTLHeader)
	}
	if got := ttlOf("pri_retained"); got != retention.String() {
		t.Fatalf("complete record: TTL %q, want %s", got, retention)
	}
	if got := ttlOf("pri_paused_kept"); got != "" {
		t.Fatalf("paused record: TTL %q, want none", got)
	}

	deadline := time.Now().Add(retention + 10*time.Second)
	for e.record("pri_retained") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the complete record is still there %v after it completed", retention+10*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Late inputs for the removed request: a duplicate executed and a retry. They are dropped.
	e.publishJSON(event.SubjectExecuted, event.Executed{ID: "pri_retained", Succeeded: true})
	last := e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_retained", FromError: 0})
	e.settled(app.ConsumerControl, last, 10*time.Second)
	if r := e.record("pri_retained"); r != nil {
		t.Fatalf("a late input brought the record back: %s", describe(r))
	}
	for path, n := range map[string]int{"/ret/pre": 1, "/ret/post": 1} {
		if got := len(e.rc.CallsOf("pri_retained", path)); got != n {
			t.Errorf("%s called %d times, want %d", path, got, n)
		}
	}
	if r := e.record("pri_paused_kept"); r == nil || r.Status != event.StatusPaused {
		t.Fatalf("the paused request: %v, want it kept, paused", r)
	}
}
