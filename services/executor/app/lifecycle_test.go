package app_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

func TestResumeAndRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) { c.WebhookMaxAttempts = 2 }))

	t.Run("resume continues after the halting webhook with the derived identity", func(t *testing.T) {
		plan := e.putPlan("resumable", []hook{
			{Key: "first", URL: e.rc.URL("/r/first")},
			{Key: "halter", Direction: event.TwoWay, URL: e.rc.URL("/r/halter")},
			{Key: "after", URL: e.rc.URL("/r/after")},
		}, []hook{{Key: "post", URL: e.rc.URL("/r/post")}})
		e.rc.On("/r/halter", seq(ok(`{"halt": true}`)))
		e.submit("pri_resume", "resumable", identity("old@example.com", "111"))
		e.waitStatus("pri_resume", 10*time.Second, event.StatusPaused)
		halter := plan.Pre[1].ID
		// Stale or mismatched resumes are ignored.
		e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_resume", WebhookID: halter, Pause: 0, TokenID: "t0"})
		e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_resume", WebhookID: plan.Pre[0].ID, Pause: 1, TokenID: "t1"})
		last := e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_unknown", WebhookID: halter, Pause: 1, TokenID: "t2"})
		e.settled(app.ConsumerControl, last, 10*time.Second)
		if r := e.record("pri_resume"); r.Status != event.StatusPaused {
			t.Fatalf("after stale resumes: status %s, want paused", r.Status)
		}
		e.publishJSON(event.SubjectResume, event.Resume{RequestID: "pri_resume", WebhookID: halter, Pause: 1, TokenID: "t3",
			DerivedIdentity: &event.Identity{Email: strp("new@example.com")}})
		r := e.waitStatus("pri_resume", 10*time.Second, event.StatusComplete)
		for path, n := range map[string]int{"/r/first": 1, "/r/halter": 1, "/r/after": 1, "/r/post": 1} {
			if got := len(e.rc.CallsOf("pri_resume", path)); got != n {
				t.Errorf("%s called %d times, want %d", path, got, n)
			}
		}
		ident := bodyOf(t, e.rc.CallsOf("pri_resume", "/r/after")[0])["identity"].(map[string]any)
		if ident["email"] != "new@example.com" || ident["phone_number"] != "111" {
			t.Errorf("identity after resume %v, want new email and old phone", ident)
		}
		if r.Pause != 1 || r.PausedWebhookID != "" || r.PausedAt == nil {
			t.Errorf("record %s", describe(r))
		}
	})

	t.Run("retry from error re-runs the failed step and completes", func(t *testing.T) {
		e.putPlan("retryable", []hook{{Key: "a", URL: e.rc.URL("/t/a")}}, []hook{
			{Key: "b", URL: e.rc.URL("/t/b")}, {Key: "c", URL: e.rc.URL("/t/c")},
		})
		healthy := make(chan struct{})
		e.rc.On("/t/c", func(int, testkit.Call) testkit.Answer {
			select {
			case <-healthy:
				return ok("")
			default:
				return testkit.Answer{Status: 500}
			}
		})
		e.submit("pri_retry", "retryable", identity("x@example.com", ""))
		r := e.waitStatus("pri_retry", 10*time.Second, event.StatusError)
		if r.ErrorCount != 1 || r.Step != event.StepPostWebhooks || r.Error.WebhookKey != "c" {
			t.Fatalf("error record %s", describe(r))
		}
		close(healthy)
		stale := e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_retry", FromError: 0}) // ignored
		e.settled(app.ConsumerControl, stale, 10*time.Second)
		if r := e.record("pri_retry"); r.Status != event.StatusError {
			t.Fatalf("stale retry moved the request to %s", r.Status)
		}
		e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_retry", FromError: 1})
		r = e.waitStatus("pri_retry", 10*time.Second, event.StatusComplete)
		if n := len(e.rc.CallsOf("pri_retry", "/t/a")); n != 1 {
			t.Errorf("pre webhook called %d times, want 1 (only the failed step re-runs)", n)
		}
		b := e.rc.CallsOf("pri_retry", "/t/b")
		if len(b) != 2 || b[0].Header.Get("webhook-id") == b[1].Header.Get("webhook-id") {
			t.Errorf("post webhook b: %d calls, want 2 with different webhook-ids", len(b))
		}
		if r.Run != 2 || r.Error != nil {
			t.Errorf("record %s", describe(r))
		}
	})
}

func TestExecutionStageAwait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) { c.ExecutionStage = "await" }))
	e.putPlan("awaited", []hook{{Key: "pre", Direction: event.TwoWay, URL: e.rc.URL("/a/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/a/post")}})
	e.rc.On("/a/pre", seq(ok(`{"derived_identity": {"email": "derived@example.com"}}`)))
	executes := make(chan event.Execute, 10)
	sub, err := e.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		var ex event.Execute
		_ = json.Unmarshal(m.Data, &ex)
		executes <- ex
		res := event.Executed{ID: ex.ID, Succeeded: !strings.Contains(ex.ID, "fail")}
		if !res.Succeeded {
			res.Error = "disk on fire"
		}
		b, _ := json.Marshal(res)
		_, _ = e.js.Publish(context.Background(), event.SubjectExecuted, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	e.submit("pri_exec_ok", "awaited", identity("a@example.com", ""))
	e.submit("pri_exec_fail", "awaited", identity("a@example.com", ""))
	e.waitStatus("pri_exec_ok", 10*time.Second, event.StatusComplete)
	r := e.waitStatus("pri_exec_fail", 10*time.Second, event.StatusError)
	if r.Step != event.StepExecution || r.Error == nil || r.Error.Message != "disk on fire" {
		t.Errorf("failed execution record %s", describe(r))
	}
	if n := len(e.rc.CallsOf("pri_exec_fail", "/a/post")); n != 0 {
		t.Errorf("post webhook called %d times after a failed execution", n)
	}
	got := map[string]event.Execute{}
	for len(got) < 2 {
		select {
		case ex := <-executes:
			got[ex.ID] = ex
		case <-time.After(5 * time.Second):
			t.Fatalf("execute events %v, want 2", got)
		}
	}
	if ex := got["pri_exec_ok"]; ex.PolicyKey != "awaited" || ex.Identity.Email == nil || *ex.Identity.Email != "derived@example.com" {
		t.Errorf("execute %+v, want policy awaited and the derived email", ex)
	}
}

func TestBadSubmittedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	rejected := make(chan event.Rejected, 10)
	sub, _ := e.nc.Subscribe(event.SubjectRejected, func(m *nats.Msg) {
		var r event.Rejected
		_ = json.Unmarshal(m.Data, &r)
		rejected <- r
	})
	defer func() { _ = sub.Unsubscribe() }()
	errs := make(chan event.StatusChanged, 10)
	sub2, _ := e.nc.Subscribe(event.StatusSubject(event.StatusError), func(m *nats.Msg) {
		var s event.StatusChanged
		_ = json.Unmarshal(m.Data, &s)
		errs <- s
	})
	defer func() { _ = sub2.Unsubscribe() }()

	for _, tc := range []struct {
		name, payload, reason string
	}{
		{"not JSON", `{not json`, "not JSON"},
		{"no id", `{"policy_key": "p", "identity": {"email": "a@b"}}`, "id must be"},
		{"bad id", `{"id": "has space", "policy_key": "p", "identity": {"email": "a@b"}}`, "id must be"},
	} {
		e.publish(event.SubjectSubmitted, []byte(tc.payload), "")
		select {
		case r := <-rejected:
			if !strings.Contains(r.Reason, tc.reason) || r.Payload != tc.payload {
				t.Errorf("%s: rejected %+v, want reason containing %q and the raw payload", tc.name, r, tc.reason)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no rejected event", tc.name)
		}
	}
	// A valid id with other problems is reported on status.error and writes nothing, so a corrected
	// submission can still take the id (D25); an unknown policy is a request in error.
	for _, tc := range []struct {
		name, id, payload, message string
		record                     bool
	}{
		{"no policy key", "pri_nopolicy", `{"id": "pri_nopolicy", "identity": {"email": "a@b"}}`, "policy_key is required", false},
		{"no identity", "pri_noident", `{"id": "pri_noident", "policy_key": "p", "identity": {"email": null}}`, "identity needs", false},
		{"custom identity not an object", "pri_badcustom", `{"id": "pri_badcustom", "policy_key": "p", "identity": {"email": "a@b", "ssn": "123-45-6789"}}`, `identity has an unknown field "ssn"`, false},
		{"custom identity without label", "pri_nolabel", `{"id": "pri_nolabel", "policy_key": "p", "identity": {"loyalty_id": {"label": "", "value": "CH-1"}}}`, "identity.loyalty_id.label is required", false},
		{"unknown policy", "pri_unknownpolicy", `{"id": "pri_unknownpolicy", "policy_key": "nope", "identity": {"email": "a@b"}}`, "No Policy found for key nope.", true},
	} {
		e.publish(event.SubjectSubmitted, []byte(tc.payload), "")
		select {
		case s := <-errs:
			if s.ID != tc.id || !strings.Contains(s.Error, tc.message) || !tc.record && (s.Previous != nil || s.Seq != 0) {
				t.Errorf("%s: status event %+v, want id %s error containing %q", tc.name, s, tc.id, tc.message)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no status.error event", tc.name)
		}
		if !tc.record {
			if r := e.record(tc.id); r != nil {
				t.Errorf("%s: record %s written, want none (D25)", tc.name, describe(r))
			}
			continue
		}
		r := e.waitStatus(tc.id, 5*time.Second, event.StatusError)
		if r.Error == nil || !strings.Contains(r.Error.Message, tc.message) || r.ErrorCount != 1 {
			t.Errorf("%s: record %s, want error containing %q", tc.name, describe(r), tc.message)
		}
	}
	// D25: the corrected submission of an id whose first submission was malformed is taken.
	e.putPlan("p", []hook{{Key: "h", URL: e.rc.URL("/dup")}}, nil)
	e.publish(event.SubjectSubmitted, []byte(`{"id": "pri_nopolicy", "policy_key": "p", "identity": {"email": "a@b"}}`), "corrected")
	e.waitStatus("pri_nopolicy", 5*time.Second, event.StatusComplete)
	// Nothing is left to redeliver.
	testkit.WaitFor(t, 5*time.Second, "nothing pending, ack pending or redelivered on the submitted consumer", func() (consumerState, bool) {
		info := e.consumerInfo(app.ConsumerSubmitted)
		return stateOf(info), info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	})
	// A second submission of a known id is ignored.
	e.submit("pri_dup", "p", identity("a@b", ""))
	e.waitStatus("pri_dup", 5*time.Second, event.StatusComplete)
	e.submit("pri_dup", "p", identity("c@d", ""))
	last := e.publish(event.SubjectSubmitted, []byte(`{"id": "pri_dup", "policy_key": "p", "identity": {"email": "e@f"}}`), "other-msg-id")
	e.settled(app.ConsumerSubmitted, last, 10*time.Second)
	if n := len(e.rc.CallsOf("pri_dup", "/dup")); n != 1 {
		t.Errorf("duplicate submission: webhook called %d times, want 1", n)
	}
}

func TestSSRFAndRedirects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u, err := url.Parse(e.rc.URL("/"))
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	e.start(e.config(func(c *app.Config) { c.WebhookAllowPrivate = false }))
	for i, tc := range []struct{ url, want string }{
		{"https://127.0.0.1:" + port + "/x", "not public"},
		{"https://localhost:" + port + "/x", "not public"},
		{"https://10.1.2.3/x", "not public"},
		{"https://169.254.169.254/latest/meta-data", "cloud metadata endpoint"},
		{"https://[::1%25lo]:" + port + "/x", "zone"}, // D2
		{"https://[::1]:" + port + "/x", "not public"},
		{"https://[::ffff:127.0.0.1]:" + port + "/x", "not public"},
		{"http://example.com/x", "http is not allowed"},
	} {
		policy := "ssrf_" + string(rune('a'+i))
		e.putPlan(policy, []hook{{Key: "h", URL: tc.url}}, nil)
		id := "pri_" + policy
		e.submit(id, policy, identity("a@b", ""))
		r := e.waitStatus(id, 10*time.Second, event.StatusError)
		if r.Error == nil || !strings.Contains(r.Error.Message, tc.want) || len(r.Webhooks[0].Attempts) != 1 {
			t.Errorf("%s: record %s, want one refused attempt with %q", tc.url, describe(r), tc.want)
		}
	}
	if n := len(e.rc.Calls()); n != 0 {
		t.Errorf("receiver got %d calls, want 0", n)
	}
}

func TestRedirectsNotFollowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	redirect := func(int, testkit.Call) testkit.Answer {
		return testkit.Answer{Status: 307, Header: map[string]string{"Location": e.rc.URL("/target")}}
	}
	e.rc.On("/one", redirect)
	e.rc.On("/two", redirect)
	e.putPlan("redir", []hook{{Key: "one", URL: e.rc.URL("/one")}, {Key: "two", Direction: event.TwoWay, URL: e.rc.URL("/two")}}, nil)
	e.submit("pri_redir", "redir", identity("a@b", ""))
	r := e.waitStatus("pri_redir", 10*time.Second, event.StatusError)
	if r.Webhooks[0].Outcome != event.OutcomeIgnoredStatus || r.Webhooks[0].Attempts[0].Status != 307 || r.Error.WebhookKey != "two" {
		t.Errorf("record %s, want one_way ignored 307 and two_way error", describe(r))
	}
	if n := len(e.rc.CallsOf("pri_redir", "/target")); n != 0 {
		t.Errorf("redirect target called %d times, want 0", n)
	}
}
