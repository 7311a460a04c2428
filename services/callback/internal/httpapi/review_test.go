package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

func approvePath(id string) string { return "/api/v1/privacy-request/" + id + "/approve" }

func denyPath(id string) string { return "/api/v1/privacy-request/" + id + "/deny" }

// TestReviewAuth checks the access-token rules of SPEC §1.1 on approve and deny: the scope is
// privacy-request:review, and a reply-to-token of either kind is no access token.
func TestReviewAuth(t *testing.T) {
	f := newFixture(t)
	const id = "pri_rv_auth"
	f.putRequest(preApprovalRequest(id, 1))
	f.addClient("client-a")
	expired, err := f.access.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }).
		Seal(&token.AccessClaims{ClientID: "client-a", Scopes: []string{scope.PrivacyRequestReview}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	preApproval, _ := f.preApprovalToken(id, "wh-fraud", 1)
	resumeToken, _ := f.replyToken(id, "wh-fraud", 1)
	tests := []struct {
		name, auth string
		status     int
		detail     string
	}{
		{"no token", "", 401, "Failed to authenticate"},
		{"basic scheme", "Basic " + f.accessToken("client-a", scope.PrivacyRequestReview), 401, "Failed to authenticate"},
		{"garbage", bearer("x.y.z"), 403, "Not Authorized for this action"},
		{"a pre-approval reply-to-token", bearer(preApproval), 403, "Not Authorized for this action"},
		{"a resume reply-to-token", bearer(resumeToken), 403, "Not Authorized for this action"},
		{"expired", bearer(expired), 403, "Not Authorized for this action"},
		{"the resume scope", bearer(f.accessToken("client-a", scope.PrivacyRequestResume)), 403, "Not Authorized for this action"},
		{"the read scope", bearer(f.accessToken("client-a", scope.PrivacyRequestRead)), 403, "Not Authorized for this action"},
		{"an unknown client", bearer(f.accessToken("client-x", scope.PrivacyRequestReview)), 403, "Not Authorized for this action"},
	}
	for _, path := range []string{approvePath(id), denyPath(id)} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				w := f.do(http.MethodPost, path, tt.auth, `{}`)
				if got := summary(detail(t, w)); w.Code != tt.status || got != tt.detail {
					t.Fatalf("got %d %q, want %d %q", w.Code, got, tt.status, tt.detail)
				}
				if tt.status == 401 && w.Header().Get("WWW-Authenticate") != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", w.Header().Get("WWW-Authenticate"))
				}
			})
		}
	}
	if n := f.count(event.SubjectReview); n != 0 {
		t.Errorf("review events = %d, want 0", n)
	}
	// The scope suffices for a known client.
	if w := f.do(http.MethodPost, approvePath(id), bearer(f.accessToken("client-a", scope.PrivacyRequestReview)), ``); w.Code != http.StatusOK {
		t.Errorf("approve by a known client with the scope: got %d %s, want 200", w.Code, w.Body)
	}
}

// TestReviewRefusals: the body is checked first, then the request must exist and be awaiting
// pre-approval or not eligible for it. No refusal publishes anything.
func TestReviewRefusals(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestReview))
	complete := preApprovalRequest("pri_rv_complete", 1)
	complete.Status, complete.Step = event.StatusComplete, event.StepPostWebhooks
	denied := notEligibleRequest("pri_rv_denied", 1)
	denied.Status, denied.DenyReason = event.StatusDenied, "fraud"
	running := preApprovalRequest("pri_rv_running", 1)
	running.Status, running.Step = event.StatusInProcessing, event.StepPreWebhooks
	for _, req := range []event.Request{pausedRequest("pri_rv_paused", 1), complete, denied, running, preApprovalRequest("pri_rv_awaiting", 1)} {
		f.putRequest(req)
	}
	tooLong := strings.Repeat("é", event.MaxReason/2) + "x" // MaxReason+1 bytes

	tests := []struct {
		name, path, body string
		status           int
		detail           string
	}{
		{"approve unknown", approvePath("pri_rv_nope"), ``, 404, "No privacy request found with id 'pri_rv_nope'."},
		{"deny unknown", denyPath("pri_rv_nope"), `{"reason": "no"}`, 404, "No privacy request found with id 'pri_rv_nope'."},
		{"approve paused", approvePath("pri_rv_paused"), `{}`, 400, "Cannot review privacy request: privacy request 'pri_rv_paused' status = paused."},
		{"deny in processing", denyPath("pri_rv_running"), `{}`, 400, "Cannot review privacy request: privacy request 'pri_rv_running' status = in_processing."},
		{"approve complete", approvePath("pri_rv_complete"), ``, 400, "Cannot review privacy request: privacy request 'pri_rv_complete' status = complete."},
		{"deny denied", denyPath("pri_rv_denied"), `{"reason": "again"}`, 400, "Cannot review privacy request: privacy request 'pri_rv_denied' status = denied."},
		{"approve denied", approvePath("pri_rv_denied"), `{}`, 400, "Cannot review privacy request: privacy request 'pri_rv_denied' status = denied."},
		{"approve with a reason", approvePath("pri_rv_awaiting"), `{"reason": "ok"}`, 422, `["body","reason"] value_error.extra`},
		{"approve malformed", approvePath("pri_rv_awaiting"), `{"`, 422, `["body",2] value_error.jsondecode`},
		{"approve not an object", approvePath("pri_rv_awaiting"), `"approve"`, 422, `["body"] type_error.dict`},
		{"approve bad body, unknown request", approvePath("pri_rv_nope"), `[]`, 422, `["body"] type_error.dict`},
		{"deny reason not a string", denyPath("pri_rv_awaiting"), `{"reason": 5}`, 422, `["body","reason"] type_error.str`},
		{"deny reason over the bound", denyPath("pri_rv_awaiting"), `{"reason": "` + tooLong + `"}`, 422, `["body","reason"] value_error.any_str.max_length`},
		{"deny unknown field", denyPath("pri_rv_awaiting"), `{"Reason": "x", "reason": "y"}`, 422, `["body","Reason"] value_error.extra`},
		{"deny unknown field and bad reason", denyPath("pri_rv_awaiting"), `{"note": "x", "reason": []}`, 422,
			"[\"body\",\"note\"] value_error.extra\n[\"body\",\"reason\"] type_error.str"},
		{"deny repeated reason", denyPath("pri_rv_awaiting"), `{"reason": "x", "reason": "y"}`, 422, `["body","reason"] value_error.duplicate`},
		{"deny trailing data", denyPath("pri_rv_awaiting"), `{}]`, 422, `["body",3] value_error.jsondecode`},
		{"deny bad body, wrong status", denyPath("pri_rv_paused"), `{"reason": 1}`, 422, `["body","reason"] type_error.str`},
		{"deny over 1 MiB", denyPath("pri_rv_awaiting"), `{"reason": "` + strings.Repeat("a", 1<<20) + `"}`, 413, "Request body is larger than 1048576 bytes."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(http.MethodPost, tt.path, auth, tt.body)
			if got := summary(detail(t, w)); w.Code != tt.status || got != tt.detail {
				t.Fatalf("got %d %q, want %d %q", w.Code, got, tt.status, tt.detail)
			}
		})
	}
	if n := f.count(event.SubjectReview); n != 0 {
		t.Errorf("review events = %d, want 0", n)
	}
}

// TestReview: an approval or a denial publishes event.Review with Nats-Msg-Id
// review-<id>-<run>, once per run however often it is clicked, and answers the request as it is
// being approved or denied; a later run is reviewed anew.
func TestReview(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestReview))
	longest := strings.Repeat("é", event.MaxReason/2) // MaxReason bytes
	tests := []struct {
		name       string
		req        event.Request
		path, body string
		want       event.Review
		status     event.Status
		denyReason any
	}{
		{"approve awaiting, empty body", preApprovalRequest("pri_rv_1", 2), approvePath("pri_rv_1"), ``,
			event.Review{RequestID: "pri_rv_1", Approved: true}, event.StatusInProcessing, nil},
		{"approve not eligible", notEligibleRequest("pri_rv_2", 1), approvePath("pri_rv_2"), `{}`,
			event.Review{RequestID: "pri_rv_2", Approved: true}, event.StatusInProcessing, nil},
		{"deny not eligible with a reason", notEligibleRequest("pri_rv_3", 4), denyPath("pri_rv_3"), `{"reason": "Fraud check failed"}`,
			event.Review{RequestID: "pri_rv_3", Reason: "Fraud check failed"}, event.StatusDenied, "Fraud check failed"},
		{"deny awaiting without a reason", preApprovalRequest("pri_rv_4", 1), denyPath("pri_rv_4"), ``,
			event.Review{RequestID: "pri_rv_4"}, event.StatusDenied, nil},
		{"deny with a null reason", preApprovalRequest("pri_rv_5", 1), denyPath("pri_rv_5"), `{"reason": null}`,
			event.Review{RequestID: "pri_rv_5"}, event.StatusDenied, nil},
		{"deny with the longest reason", preApprovalRequest("pri:rv.6", 1), denyPath("pri:rv.6"), `{"reason": "` + longest + `"}`,
			event.Review{RequestID: "pri:rv.6", Reason: longest}, event.StatusDenied, longest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := f.putRequest(tt.req)
			before := len(f.events(event.SubjectReview))

			w := f.do(http.MethodPost, tt.path, auth, tt.body)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", w.Code, w.Body)
			}
			var view map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
				t.Fatal(err)
			}
			if view["id"] != tt.req.ID || view["status"] != string(tt.status) || view["deny_reason"] != tt.denyReason {
				t.Errorf("view id=%v status=%v deny_reason=%v, want %s %s %v", view["id"], view["status"], view["deny_reason"],
					tt.req.ID, tt.status, tt.denyReason)
			}
			msgs := f.events(event.SubjectReview)
			if len(msgs) != before+1 {
				t.Fatalf("review events = %d, want %d", len(msgs), before+1)
			}
			msg := msgs[len(msgs)-1]
			var got event.Review
			if err := json.Unmarshal(msg.Data(), &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("event = %+v, want %+v", got, tt.want)
			}
			if h, want := msg.Headers().Get(jetstream.MsgIDHeader), fmt.Sprintf("review-%s-%d", tt.req.ID, tt.req.Run); h != want {
				t.Errorf("Nats-Msg-Id = %q, want %q", h, want)
			}
			if got := f.revision(tt.req.ID); got != rev {
				t.Errorf("request revision = %d, want %d: the callback never writes the request", got, rev)
			}

			// A repeated click, with either decision, publishes nothing more and answers the
			// request as read.
			for _, path := range []string{approvePath(tt.req.ID), denyPath(tt.req.ID)} {
				w := f.do(http.MethodPost, path, auth, ``)
				if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil || w.Code != http.StatusOK || view["status"] != string(tt.req.Status) {
					t.Errorf("repeat at %s: got %d status %v, want 200 %s", path, w.Code, view["status"], tt.req.Status)
				}
			}
			if got := len(f.events(event.SubjectReview)); got != before+1 {
				t.Errorf("review events after the repeats = %d, want %d", got, before+1)
			}
		})
	}

	// The next run of the stage is another review.
	f.putRequest(notEligibleRequest("pri_rv_1", 3))
	if w := f.do(http.MethodPost, denyPath("pri_rv_1"), auth, ``); w.Code != http.StatusOK {
		t.Fatalf("deny of run 3: got %d %s, want 200", w.Code, w.Body)
	}
	var ids []string
	for _, m := range f.events(event.SubjectReview) {
		if h := m.Headers().Get(jetstream.MsgIDHeader); strings.HasPrefix(h, "review-pri_rv_1-") {
			ids = append(ids, h)
		}
	}
	if want := "[review-pri_rv_1-2 review-pri_rv_1-3]"; fmt.Sprint(ids) != want {
		t.Errorf("Nats-Msg-Ids of pri_rv_1 = %v, want %s", ids, want)
	}
}

// TestReviewUnavailable: when the review cannot be published (the stream is gone), the answer
// is 503 with Retry-After, and the same click works once the stream is back.
func TestReviewUnavailable(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestReview))
	const id = "pri_rv_nostream"
	f.putRequest(preApprovalRequest(id, 1))
	ctx := context.Background()
	if err := f.js.DeleteStream(ctx, event.Stream); err != nil {
		t.Fatal(err)
	}
	w := f.do(http.MethodPost, denyPath(id), auth, `{"reason": "r"}`)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d (Retry-After %q) %s, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if strings.Contains(w.Body.String(), "stream") {
		t.Errorf("answer leaks the cause: %s", w.Body)
	}
	var err error
	if f.stream, err = natsconn.EnsureStream(ctx, f.js); err != nil {
		t.Fatal(err)
	}
	if w := f.do(http.MethodPost, denyPath(id), auth, `{"reason": "r"}`); w.Code != http.StatusOK {
		t.Fatalf("after the stream is back: got %d %s, want 200", w.Code, w.Body)
	}
	if got := f.count(event.SubjectReview); got != 1 {
		t.Errorf("review events = %d, want 1", got)
	}
}
