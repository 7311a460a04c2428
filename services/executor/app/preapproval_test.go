package app_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
)

// approvalEnv is an executor with a policy whose plan has a pre-approval stage of webhooks q and
// r, one pre-execution webhook and one post-execution webhook, all on real HTTPS receivers.
func approvalEnv(t *testing.T, policy string) (*env, event.Plan) {
	e := newEnv(t)
	e.start(e.config())
	plan := e.putPlanApproval(policy,
		[]hook{{Key: "pre", URL: e.rc.URL("/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/post")}},
		[]hook{{Key: "q", URL: e.rc.URL("/q")}, {Key: "r", URL: e.rc.URL("/r")}})
	return e, plan
}

// reply publishes what callback publishes for a valid pre-approval reply of webhook w in run.
func (e *env) reply(id string, w event.PlanWebhook, run int, eligible bool) {
	e.t.Helper()
	e.publishJSON(event.SubjectPreApproval, event.PreApprovalReply{RequestID: id, WebhookID: w.ID, Run: run, Eligible: eligible,
		TokenID: event.WebhookID(id, event.PreApprovalCallback, w.ID, run)})
}

// actionsOf returns the audit actions of request id's status events, in stream order.
func (e *env) actionsOf(id string) []string {
	var out []string
	for _, ev := range e.statusEventsOf(id) {
		if ev.Action != "" {
			out = append(out, ev.Action)
		}
	}
	return out
}

// TestPreApprovalCalls: a request of a policy with a pre-approval stage calls every pre-approval
// webhook once, in order, with fides's reply-to headers and a token bound to the request, the
// webhook and the run, valid until the replies are due; it calls nothing else until every webhook
// replied eligible, and then runs like any request.
func TestPreApprovalCalls(t *testing.T) {
	t.Parallel()
	e, plan := approvalEnv(t, "approval")
	e.submit("pri_pa", "approval", identity("a@example.com", ""))
	r := e.waitFor("pri_pa", 10*time.Second, "both pre-approval webhooks called and the audit event", func(r *lifecycle.Record) bool {
		return r.Status == event.StatusAwaitingPreApproval && r.Triggered
	})
	if r.Step != event.StepPreApproval || r.ApprovalDue == nil || r.StartedProcessingAt != nil {
		t.Fatalf("awaiting record %s", describe(r))
	}
	resumeKey, _ := secret.DeriveKey(appKey, secret.PurposeResumeTokens)
	sealer, _ := token.NewSealer(resumeKey)
	for i, w := range plan.PreApproval.Webhooks {
		calls := e.rc.CallsOf("pri_pa", "/"+w.Key)
		if len(calls) != 1 {
			t.Fatalf("%s: %d calls, want 1", w.Key, len(calls))
		}
		c := calls[0]
		h := c.Header
		const base = "https://callback.example.com/api/v1/privacy-request/pri_pa/pre-approve/"
		for name, want := range map[string]string{"reply-to-eligible": base + "eligible", "reply-to-not-eligible": base + "not-eligible",
			"reply-to-approve": base + "eligible", "reply-to-deny": base + "not-eligible", "reply-to": ""} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: header %s %q, want %q", w.Key, name, got, want)
			}
		}
		var claims token.PreApprovalClaims
		if err := sealer.Open(h.Get("reply-to-token"), &claims); err != nil {
			t.Fatalf("%s: reply-to-token: %v", w.Key, err)
		}
		callID := event.WebhookID("pri_pa", event.PreApprovalCallback, w.ID, 1)
		if claims.RequestID != "pri_pa" || claims.WebhookID != w.ID || claims.Run != 1 || claims.ID != callID ||
			!slices.Equal(claims.Scopes, []string{scope.PrivacyRequestReview}) {
			t.Errorf("%s: claims %+v, want request pri_pa, webhook %s, run 1, jti %s, scope review", w.Key, claims, w.ID, callID)
		}
		if got := time.Unix(claims.Expiry, 0); got.Sub(*r.ApprovalDue).Abs() > time.Second {
			t.Errorf("%s: token expires at %s, want the approval due time %s", w.Key, got, r.ApprovalDue)
		}
		if h.Get("webhook-id") != callID {
			t.Errorf("%s: webhook-id %q, want %s", w.Key, h.Get("webhook-id"), callID)
		}
		verifySignature(t, c, testSigningSecret)
		body := bodyOf(t, c)
		if body["callback_type"] != "pre_approval" || body["direction"] != "two_way" ||
			body["privacy_request_status"] != "awaiting_pre_approval" || r.Webhooks[2+i].CallbackType != event.PreApprovalCallback {
			t.Errorf("%s: body %v", w.Key, body)
		}
	}
	if n := len(e.rc.CallsOf("pri_pa", "/pre")); n != 0 {
		t.Fatalf("the pre-execution webhook was called %d times before any reply", n)
	}
	e.reply("pri_pa", plan.PreApproval.Webhooks[1], 1, true)
	e.waitFor("pri_pa", 5*time.Second, "r's reply", func(r *lifecycle.Record) bool { return r.Webhooks[3].Reply != "" })
	e.reply("pri_pa", plan.PreApproval.Webhooks[1], 1, false) // a second reply of r (callback lets none through): ignored
	time.Sleep(200 * time.Millisecond)
	if got := e.record("pri_pa"); got.Status != event.StatusAwaitingPreApproval || got.Webhooks[3].Reply != event.ReplyEligible {
		t.Fatalf("after r's reply: %s, reply %q", describe(got), got.Webhooks[3].Reply)
	}
	e.reply("pri_pa", plan.PreApproval.Webhooks[0], 1, true)
	done := e.waitStatus("pri_pa", 10*time.Second, event.StatusComplete)
	if done.StartedProcessingAt == nil || len(e.rc.CallsOf("pri_pa", "/pre")) != 1 || len(e.rc.CallsOf("pri_pa", "/post")) != 1 {
		t.Errorf("completed record %s", describe(done))
	}
	want := []string{event.ActionPreApprovalTriggered, event.ActionPreApprovalEligible}
	if got := e.actionsOf("pri_pa"); !slices.Equal(got, want) {
		t.Errorf("audit actions %v, want %v", got, want)
	}
}

// TestPreApprovalNotEligibleThenReviewed: one not-eligible reply puts the request in review; an
// operator's denial ends it (denied, its reason kept, nothing else called), an approval runs it.
func TestPreApprovalNotEligibleThenReviewed(t *testing.T) {
	t.Parallel()
	e, plan := approvalEnv(t, "review")
	q, r := plan.PreApproval.Webhooks[0], plan.PreApproval.Webhooks[1]
	for _, tc := range []struct {
		id       string
		approved bool
		want     event.Status
		actions  []string
	}{
		{"pri_denied", false, event.StatusDenied, []string{event.ActionPreApprovalTriggered, event.ActionPreApprovalNotEligible, event.ActionDenied}},
		{"pri_approved", true, event.StatusComplete, []string{event.ActionPreApprovalTriggered, event.ActionPreApprovalNotEligible, event.ActionApproved}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			e.submit(tc.id, "review", identity("a@example.com", ""))
			e.waitFor(tc.id, 10*time.Second, "the calls", func(r *lifecycle.Record) bool { return r.Triggered })
			e.reply(tc.id, q, 1, true)
			e.reply(tc.id, r, 1, false)
			nr := e.waitStatus(tc.id, 10*time.Second, event.StatusPreApprovalNotEligible)
			ev := e.waitStatusEvent(tc.id, event.StatusPreApprovalNotEligible, 5*time.Second)
			if ev.WebhookKey != "r" || ev.Error != "pre-approval webhook r replied not eligible" || nr.ApprovalDue != nil {
				t.Errorf("not-eligible event %+v", ev)
			}
			e.publishJSON(event.SubjectReview, event.Review{RequestID: tc.id, Approved: tc.approved, Reason: "duplicate of pri_1"})
			e.waitStatus(tc.id, 10*time.Second, tc.want, event.StatusInProcessing)
			e.publishJSON(event.SubjectReview, event.Review{RequestID: tc.id, Approved: !tc.approved}) // too late: ignored
			got := e.waitStatus(tc.id, 10*time.Second, tc.want)
			if calls := len(e.rc.CallsOf(tc.id, "/pre")); tc.approved != (calls == 1) {
				t.Errorf("pre-execution webhook called %d times", calls)
			}
			if !tc.approved && (got.DenyReason != "duplicate of pri_1" || got.FinishedProcessingAt == nil) {
				t.Errorf("denied record %s, reason %q", describe(got), got.DenyReason)
			}
			time.Sleep(200 * time.Millisecond)
			if a := e.actionsOf(tc.id); !slices.Equal(a, tc.actions) {
				t.Errorf("audit actions %v, want %v", a, tc.actions)
			}
		})
	}
}

// TestPreApprovalCallRefused: a pre-approval webhook that refuses its call (404) cannot reply, so
// the request fails at the pre-approval step; a retry starts the stage again in a new run, with new
// webhook-ids and tokens, and the first run's replies no longer count.
func TestPreApprovalCallRefused(t *testing.T) {
	t.Parallel()
	e, plan := approvalEnv(t, "refused")
	e.rc.On("/r", seq(testkit.Answer{Status: http.StatusNotFound}, ok("")))
	e.submit("pri_refused", "refused", identity("a@example.com", ""))
	failed := e.waitStatus("pri_refused", 10*time.Second, event.StatusError)
	if failed.Error == nil || failed.Error.Step != event.StepPreApproval || failed.Error.WebhookKey != "r" {
		t.Fatalf("failed record %s", describe(failed))
	}
	e.publishJSON(event.SubjectRetry, event.Retry{RequestID: "pri_refused", FromError: failed.ErrorCount})
	e.waitFor("pri_refused", 10*time.Second, "the second run's calls", func(r *lifecycle.Record) bool { return r.Run == 2 && r.Triggered })
	e.reply("pri_refused", plan.PreApproval.Webhooks[0], 1, true) // the first run's: ignored
	e.reply("pri_refused", plan.PreApproval.Webhooks[1], 2, true)
	time.Sleep(200 * time.Millisecond)
	if got := e.record("pri_refused"); got.Status != event.StatusAwaitingPreApproval {
		t.Fatalf("a reply of the first run counted: %s", describe(got))
	}
	e.reply("pri_refused", plan.PreApproval.Webhooks[0], 2, true)
	e.waitStatus("pri_refused", 10*time.Second, event.StatusComplete)
	q := e.rc.CallsOf("pri_refused", "/q")
	if len(q) != 2 || q[0].Header.Get("webhook-id") == q[1].Header.Get("webhook-id") {
		t.Errorf("q called %d times; a retry's call must carry a new webhook-id", len(q))
	}
}

// TestPreApprovalRepliesDue: replies missing when the stage is due (PRIVACY_REQUEST_DELAY_TIMEOUT
// after it started; here 2 s) send the request to an operator's review, by the durable approval
// timer alone: its not-eligible event names the webhooks that did not reply, and nothing after the
// stage is called. A pre-approval webhook's answer body is not read: q answers with a body that is
// no JSON, and its call still counts as made.
func TestPreApprovalRepliesDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) { c.PauseTimeout = 2 * time.Second }))
	plan := e.putPlanApproval("due", []hook{{Key: "pre", URL: e.rc.URL("/pre")}}, nil,
		[]hook{{Key: "q", URL: e.rc.URL("/q")}, {Key: "r", URL: e.rc.URL("/r")}})
	e.rc.On("/q", func(int, testkit.Call) testkit.Answer { return ok("<html>not json</html>") })
	e.submit("pri_due", "due", identity("a@example.com", ""))
	r := e.waitFor("pri_due", 10*time.Second, "both calls", func(r *lifecycle.Record) bool { return r.Triggered })
	if r.Webhooks[1].Outcome != event.OutcomeSucceeded || r.ApprovalDue == nil {
		t.Fatalf("after the calls: %s", describe(r))
	}
	e.reply("pri_due", plan.PreApproval.Webhooks[0], 1, true) // q replies; r never does
	got := e.waitStatus("pri_due", 10*time.Second, event.StatusPreApprovalNotEligible)
	if got.ApprovalDue != nil || got.Webhooks[1].Reply != event.ReplyEligible {
		t.Errorf("not-eligible record %s", describe(got))
	}
	ev := e.waitStatusEvent("pri_due", event.StatusPreApprovalNotEligible, 5*time.Second)
	if want := lifecycle.MsgNotReplied + ": r"; ev.Error != want || ev.Action != event.ActionPreApprovalNotEligible {
		t.Errorf("not-eligible event %+v, want error %q", ev, want)
	}
	if n := len(e.rc.CallsOf("pri_due", "/pre")); n != 0 {
		t.Errorf("the pre-execution webhook was called %d times before any review", n)
	}
}

// TestPreApprovalWithoutWebhooks: a stage with no pre-approval webhook (PRE_APPROVAL on, none
// configured) calls nothing and waits for an operator, past its due time; an approval runs the
// request.
func TestPreApprovalWithoutWebhooks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) { c.PauseTimeout = time.Second }))
	e.putPlanApproval("nobody", []hook{{Key: "pre", URL: e.rc.URL("/pre")}}, nil, []hook{})
	e.submit("pri_nobody", "nobody", identity("a@example.com", ""))
	e.waitFor("pri_nobody", 10*time.Second, "the stage started", func(r *lifecycle.Record) bool { return r.ApprovalDue != nil })
	time.Sleep(2500 * time.Millisecond) // past the due time: the timer fires, and changes nothing
	if r := e.record("pri_nobody"); r.Status != event.StatusAwaitingPreApproval || len(e.rc.CallsOf("pri_nobody", "")) != 0 {
		t.Fatalf("with nobody to ask: %s, %d calls", describe(r), len(e.rc.CallsOf("pri_nobody", "")))
	}
	e.publishJSON(event.SubjectReview, event.Review{RequestID: "pri_nobody", Approved: true})
	e.waitStatus("pri_nobody", 10*time.Second, event.StatusComplete)
	if n := len(e.rc.CallsOf("pri_nobody", "/pre")); n != 1 {
		t.Errorf("pre-execution webhook called %d times after the approval, want 1", n)
	}
}
