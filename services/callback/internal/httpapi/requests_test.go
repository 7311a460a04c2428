package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

func failedRequest(id string, errorCount int) event.Request {
	req := pausedRequest(id, 1)
	finished := t0.Add(time.Minute)
	req.Status, req.PausedWebhookID, req.PauseExpiresAt = event.StatusError, "", nil
	req.ErrorCount = errorCount
	req.FinishedProcessingAt = &finished
	req.Error = &event.RequestError{Step: event.StepPreWebhooks, WebhookKey: "verify", Message: "webhook answered 500 five times"}
	req.Webhooks[1].Outcome = event.OutcomeFailed
	return req
}

// TestOAuthRules checks the access-token rules of SPEC §1.1 on the retry and GET routes.
func TestOAuthRules(t *testing.T) {
	f := newFixture(t)
	f.putRequest(pausedRequest("pri_auth", 1))
	f.addClient("client-a")
	f.addClient("client-gone")
	if err := f.clients.Delete(context.Background(), "client-gone"); err != nil {
		t.Fatal(err)
	}
	expiredAccess, err := f.access.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }).
		Seal(&token.AccessClaims{ClientID: "client-a", Scopes: []string{scope.PrivacyRequestRead, scope.PrivacyRequestResume}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	replyTo, _ := f.replyToken("pri_auth", "wh-verify", 1)

	const get, retry = "/api/v1/privacy-request/pri_auth", "/api/v1/privacy-request/pri_auth/retry"
	tests := []struct {
		name, method, path, auth string
		status                   int
		detail                   string
	}{
		{"get without token", http.MethodGet, get, "", 401, "Failed to authenticate"},
		{"retry without token", http.MethodPost, retry, "", 401, "Failed to authenticate"},
		{"get with garbage", http.MethodGet, get, bearer("x.y.z"), 403, "Not Authorized for this action"},
		{"get with a reply-to-token", http.MethodGet, get, bearer(replyTo), 403, "Not Authorized for this action"},
		{"get with an expired token", http.MethodGet, get, bearer(expiredAccess), 403, "Not Authorized for this action"},
		{"get with the resume scope only", http.MethodGet, get, bearer(f.accessToken("client-a", scope.PrivacyRequestResume)), 403, "Not Authorized for this action"},
		{"retry with the read scope only", http.MethodPost, retry, bearer(f.accessToken("client-a", scope.PrivacyRequestRead)), 403, "Not Authorized for this action"},
		{"get by an unknown client", http.MethodGet, get, bearer(f.accessToken("client-x", scope.PrivacyRequestRead)), 403, "Not Authorized for this action"},
		{"get by a deleted client", http.MethodGet, get, bearer(f.accessToken("client-gone", scope.PrivacyRequestRead)), 403, "Not Authorized for this action"},
		{"retry by an unknown client", http.MethodPost, retry, bearer(f.accessToken("client-x", scope.PrivacyRequestResume)), 403, "Not Authorized for this action"},
		{"get by a known client", http.MethodGet, get, bearer(f.accessToken("client-a", scope.PrivacyRequestRead)), 200, ""},
		{"get by the root client", http.MethodGet, get, bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead)), 200, ""},
		{"retry by the root client", http.MethodPost, retry, bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume)), 400,
			"Cannot restart privacy request from failure: privacy request 'pri_auth' status = paused."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(tt.method, tt.path, tt.auth, "")
			if w.Code != tt.status {
				t.Fatalf("got %d %s, want %d", w.Code, w.Body, tt.status)
			}
			if tt.detail != "" {
				if got := summary(detail(t, w)); got != tt.detail {
					t.Errorf("detail = %q, want %q", got, tt.detail)
				}
			}
		})
	}
	if n := f.count(event.SubjectRetry); n != 0 {
		t.Errorf("retry events = %d, want 0", n)
	}
}

func TestRetry(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume))
	for _, req := range []event.Request{pausedRequest("pri_paused", 1), failedRequest("pri_failed", 2)} {
		f.putRequest(req)
	}
	done := pausedRequest("pri_done", 1)
	done.Status = event.StatusComplete
	f.putRequest(done)

	refusals := []struct {
		id     string
		status int
		detail string
	}{
		{"pri_nope", 404, "No privacy request found with id 'pri_nope'."},
		{"pri_paused", 400, "Cannot restart privacy request from failure: privacy request 'pri_paused' status = paused."},
		{"pri_done", 400, "Cannot restart privacy request from failure: privacy request 'pri_done' status = complete."},
	}
	for _, tt := range refusals {
		w := f.do(http.MethodPost, "/api/v1/privacy-request/"+tt.id+"/retry", auth, "")
		if got := summary(detail(t, w)); w.Code != tt.status || got != tt.detail {
			t.Errorf("%s: got %d %q, want %d %q", tt.id, w.Code, got, tt.status, tt.detail)
		}
	}
	if n := f.count(event.SubjectRetry); n != 0 {
		t.Fatalf("retry events after refusals = %d, want 0", n)
	}

	rev := f.revision("pri_failed")
	for range 2 {
		w := f.do(http.MethodPost, "/api/v1/privacy-request/pri_failed/retry", auth, "")
		if w.Code != http.StatusOK {
			t.Fatalf("got %d %s, want 200", w.Code, w.Body)
		}
		var view map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
			t.Fatal(err)
		}
		if view["status"] != "in_processing" || view["id"] != "pri_failed" {
			t.Errorf("view status=%v id=%v, want in_processing pri_failed", view["status"], view["id"])
		}
	}
	msgs := f.events(event.SubjectRetry)
	if len(msgs) != 1 {
		t.Fatalf("retry events after two calls = %d, want 1 (deduplicated)", len(msgs))
	}
	var got event.Retry
	if err := json.Unmarshal(msgs[0].Data(), &got); err != nil {
		t.Fatal(err)
	}
	if want := (event.Retry{RequestID: "pri_failed", FromError: 2}); got != want {
		t.Errorf("event = %+v, want %+v", got, want)
	}
	if h, want := msgs[0].Headers().Get(jetstream.MsgIDHeader), "retry-pri_failed-2"; h != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", h, want)
	}
	if got := f.revision("pri_failed"); got != rev {
		t.Errorf("request revision = %d, want %d (unchanged)", got, rev)
	}

	// A later failure of the same request is a new retry.
	f.putRequest(failedRequest("pri_failed", 3))
	if w := f.do(http.MethodPost, "/api/v1/privacy-request/pri_failed/retry", auth, ""); w.Code != http.StatusOK {
		t.Fatalf("retry of the third failure: got %d %s, want 200", w.Code, w.Body)
	}
	if n := f.count(event.SubjectRetry); n != 2 {
		t.Errorf("retry events = %d, want 2", n)
	}
}

func TestGetView(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	f.putRequest(pausedRequest("pri_p", 4))
	f.putRequest(failedRequest("pri_f", 1))
	f.putRequest(pausedRequest("pri:ext.7", 1))
	bare := event.Request{ID: "pri_new", PolicyKey: "my_policy", Status: event.StatusPending, Step: event.StepPreWebhooks, CreatedAt: t0}
	f.putRequest(bare)

	if w := f.do(http.MethodGet, "/api/v1/privacy-request/pri_unknown", auth, ""); w.Code != 404 ||
		summary(detail(t, w)) != "No privacy request found with id 'pri_unknown'." {
		t.Errorf("unknown: got %d %s, want 404 with detail", w.Code, w.Body)
	}

	wantKeys := []string{"created_at", "deny_reason", "error", "external_id", "finished_processing_at", "id", "paused_at", "policy_key",
		"resume_endpoint", "started_processing_at", "status", "step", "timeline", "waiting_for", "webhooks"}
	get := func(id string) (map[string]any, string) {
		t.Helper()
		w := f.do(http.MethodGet, "/api/v1/privacy-request/"+id, auth, "")
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: got %d %s, want 200", id, w.Code, w.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("GET %s keys = %v, want %v", id, keys, wantKeys)
		}
		for _, leak := range []string{"SEALEDSECRET", "secrets", "plan", "identity", "email", "phone_number", "connection_key"} {
			if strings.Contains(w.Body.String(), leak) {
				t.Errorf("GET %s carries %q: %s", id, leak, w.Body)
			}
		}
		return v, w.Body.String()
	}

	v, _ := get("pri_p")
	if v["status"] != "paused" || v["resume_endpoint"] != "/api/v1/privacy-request/pri_p/resume" || v["error"] != nil {
		t.Errorf("paused: status=%v resume_endpoint=%v error=%v, want paused, the endpoint, null", v["status"], v["resume_endpoint"], v["error"])
	}
	if v["external_id"] != "ext-pri_p" || v["paused_at"] == nil || v["step"] != "pre_webhooks" {
		t.Errorf("paused: external_id=%v paused_at=%v step=%v", v["external_id"], v["paused_at"], v["step"])
	}
	webhooks, _ := json.Marshal(v["webhooks"])
	wantWebhooks := `[{"attempts":[{"at":"2025-03-01T12:00:02Z","error":null,"latency_ms":12.5,"status":200,"webhook_id":"msg_1"}],` +
		`"callback_type":"pre","direction":"one_way","interrupted":0,"key":"wake_up","order":0,"outcome":"succeeded","reply":null},` +
		`{"attempts":[{"at":"2025-03-01T12:00:02Z","error":"connection reset","latency_ms":3,"status":null,"webhook_id":"msg_2"},` +
		`{"at":"2025-03-01T12:00:03Z","error":null,"latency_ms":8,"status":200,"webhook_id":"msg_2"}],` +
		`"callback_type":"pre","direction":"two_way","interrupted":1,"key":"verify","order":1,"outcome":"halted","reply":null}]`
	if string(webhooks) != wantWebhooks {
		t.Errorf("webhooks =\n%s\nwant\n%s", webhooks, wantWebhooks)
	}
	timeline, _ := json.Marshal(v["timeline"])
	wantTimeline := `[{"at":"2025-03-01T12:00:00Z","previous":null,"seq":1,"status":"pending","step":"pre_webhooks"},` +
		`{"at":"2025-03-01T12:00:01Z","previous":"pending","seq":2,"status":"in_processing","step":"pre_webhooks"},` +
		`{"at":"2025-03-01T12:00:03Z","previous":"in_processing","seq":3,"status":"paused","step":"pre_webhooks","webhook_key":"verify"}]`
	if string(timeline) != wantTimeline {
		t.Errorf("timeline =\n%s\nwant\n%s", timeline, wantTimeline)
	}

	if v, _ = get("pri:ext.7"); v["id"] != "pri:ext.7" || v["resume_endpoint"] != "/api/v1/privacy-request/pri:ext.7/resume" {
		t.Errorf("escaped id: id=%v resume_endpoint=%v", v["id"], v["resume_endpoint"])
	}

	v, _ = get("pri_f")
	errJSON, _ := json.Marshal(v["error"])
	if want := `{"message":"webhook answered 500 five times","step":"pre_webhooks","webhook_key":"verify"}`; string(errJSON) != want ||
		v["resume_endpoint"] != nil || v["status"] != "error" {
		t.Errorf("failed: error=%s resume_endpoint=%v status=%v, want %s null error", errJSON, v["resume_endpoint"], v["status"], want)
	}

	v, _ = get("pri_new")
	if w, _ := json.Marshal(v["webhooks"]); string(w) != "[]" || v["external_id"] != nil || v["started_processing_at"] != nil {
		t.Errorf("pending: webhooks=%s external_id=%v started=%v, want [] null null", w, v["external_id"], v["started_processing_at"])
	}
	if tl, _ := json.Marshal(v["timeline"]); string(tl) != "[]" {
		t.Errorf("a record without a timeline: timeline=%s, want []", tl)
	}
}

func TestRoutesAnswerJSON(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/health", 200},
		{http.MethodGet, "/ready", 200},
		{http.MethodGet, "/api/v1/openapi.json", 200},
		{http.MethodGet, "/api/v1/nowhere", 404},
		{http.MethodGet, "/api/v1/privacy-request/pri_1/resume", 405},
	}
	for _, tt := range tests {
		w := f.do(tt.method, tt.path, "", "")
		if w.Code != tt.status || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: got %d %q, want %d JSON", tt.method, tt.path, w.Code, w.Header().Get("Content-Type"), tt.status)
		}
		if w.Header().Get("X-Request-ID") == "" {
			t.Errorf("%s %s: no X-Request-ID", tt.method, tt.path)
		}
	}
}

// TestWaitingFor: the view says what a request waits for and until when — a paused request its
// halting webhook and the token's expiry, one at the execution step the data layer and the
// execution deadline, one in a backoff the webhook and its next attempt, one awaiting
// pre-approval the webhooks that have not replied and when the replies are due, one not eligible
// an operator's review — and null while it runs or once it is finished.
func TestWaitingFor(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	deadline, retryAt := t0.Add(24*time.Hour), t0.Add(90*time.Second)
	atExecution := awaitingRequest("pri_exec", 1)
	atExecution.Step, atExecution.Next, atExecution.ExecutionDeadline = event.StepExecution, 0, &deadline
	inBackoff := awaitingRequest("pri_backoff", 0)
	inBackoff.RetryAt = &retryAt
	postBackoff := awaitingRequest("pri_post_backoff", 0)
	postBackoff.Step, postBackoff.Next, postBackoff.RetryAt = event.StepPostWebhooks, 0, &retryAt
	postBackoff.Plan.Post = []event.PlanWebhook{{ID: "wh-logout", Key: "log_out", Direction: event.OneWay}}
	// Held on its connection's open circuit breaker, after a failed attempt (the hold wins).
	heldOnConnection := awaitingRequest("pri_held", 0)
	heldOnConnection.Step, heldOnConnection.Next, heldOnConnection.RetryAt = event.StepPostWebhooks, 0, &retryAt
	heldOnConnection.Plan.Post = []event.PlanWebhook{{ID: "wh-logout", Key: "log_out", Direction: event.OneWay, ConnectionKey: "crm"}}
	heldOnConnection.Held = &event.Hold{ConnectionKey: "crm", Since: retryAt, Until: time.Date(2025, 3, 1, 12, 2, 0, 0, time.UTC)}
	done := pausedRequest("pri_done", 1)
	done.Status = event.StatusComplete
	// No pre-approval webhook has replied yet, and the second has not been called.
	firstCalled := preApprovalRequest("pri_pa_first", 1)
	firstCalled.Webhooks = firstCalled.Webhooks[:len(firstCalled.Webhooks)-1]
	allReplied := preApprovalRequest("pri_pa_all", 1)
	allReplied.Webhooks[len(allReplied.Webhooks)-2].Reply = event.ReplyEligible
	// The stage with nobody to ask waits for an operator: no webhook, or every one skipped.
	noWebhooks := preApprovalRequest("pri_pa_none", 1)
	noWebhooks.Plan.PreApproval.Webhooks, noWebhooks.Webhooks = []event.PlanWebhook{}, noWebhooks.Webhooks[:len(noWebhooks.Webhooks)-2]
	allSkipped := preApprovalRequest("pri_pa_skipped", 1)
	oneSkipped := preApprovalRequest("pri_pa_one_skipped", 1)
	for i := len(allSkipped.Webhooks) - 2; i < len(allSkipped.Webhooks); i++ {
		allSkipped.Webhooks[i].Outcome, allSkipped.Webhooks[i].Reply = event.OutcomeSkipped, ""
	}
	oneSkipped.Webhooks[len(oneSkipped.Webhooks)-1].Outcome, oneSkipped.Webhooks[len(oneSkipped.Webhooks)-1].Reply = event.OutcomeSkipped, ""
	denied := notEligibleRequest("pri_denied", 1)
	denied.Status, denied.DenyReason = event.StatusDenied, "fraud"
	for _, tc := range []struct {
		req  event.Request
		want string
	}{
		{pausedRequest("pri_paused", 1), `{"reason":"resume","until":"2025-03-04T00:00:03Z","webhook_key":"verify","webhook_keys":null}`},
		{atExecution, `{"reason":"data_layer","until":"2025-03-02T12:00:00Z","webhook_key":null,"webhook_keys":null}`},
		{inBackoff, `{"reason":"retry","until":"2025-03-01T12:01:30Z","webhook_key":"verify","webhook_keys":null}`},
		{postBackoff, `{"reason":"retry","until":"2025-03-01T12:01:30Z","webhook_key":"log_out","webhook_keys":null}`},
		{heldOnConnection, `{"reason":"connection","until":"2025-03-01T12:02:00Z","webhook_key":"log_out","webhook_keys":null}`},
		{awaitingRequest("pri_running", 0), `null`},
		{failedRequest("pri_failed", 1), `null`},
		{done, `null`},
		{preApprovalRequest("pri_pa", 1), `{"reason":"pre_approval","until":"2025-03-04T00:00:00Z","webhook_key":null,"webhook_keys":["fraud_check"]}`},
		{firstCalled, `{"reason":"pre_approval","until":"2025-03-04T00:00:00Z","webhook_key":null,"webhook_keys":["fraud_check","legal_check"]}`},
		{allReplied, `{"reason":"pre_approval","until":"2025-03-04T00:00:00Z","webhook_key":null,"webhook_keys":[]}`},
		{notEligibleRequest("pri_not_eligible", 1), `{"reason":"review","until":null,"webhook_key":null,"webhook_keys":null}`},
		{noWebhooks, `{"reason":"review","until":null,"webhook_key":null,"webhook_keys":null}`},
		{allSkipped, `{"reason":"review","until":null,"webhook_key":null,"webhook_keys":null}`},
		{oneSkipped, `{"reason":"pre_approval","until":"2025-03-04T00:00:00Z","webhook_key":null,"webhook_keys":["fraud_check"]}`},
		{denied, `null`},
	} {
		t.Run(tc.req.ID, func(t *testing.T) {
			f.putRequest(tc.req)
			w := f.do(http.MethodGet, "/api/v1/privacy-request/"+tc.req.ID, auth, "")
			var v map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || w.Code != http.StatusOK {
				t.Fatalf("GET: %d %s", w.Code, w.Body)
			}
			if got, _ := json.Marshal(v["waiting_for"]); string(got) != tc.want {
				t.Errorf("waiting_for = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestPreApprovalView: the view of a request in or past its pre-approval stage shows the stage's
// step and webhooks (callback_type pre_approval, after the others, each with its reply) and, once
// denied, the operator's reason; deny_reason is null otherwise.
func TestPreApprovalView(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	denied := notEligibleRequest("pri_pv_denied", 1)
	denied.Status, denied.DenyReason = event.StatusDenied, "Fraud check failed"
	f.putRequest(denied)
	f.putStored(preApprovalRequest("pri_pv_inline", 2)) // its plan inline, as a format 0 record holds it

	get := func(id string) map[string]any {
		t.Helper()
		w := f.do(http.MethodGet, "/api/v1/privacy-request/"+id, auth, "")
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", id, w.Code, w.Body)
		}
		return v
	}
	v := get("pri_pv_denied")
	if v["status"] != "denied" || v["deny_reason"] != "Fraud check failed" || v["step"] != "pre_approval" || v["waiting_for"] != nil {
		t.Errorf("denied: status=%v deny_reason=%v step=%v waiting_for=%v, want denied, the reason, pre_approval, null",
			v["status"], v["deny_reason"], v["step"], v["waiting_for"])
	}
	var got []string
	for _, w := range v["webhooks"].([]any) {
		w := w.(map[string]any)
		got = append(got, fmt.Sprintf("%v/%v/%v", w["key"], w["callback_type"], w["reply"]))
	}
	want := []string{"wake_up/pre/<nil>", "verify/pre/<nil>", "fraud_check/pre_approval/not_eligible", "legal_check/pre_approval/eligible"}
	if !slices.Equal(got, want) {
		t.Errorf("webhooks (key/callback_type/reply) = %v, want %v", got, want)
	}

	v = get("pri_pv_inline")
	waiting, _ := json.Marshal(v["waiting_for"])
	if v["status"] != "awaiting_pre_approval" || v["deny_reason"] != nil ||
		string(waiting) != `{"reason":"pre_approval","until":"2025-03-04T00:00:00Z","webhook_key":null,"webhook_keys":["fraud_check"]}` {
		t.Errorf("awaiting, plan inline: status=%v deny_reason=%v waiting_for=%s", v["status"], v["deny_reason"], waiting)
	}
}
