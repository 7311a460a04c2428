package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

// TestPreApprovalRefusals runs every refusal of a pre-approval reply, at both reply URLs, in the
// contract's order where two apply, and checks that none of them publishes an event, writes a
// claim or touches the request.
func TestPreApprovalRefusals(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-61 * time.Hour)

	// Each setup seeds what it needs for request id and returns the call to make at path.
	type call struct{ auth, body string }
	tests := []struct {
		name   string
		setup  func(id string, path func(string) string) call
		status int
		detail string
	}{
		{"no authorization", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			return call{"", `{}`}
		}, 401, "Failed to authenticate"},
		{"basic scheme", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{"Basic " + raw, `{}`}
		}, 401, "Failed to authenticate"},
		{"bad body without token", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			return call{"", `{"eligible": true}`}
		}, 401, "Failed to authenticate"},
		{"garbage token", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			return call{bearer("not-a-token"), `{}`}
		}, 403, "Not Authorized for this action"},
		{"resume token of the request", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"resume token with the review scope", func(id string, _ func(string) string) call {
			// Opened as pre-approval claims it holds the scope, but not the run: a resume token
			// that somehow carried the review scope is still only good for run 0.
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := sealResume(t, f.resume, token.ResumeClaims{RequestID: id, WebhookID: "wh-fraud", Pause: 1,
				Scopes: []string{scope.PrivacyRequestReview}}, time.Hour)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'."},
		{"access token with the review scope", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			return call{bearer(f.accessToken(rootClientID, scope.PrivacyRequestReview)), `{}`}
		}, 403, "Not Authorized for this action"},
		{"pre-approval token with the resume scope", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := sealPreApproval(t, f.resume, token.PreApprovalClaims{RequestID: id, WebhookID: "wh-fraud", Run: 1,
				Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
			return call{bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"no request id", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := sealPreApproval(t, f.resume, token.PreApprovalClaims{WebhookID: "wh-fraud", Run: 1,
				Scopes: []string{scope.PrivacyRequestReview}}, time.Hour)
			return call{bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"expired", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := sealPreApproval(t, f.resume.WithClock(func() time.Time { return past }), token.PreApprovalClaims{
				RequestID: id, WebhookID: "wh-fraud", Run: 1, Scopes: []string{scope.PrivacyRequestReview}}, 60*time.Hour)
			return call{bearer(raw), `{}`}
		}, 403, "Webhook token expired"},
		{"expired and wrong scope", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := sealPreApproval(t, f.resume.WithClock(func() time.Time { return past }), token.PreApprovalClaims{
				RequestID: id, WebhookID: "wh-fraud", Run: 1}, 60*time.Hour)
			return call{bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"expired and unknown request", func(id string, _ func(string) string) call {
			raw, _ := sealPreApproval(t, f.resume.WithClock(func() time.Time { return past }), token.PreApprovalClaims{
				RequestID: id, WebhookID: "wh-fraud", Run: 1, Scopes: []string{scope.PrivacyRequestReview}}, 60*time.Hour)
			return call{bearer(raw), `{}`}
		}, 403, "Webhook token expired"},
		{"unknown request", func(id string, _ func(string) string) call {
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 404, "No privacy request found with id '%s'."},
		{"token of another request", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			f.putRequest(preApprovalRequest(id+"_a", 1))
			raw, _ := f.preApprovalToken(id+"_a", "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: the token was not issued for privacy request '%s'."},
		{"token already used", func(id string, path func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			if w := f.do(http.MethodPost, path(id), bearer(raw), `{}`); w.Code != 200 {
				t.Fatalf("first reply: %d %s, want 200", w.Code, w.Body)
			}
			return call{bearer(raw), `{}`}
		}, 409, "Invalid pre-approval reply: the token was already used for privacy request '%s'."},
		{"token already used, request moved on", func(id string, path func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			if w := f.do(http.MethodPost, path(id), bearer(raw), `{}`); w.Code != 200 {
				t.Fatalf("first reply: %d %s, want 200", w.Code, w.Body)
			}
			f.putRequest(notEligibleRequest(id, 1))
			return call{bearer(raw), `{"x": 1}`}
		}, 409, "Invalid pre-approval reply: the token was already used for privacy request '%s'."},
		{"another token of the same call already used", func(id string, path func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			first, _ := f.preApprovalToken(id, "wh-fraud", 1)
			if w := f.do(http.MethodPost, path(id), bearer(first), `{}`); w.Code != 200 {
				t.Fatalf("first reply: %d %s, want 200", w.Code, w.Body)
			}
			again, _ := f.preApprovalToken(id, "wh-fraud", 1) // the same jti, sealed anew
			return call{bearer(again), `{}`}
		}, 409, "Invalid pre-approval reply: the token was already used for privacy request '%s'."},
		{"in processing", func(id string, _ func(string) string) call {
			req := preApprovalRequest(id, 1)
			req.Status, req.Step = event.StatusInProcessing, event.StepPreWebhooks
			f.putRequest(req)
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: privacy request '%s' status = in_processing."},
		{"not eligible", func(id string, _ func(string) string) call {
			f.putRequest(notEligibleRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: privacy request '%s' status = pre_approval_not_eligible."},
		{"denied", func(id string, _ func(string) string) call {
			req := notEligibleRequest(id, 1)
			req.Status, req.DenyReason = event.StatusDenied, "fraud"
			f.putRequest(req)
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: privacy request '%s' status = denied."},
		{"not awaiting before earlier run", func(id string, _ func(string) string) call {
			f.putRequest(notEligibleRequest(id, 2))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: privacy request '%s' status = pre_approval_not_eligible."},
		{"earlier run", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 2))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'."},
		{"webhook that is not a pre-approval webhook", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-verify", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'."},
		{"plan without a pre-approval stage", func(id string, _ func(string) string) call {
			req := preApprovalRequest(id, 1)
			req.Plan.PreApproval, req.Format = nil, 0
			f.putStored(req)
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{}`}
		}, 400, "Invalid pre-approval reply: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'."},
		{"earlier run, bad body", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 2))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{"eligible": true}`}
		}, 400, "Invalid pre-approval reply: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'."},
		{"unknown field", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{"eligible": true, "reason": "x"}`}
		}, 422, "[\"body\",\"eligible\"] value_error.extra\n[\"body\",\"reason\"] value_error.extra"},
		{"malformed body", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{`}
		}, 422, `["body",1] value_error.jsondecode`},
		{"trailing data", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{} {}`}
		}, 422, `["body",4] value_error.jsondecode`},
		{"not an object", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `[]`}
		}, 422, `["body"] type_error.dict`},
		{"null", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `null`}
		}, 422, `["body"] type_error.dict`},
		{"repeated key", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{"a": 1, "a": 2}`}
		}, 422, `["body","a"] value_error.duplicate`},
		{"body over 1 MiB", func(id string, _ func(string) string) call {
			f.putRequest(preApprovalRequest(id, 1))
			raw, _ := f.preApprovalToken(id, "wh-fraud", 1)
			return call{bearer(raw), `{"x": "` + strings.Repeat("a", 1<<20) + `"}`}
		}, 413, "Request body is larger than 1048576 bytes."},
	}
	for _, p := range []struct {
		name string
		path func(string) string
	}{{"eligible", eligiblePath}, {"not-eligible", notEligiblePath}} {
		for i, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				id := fmt.Sprintf("pri_pa_%s_%d", p.name, i)
				c := tt.setup(id, p.path)
				revBefore, _ := f.requests.Get(context.Background(), event.KVKey(id))
				replies, resumes, claims := f.count(event.SubjectPreApproval), f.count(event.SubjectResume), f.claimCount()

				w := f.do(http.MethodPost, p.path(id), c.auth, c.body)

				want := tt.detail
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, id)
				}
				if got := summary(detail(t, w)); w.Code != tt.status || got != want {
					t.Fatalf("got %d %q, want %d %q", w.Code, got, tt.status, want)
				}
				if tt.status == 401 && w.Header().Get("WWW-Authenticate") != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", w.Header().Get("WWW-Authenticate"))
				}
				if got := f.count(event.SubjectPreApproval); got != replies {
					t.Errorf("pre-approval events = %d, want %d (none published)", got, replies)
				}
				if got := f.count(event.SubjectResume); got != resumes {
					t.Errorf("resume events = %d, want %d (none published)", got, resumes)
				}
				if got := f.claimCount(); got != claims {
					t.Errorf("claims = %d, want %d (none written)", got, claims)
				}
				if revBefore != nil {
					if got := f.revision(id); got != revBefore.Revision() {
						t.Errorf("request revision = %d, want %d (unchanged)", got, revBefore.Revision())
					}
				}
			})
		}
	}
}

// TestPreApprovalReplySucceedsOnce: a reply publishes event.PreApprovalReply with the token's jti
// as Nats-Msg-Id, then claims the jti until the token expires; the answer is the request with the
// webhook's reply. The same reply again, with the same token or another token of the same call, at
// either URL, is 409 and publishes nothing more.
func TestPreApprovalReplySucceedsOnce(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name     string
		id       string
		put      func(event.Request) uint64
		path     func(string) string
		other    func(string) string
		eligible bool
	}{
		{"eligible, plan by reference", "pri_pa_ok_1", f.putRequest, eligiblePath, notEligiblePath, true},
		{"not eligible, plan by reference", "pri_pa_ok_2", f.putRequest, notEligiblePath, eligiblePath, false},
		{"eligible, plan inline", "pri_pa_ok_3", f.putStored, eligiblePath, notEligiblePath, true},
		{"not eligible, escaped id", "pri:pa.ok.4", f.putRequest, notEligiblePath, eligiblePath, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := preApprovalRequest(tt.id, 3)
			rev := tt.put(req)
			before := len(f.events(event.SubjectPreApproval))
			raw, jti := f.preApprovalToken(tt.id, "wh-fraud", 3)

			w := f.do(http.MethodPost, tt.path(tt.id), bearer(raw), ``)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", w.Code, w.Body)
			}
			var view struct {
				ID         string `json:"id"`
				Status     string `json:"status"`
				WaitingFor struct {
					Reason      string   `json:"reason"`
					WebhookKeys []string `json:"webhook_keys"`
				} `json:"waiting_for"`
				Webhooks []struct {
					Key          string  `json:"key"`
					CallbackType string  `json:"callback_type"`
					Reply        *string `json:"reply"`
				} `json:"webhooks"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
				t.Fatal(err)
			}
			wantReply := "not_eligible"
			if tt.eligible {
				wantReply = "eligible"
			}
			var replies []string
			for _, wh := range view.Webhooks {
				if wh.CallbackType == "pre_approval" && wh.Reply != nil {
					replies = append(replies, wh.Key+"="+*wh.Reply)
				}
			}
			if want := []string{"fraud_check=" + wantReply, "legal_check=eligible"}; view.ID != tt.id || view.Status != "awaiting_pre_approval" ||
				!slices.Equal(replies, want) || view.WaitingFor.Reason != "pre_approval" || len(view.WaitingFor.WebhookKeys) != 0 {
				t.Errorf("view id=%s status=%s replies=%v waiting_for=%+v, want %s awaiting_pre_approval %v pre_approval with no key left",
					view.ID, view.Status, replies, view.WaitingFor, tt.id, want)
			}

			msgs := f.events(event.SubjectPreApproval)
			if len(msgs) != before+1 {
				t.Fatalf("pre-approval events = %d, want %d", len(msgs), before+1)
			}
			msg := msgs[len(msgs)-1]
			var got event.PreApprovalReply
			if err := json.Unmarshal(msg.Data(), &got); err != nil {
				t.Fatal(err)
			}
			if want := (event.PreApprovalReply{RequestID: tt.id, WebhookID: "wh-fraud", Run: 3, Eligible: tt.eligible, TokenID: jti}); got != want {
				t.Errorf("event = %+v, want %+v", got, want)
			}
			if h := msg.Headers().Get(jetstream.MsgIDHeader); h != jti {
				t.Errorf("Nats-Msg-Id = %q, want the jti %q", h, jti)
			}
			entry, err := f.claims.Get(context.Background(), jti)
			if err != nil {
				t.Fatalf("claim of %s: %v, want stored", jti, err)
			}
			var c map[string]any
			if err := json.Unmarshal(entry.Value(), &c); err != nil || c["request_id"] != tt.id || c["webhook_id"] != "wh-fraud" ||
				c["run"] != 3.0 || c["pause"] != nil {
				t.Errorf("claim = %s (%v), want request %s, webhook wh-fraud, run 3 and no pause", entry.Value(), err, tt.id)
			}
			if got := f.revision(tt.id); got != rev {
				t.Errorf("request revision = %d, want %d: the callback never writes the request", got, rev)
			}

			again, _ := f.preApprovalToken(tt.id, "wh-fraud", 3)
			for _, c := range []struct{ path, raw string }{{tt.path(tt.id), raw}, {tt.other(tt.id), raw}, {tt.other(tt.id), again}} {
				if w := f.do(http.MethodPost, c.path, bearer(c.raw), `{}`); w.Code != http.StatusConflict {
					t.Errorf("repeat at %s: got %d %s, want 409", c.path, w.Code, w.Body)
				}
			}
			if got := len(f.events(event.SubjectPreApproval)); got != before+1 {
				t.Errorf("pre-approval events after the repeats = %d, want %d", got, before+1)
			}

			// The other webhook of the stage replies with its own token.
			other, _ := f.preApprovalToken(tt.id, "wh-legal", 3)
			if w := f.do(http.MethodPost, eligiblePath(tt.id), bearer(other), `{}`); w.Code != http.StatusOK {
				t.Errorf("reply of wh-legal: got %d %s, want 200", w.Code, w.Body)
			}
		})
	}
}

func TestPreApprovalConcurrentSameToken(t *testing.T) {
	f := newFixture(t)
	const id = "pri_pa_race"
	f.putRequest(preApprovalRequest(id, 1))
	raw, _ := f.preApprovalToken(id, "wh-fraud", 1)

	const n = 6
	codes := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		path := eligiblePath
		if i%2 == 1 {
			path = notEligiblePath
		}
		wg.Go(func() {
			<-start
			codes[i] = f.do(http.MethodPost, path(id), bearer(raw), `{}`).Code
		})
	}
	close(start)
	wg.Wait()
	slices.Sort(codes)
	if want := []int{200, 409, 409, 409, 409, 409}; !slices.Equal(codes, want) {
		t.Errorf("codes = %v, want %v", codes, want)
	}
	if got := f.count(event.SubjectPreApproval); got != 1 {
		t.Errorf("pre-approval events = %d, want 1", got)
	}
}

// TestPreApprovalPublishFailure deletes the stream so that the publish fails: the answer is 503
// with Retry-After, no claim is written, and the same token works once the stream is back.
func TestPreApprovalPublishFailure(t *testing.T) {
	f := newFixture(t)
	const id = "pri_pa_nostream"
	f.putRequest(preApprovalRequest(id, 1))
	raw, jti := f.preApprovalToken(id, "wh-fraud", 1)
	ctx := context.Background()
	if err := f.js.DeleteStream(ctx, event.Stream); err != nil {
		t.Fatal(err)
	}

	w := f.do(http.MethodPost, notEligiblePath(id), bearer(raw), `{}`)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d (Retry-After %q) %s, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if _, err := f.claims.Get(ctx, jti); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("claim Get = %v, want ErrKeyNotFound: no claim without a published reply", err)
	}

	var err error
	if f.stream, err = natsconn.EnsureStream(ctx, f.js); err != nil {
		t.Fatal(err)
	}
	if w := f.do(http.MethodPost, notEligiblePath(id), bearer(raw), `{}`); w.Code != http.StatusOK {
		t.Fatalf("after the stream is back: got %d %s, want 200", w.Code, w.Body)
	}
	if got := f.count(event.SubjectPreApproval); got != 1 {
		t.Errorf("pre-approval events = %d, want 1", got)
	}
}

// TestResumeRefusesPreApprovalTokens: a pre-approval token opens under the same key as a resume
// token, but it is not one: /resume refuses it, whatever the request's state.
func TestResumeRefusesPreApprovalTokens(t *testing.T) {
	f := newFixture(t)
	for _, req := range []event.Request{pausedRequest("pri_pa_resume_1", 1), awaitingRequest("pri_pa_resume_2", 0)} {
		f.putRequest(req)
		for _, run := range []int{0, 1} {
			raw, _ := f.preApprovalToken(req.ID, "wh-verify", run)
			w := f.do(http.MethodPost, resumePath(req.ID), bearer(raw), `{}`)
			if got := summary(detail(t, w)); w.Code != http.StatusForbidden || got != "Not Authorized for this action" {
				t.Errorf("%s, run %d: got %d %q, want 403 Not Authorized for this action", req.ID, run, w.Code, got)
			}
		}
	}
	if got := f.count(event.SubjectResume) + f.count(event.SubjectPreApproval); got != 0 {
		t.Errorf("events published: %d, want none", got)
	}
	if got := f.claimCount(); got != 0 {
		t.Errorf("claims = %d, want none", got)
	}
}

func TestPreApprovalMetrics(t *testing.T) {
	f := newFixture(t)
	f.putRequest(preApprovalRequest("pri_pa_m", 1))
	raw, _ := f.preApprovalToken("pri_pa_m", "wh-fraud", 1)
	f.do(http.MethodPost, eligiblePath("pri_pa_m"), bearer(raw), `{}`)
	f.do(http.MethodPost, notEligiblePath("pri_pa_m"), bearer(raw), `{}`)
	body := f.do(http.MethodGet, "/metrics", "", "").Body.String()
	for _, want := range []string{
		`callback_pre_approval_reply_total{code="200",reply="eligible"} 1`,
		`callback_pre_approval_reply_total{code="409",reply="not_eligible"} 1`,
		`http_requests_total{method="POST",route="/api/v1/privacy-request/{id}/pre-approve/not-eligible",status="409"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
