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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

// summary renders a detail for comparison: a string as itself, a 422 list as "loc type" lines.
func summary(d any) string {
	list, ok := d.([]any)
	if !ok {
		return fmt.Sprint(d)
	}
	var lines []string
	for _, item := range list {
		m, _ := item.(map[string]any)
		loc, _ := json.Marshal(m["loc"])
		lines = append(lines, fmt.Sprintf("%s %v", loc, m["type"]))
	}
	return strings.Join(lines, "\n")
}

func resumePath(id string) string { return "/api/v1/privacy-request/" + id + "/resume" }

// TestResumeRefusals runs every refusal of SPEC §7, in the contract's order where two apply, and
// checks that none of them publishes an event, writes a claim or touches the request.
func TestResumeRefusals(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-61 * time.Hour)

	// Each setup seeds what it needs for request id and returns the call to make.
	type call struct{ path, auth, body string }
	tests := []struct {
		name   string
		setup  func(id string) call
		status int
		detail string
	}{
		{"no authorization", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			return call{resumePath(id), "", `{}`}
		}, 401, "Failed to authenticate"},
		{"basic scheme", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), "Basic " + raw, `{}`}
		}, 401, "Failed to authenticate"},
		{"empty bearer", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			return call{resumePath(id), "Bearer ", `{}`}
		}, 401, "Failed to authenticate"},
		{"bad body without token", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			return call{resumePath(id), "", `{"nope"`}
		}, 401, "Failed to authenticate"},
		{"garbage token", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			return call{resumePath(id), bearer("not-a-token"), `{}`}
		}, 403, "Not Authorized for this action"},
		{"tampered token", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			parts := strings.Split(raw, ".")
			c := []byte(parts[3])
			c[0] ^= 'A' ^ 'B'
			if c[0] == parts[3][0] {
				c[0] = 'A'
			}
			parts[3] = string(c)
			return call{resumePath(id), bearer(strings.Join(parts, ".")), `{}`}
		}, 403, "Not Authorized for this action"},
		{"over 4 KiB", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := sealResume(t, f.resume, token.ResumeClaims{RequestID: id, WebhookID: strings.Repeat("w", 4000), Pause: 1,
				Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"access token", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			return call{resumePath(id), bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume)), `{}`}
		}, 403, "Not Authorized for this action"},
		{"wrong scope", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := sealResume(t, f.resume, token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1,
				Scopes: []string{"privacy-request:read"}}, time.Hour)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"expired", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := sealResume(t, f.resume.WithClock(func() time.Time { return past }),
				token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1, Scopes: []string{scope.PrivacyRequestResume}}, 60*time.Hour)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 403, "Webhook token expired"},
		{"expired and wrong scope", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := sealResume(t, f.resume.WithClock(func() time.Time { return past }),
				token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1}, 60*time.Hour)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 403, "Not Authorized for this action"},
		{"expired and unknown request", func(id string) call {
			raw, _ := sealResume(t, f.resume.WithClock(func() time.Time { return past }),
				token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1, Scopes: []string{scope.PrivacyRequestResume}}, 60*time.Hour)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 403, "Webhook token expired"},
		{"unknown request", func(id string) call {
			raw, _ := f.replyToken("pri_missing", "wh-verify", 1)
			return call{resumePath("pri_missing"), bearer(raw), `{}`}
		}, 404, "No privacy request found with id 'pri_missing'."},
		{"unknown request, token of another", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath("pri_nobody"), bearer(raw), `{}`}
		}, 404, "No privacy request found with id 'pri_nobody'."},
		{"id that is not a request id", func(id string) call {
			raw, _ := f.replyToken("pri 1", "wh-verify", 1)
			return call{resumePath("pri%201"), bearer(raw), `{}`}
		}, 404, "No privacy request found with id 'pri 1'."},
		{"escaped id, earlier pause", func(id string) call {
			f.putRequest(pausedRequest(id+":a.b", 2))
			raw, _ := f.replyToken(id+":a.b", "wh-verify", 1)
			return call{resumePath(id + ":a.b"), bearer(raw), `{}`}
		}, 400, "Invalid resume request: the token belongs to an earlier pause of privacy request '%s:a.b'."},
		{"token of another request", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			f.putRequest(pausedRequest(id+"_a", 1))
			raw, _ := f.replyToken(id+"_a", "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: the token was not issued for privacy request '%s'."},
		{"token already used", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			if w := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`); w.Code != 200 {
				t.Fatalf("first resume: %d %s, want 200", w.Code, w.Body)
			}
			return call{resumePath(id), bearer(raw), `{}`}
		}, 409, "Invalid resume request: the token was already used for privacy request '%s'."},
		{"token already used, request moved on", func(id string) call {
			req := pausedRequest(id, 1)
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			if w := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`); w.Code != 200 {
				t.Fatalf("first resume: %d %s, want 200", w.Code, w.Body)
			}
			req.Status, req.PausedWebhookID = event.StatusInProcessing, ""
			f.putRequest(req)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"email": "x@example.com"}}`}
		}, 409, "Invalid resume request: the token was already used for privacy request '%s'."},
		{"in processing", func(id string) call {
			req := pausedRequest(id, 1)
			req.Status = event.StatusInProcessing
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, awaiting another webhook", func(id string) call {
			req := awaitingRequest(id, 0)
			req.Next = 0 // the one-way wh-wake is being called
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, token of another webhook", func(id string) call {
			f.putRequest(awaitingRequest(id, 0))
			raw, _ := f.replyToken(id, "wh-wake", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, token of the last pause", func(id string) call {
			f.putRequest(awaitingRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, token two pauses ahead", func(id string) call {
			f.putRequest(awaitingRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 3)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, post_webhooks step", func(id string) call {
			req := awaitingRequest(id, 0)
			req.Step = event.StepPostWebhooks
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"in processing, next past the pre-webhooks", func(id string) call {
			req := awaitingRequest(id, 0)
			req.Next = len(req.Plan.Pre)
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = in_processing."},
		{"pending, at the webhook", func(id string) call {
			req := awaitingRequest(id, 0)
			req.Status = event.StatusPending
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = pending."},
		{"complete", func(id string) call {
			req := pausedRequest(id, 1)
			req.Status = event.StatusComplete
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = complete."},
		{"not paused before earlier pause", func(id string) call {
			req := pausedRequest(id, 2)
			req.Status = event.StatusError
			f.putRequest(req)
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: privacy request '%s' status = error."},
		{"earlier pause", func(id string) call {
			f.putRequest(pausedRequest(id, 2))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: the token belongs to an earlier pause of privacy request '%s'."},
		{"other webhook", func(id string) call {
			f.putRequest(pausedRequest(id, 2))
			raw, _ := f.replyToken(id, "wh-wake", 2)
			return call{resumePath(id), bearer(raw), `{}`}
		}, 400, "Invalid resume request: the token belongs to an earlier pause of privacy request '%s'."},
		{"legacy path, earlier pause", func(id string) call {
			f.putRequest(pausedRequest(id, 2))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{"/privacy-request/" + id + "/resume", bearer(raw), `{}`}
		}, 400, "Invalid resume request: the token belongs to an earlier pause of privacy request '%s'."},
		{"malformed body", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": `}
		}, 422, `["body",21] value_error.jsondecode`},
		{"trailing data", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{} {}`}
		}, 422, `["body",4] value_error.jsondecode`},
		{"not an object", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `["x"]`}
		}, 422, `["body"] type_error.dict`},
		{"unknown field", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"identity": {"email": "a@example.com"}}`}
		}, 422, `["body","identity"] value_error.extra`},
		{"unknown identity field and wrong type", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"email": 5, "name": "x"}}`}
		}, 422, "[\"body\",\"derived_identity\",\"email\"] type_error.str\n[\"body\",\"derived_identity\",\"name\"] value_error.extra"},
		{"repeated key", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"email": "a@example.com", "email": "b@example.com"}}`}
		}, 422, `["body","derived_identity","email"] value_error.duplicate`},
		{"derived identity not an object", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": "a@example.com"}`}
		}, 422, `["body","derived_identity"] type_error.dict`},
		{"empty phone number", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"phone_number": ""}}`}
		}, 422, `["body","derived_identity","phone_number"] value_error.any_str.min_length`},
		{"identity value over the bound", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"email": "` + strings.Repeat("é", event.MaxIdentityValue+1) + `"}}`}
		}, 422, `["body","derived_identity","email"] value_error.any_str.max_length`},
		{"custom identity with bad fields", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"loyalty_id": {"label": "", "value": 5, "extra": "x"}}}`}
		}, 422, "[\"body\",\"derived_identity\",\"loyalty_id\",\"extra\"] value_error.extra\n[\"body\",\"derived_identity\",\"loyalty_id\",\"label\"] value_error.any_str.min_length\n[\"body\",\"derived_identity\",\"loyalty_id\",\"value\"] type_error.str"},
		{"custom identity without label or value", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"loyalty_id": {}}}`}
		}, 422, "[\"body\",\"derived_identity\",\"loyalty_id\",\"label\"] value_error.missing\n[\"body\",\"derived_identity\",\"loyalty_id\",\"value\"] value_error.missing"},
		{"custom identity null label", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"loyalty_id": {"label": null, "value": "v"}}}`}
		}, 422, `["body","derived_identity","loyalty_id","label"] type_error.none.not_allowed`},
		{"custom identity over the bounds", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"k": {"label": "` + strings.Repeat("l", event.MaxIdentityLabel+1) + `", "value": "` + strings.Repeat("é", event.MaxIdentityValue+1) + `"}}}`}
		}, 422, "[\"body\",\"derived_identity\",\"k\",\"label\"] value_error.any_str.max_length\n[\"body\",\"derived_identity\",\"k\",\"value\"] value_error.any_str.max_length"},
		{"custom identity key not a name", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"Loyalty ID": {"label": "L", "value": "v"}}}`}
		}, 422, `["body","derived_identity","Loyalty ID"] value_error.extra`},
		{"standard field given as a custom identity", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"external_id": {"label": "L", "value": "v"}}}`}
		}, 422, `["body","derived_identity","external_id"] type_error.str`},
		{"empty fides field", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"ljt_readerID": ""}}`}
		}, 422, `["body","derived_identity","ljt_readerID"] value_error.any_str.min_length`},
		{"repeated custom identity", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"k": {"label": "L", "value": "v"}, "k": {"label": "L", "value": "w"}}}`}
		}, 422, `["body","derived_identity","k"] value_error.duplicate`},
		{"repeated custom identity label", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"k": {"label": "L", "label": "M", "value": "v"}}}`}
		}, 422, `["body","derived_identity","k","label"] value_error.duplicate`},
		{"too many custom identities", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {` + manyCustom(event.MaxCustomIdentities+1) + `}}`}
		}, 422, `["body","derived_identity"] value_error.dict.max_items`},
		{"body over 1 MiB", func(id string) call {
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			return call{resumePath(id), bearer(raw), `{"derived_identity": {"email": "` + strings.Repeat("a", 1<<20) + `"}}`}
		}, 413, "Request body is larger than 1048576 bytes."},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("pri_refusal_%d", i)
			c := tt.setup(id)
			pathID := strings.Split(strings.TrimPrefix(strings.TrimPrefix(c.path, "/api/v1"), "/privacy-request/"), "/")[0]
			revBefore, _ := f.requests.Get(context.Background(), event.KVKey(pathID))
			events, claims := f.count(event.SubjectResume), f.claimCount()

			w := f.do(http.MethodPost, c.path, c.auth, c.body)

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
			if got := f.count(event.SubjectResume); got != events {
				t.Errorf("resume events = %d, want %d (none published)", got, events)
			}
			if got := f.claimCount(); got != claims {
				t.Errorf("claims = %d, want %d (none written)", got, claims)
			}
			if revBefore != nil {
				if got := f.revision(pathID); got != revBefore.Revision() {
					t.Errorf("request revision = %d, want %d (unchanged)", got, revBefore.Revision())
				}
			}
		})
	}
}

func TestResumeSucceedsOnce(t *testing.T) {
	f := newFixture(t)
	const id = "pri_029832ba-3b84-40f7-8946-82aec6f95448"
	rev := f.putRequest(pausedRequest(id, 2))
	raw, jti := f.replyToken(id, "wh-verify", 2)
	body := `{"derived_identity": {"email": "customer-1@example.com", "phone_number": null}}`

	w := f.do(http.MethodPost, resumePath(id), bearer(raw), body)
	if w.Code != http.StatusOK {
		t.Fatalf("got %d %s, want 200", w.Code, w.Body)
	}
	var view map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
		t.Fatal(err)
	}
	if view["status"] != "in_processing" || view["id"] != id || view["resume_endpoint"] != nil {
		t.Errorf("view status=%v id=%v resume_endpoint=%v, want in_processing %s null", view["status"], view["id"], view["resume_endpoint"], id)
	}
	if strings.Contains(w.Body.String(), "customer-1@example.com") {
		t.Errorf("answer carries the identity: %s", w.Body)
	}

	msgs := f.events(event.SubjectResume)
	if len(msgs) != 1 {
		t.Fatalf("resume events = %d, want 1", len(msgs))
	}
	var got event.Resume
	if err := json.Unmarshal(msgs[0].Data(), &got); err != nil {
		t.Fatal(err)
	}
	email := "customer-1@example.com"
	want := event.Resume{RequestID: id, WebhookID: "wh-verify", Pause: 2, TokenID: jti, DerivedIdentity: &event.Identity{Email: &email}}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("event = %s, want %s", gotJSON, wantJSON)
	}
	if h := msgs[0].Headers().Get(jetstream.MsgIDHeader); h != jti {
		t.Errorf("Nats-Msg-Id = %q, want the jti %q", h, jti)
	}
	if _, err := f.claims.Get(context.Background(), jti); err != nil {
		t.Errorf("claim of %s: %v, want present", jti, err)
	}
	if got := f.revision(id); got != rev {
		t.Errorf("request revision = %d, want %d: the callback never writes the request", got, rev)
	}

	w = f.do(http.MethodPost, resumePath(id), bearer(raw), body)
	if w.Code != http.StatusConflict {
		t.Fatalf("second resume: got %d %s, want 409", w.Code, w.Body)
	}
	if n := f.count(event.SubjectResume); n != 1 {
		t.Errorf("resume events after the second call = %d, want 1", n)
	}
}

// TestResumeBeforePauseRecorded is the regression test of D3: a receiver that resumes right after
// answering {"halt": true}, before the executor has recorded the pause, is accepted once, with
// one resume event for the pause its token names, and its claim.
func TestResumeBeforePauseRecorded(t *testing.T) {
	f := newFixture(t)
	email := "derived@example.com"
	tests := []struct {
		name    string
		pause   int // the request's last pause; the token names pause+1
		body    string
		derived *event.Identity
	}{
		{"first pause", 0, `{}`, nil},
		{"third pause, derived identity", 2, `{"derived_identity": {"email": "derived@example.com"}}`, &event.Identity{Email: &email}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("pri_early_%d", i)
			req := awaitingRequest(id, tt.pause)
			rev := f.putRequest(req)
			raw, jti := f.replyToken(id, "wh-verify", tt.pause+1)

			w := f.do(http.MethodPost, resumePath(id), bearer(raw), tt.body)
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", w.Code, w.Body)
			}
			var view map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
				t.Fatal(err)
			}
			if view["status"] != "in_processing" || view["id"] != id || view["step"] != "pre_webhooks" {
				t.Errorf("view status=%v id=%v step=%v, want in_processing %s pre_webhooks", view["status"], view["id"], view["step"], id)
			}

			var found []jetstream.Msg
			for _, m := range f.events(event.SubjectResume) {
				if m.Headers().Get(jetstream.MsgIDHeader) == jti {
					found = append(found, m)
				}
			}
			if len(found) != 1 {
				t.Fatalf("resume events with Nats-Msg-Id %s = %d, want 1", jti, len(found))
			}
			var got event.Resume
			if err := json.Unmarshal(found[0].Data(), &got); err != nil {
				t.Fatal(err)
			}
			want := event.Resume{RequestID: id, WebhookID: "wh-verify", Pause: tt.pause + 1, TokenID: jti, DerivedIdentity: tt.derived}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("event = %s, want %s", gotJSON, wantJSON)
			}
			entry, err := f.claims.Get(context.Background(), jti)
			if err != nil {
				t.Fatalf("claim of %s: %v, want stored", jti, err)
			}
			var c struct {
				RequestID string `json:"request_id"`
				WebhookID string `json:"webhook_id"`
				Pause     int    `json:"pause"`
			}
			if err := json.Unmarshal(entry.Value(), &c); err != nil || c.RequestID != id || c.WebhookID != "wh-verify" || c.Pause != tt.pause+1 {
				t.Errorf("claim = %s (%v), want request %s, webhook wh-verify, pause %d", entry.Value(), err, id, tt.pause+1)
			}
			if got := f.revision(id); got != rev {
				t.Errorf("request revision = %d, want %d: the callback never writes the request", got, rev)
			}

			// The same token again, before and after the executor records the pause: used.
			if w := f.do(http.MethodPost, resumePath(id), bearer(raw), tt.body); w.Code != http.StatusConflict {
				t.Errorf("second call before the pause is recorded: got %d %s, want 409", w.Code, w.Body)
			}
			req.Status, req.Pause, req.PausedWebhookID = event.StatusPaused, tt.pause+1, "wh-verify"
			f.putRequest(req)
			if w := f.do(http.MethodPost, resumePath(id), bearer(raw), tt.body); w.Code != http.StatusConflict {
				t.Errorf("call once the pause is recorded: got %d %s, want 409", w.Code, w.Body)
			}
			if n := len(f.resumesOf(jti)); n != 1 {
				t.Errorf("resume events after the repeats = %d, want 1", n)
			}
		})
	}
}

func TestResumeBodies(t *testing.T) {
	f := newFixture(t)
	phone := "555-5555"
	longest := strings.Repeat("é", event.MaxIdentityValue) // 2048 bytes: the bound counts characters
	tests := []struct {
		name string
		body string
		want *event.Identity
	}{
		{"empty body", ``, nil},
		{"empty object", `{}`, nil},
		{"null identity", `{"derived_identity": null}`, nil},
		{"empty identity", `{"derived_identity": {}}`, nil},
		{"phone only", `{"derived_identity": {"phone_number": "555-5555"}}`, &event.Identity{PhoneNumber: &phone}},
		{"longest value, in characters", `{"derived_identity": {"email": "` + longest + `"}}`, &event.Identity{Email: &longest}},
		{"fides fields", `{"derived_identity": {"ga_client_id": "g", "ljt_readerID": "r", "fides_user_device_id": "d", "external_id": "x", "email": null}}`,
			&event.Identity{GAClientID: strp("g"), LJTReaderID: strp("r"), FidesUserDeviceID: strp("d"), ExternalID: strp("x")}},
		{"custom identities", `{"derived_identity": {"loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}, "k": {"value": "` + longest + `", "label": "` + strings.Repeat("é", event.MaxIdentityLabel) + `"}}}`,
			&event.Identity{Custom: map[string]event.LabeledIdentity{"loyalty_id": {Label: "Loyalty ID", Value: "CH-1"}, "k": {Label: strings.Repeat("é", event.MaxIdentityLabel), Value: longest}}}},
		{"most custom identities", `{"derived_identity": {` + manyCustom(event.MaxCustomIdentities) + `}}`, &event.Identity{Custom: func() map[string]event.LabeledIdentity {
			m := map[string]event.LabeledIdentity{}
			for n := range event.MaxCustomIdentities {
				m[fmt.Sprintf("k%d", n)] = event.LabeledIdentity{Label: "L", Value: "v"}
			}
			return m
		}()}},
		{"only null custom identity", `{"derived_identity": {"loyalty_id": null, "email": null}}`, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("pri:body.%d", i) // stored under an escaped key
			f.putRequest(pausedRequest(id, 1))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			if w := f.do(http.MethodPost, "/privacy-request/"+id+"/resume", bearer(raw), tt.body); w.Code != 200 {
				t.Fatalf("got %d %s, want 200", w.Code, w.Body)
			}
			var found *event.Resume
			for _, m := range f.events(event.SubjectResume) {
				var r event.Resume
				if err := json.Unmarshal(m.Data(), &r); err != nil {
					t.Fatal(err)
				}
				if r.RequestID == id {
					found = &r
				}
			}
			if found == nil {
				t.Fatalf("no resume event for %s", id)
			}
			got, _ := json.Marshal(found.DerivedIdentity)
			want, _ := json.Marshal(tt.want)
			if string(got) != string(want) {
				t.Errorf("derived identity = %s, want %s", got, want)
			}
		})
	}
}

func TestResumeConcurrentSameToken(t *testing.T) {
	f := newFixture(t)
	const id = "pri_race"
	f.putRequest(pausedRequest(id, 1))
	raw, _ := f.replyToken(id, "wh-verify", 1)

	const n = 6
	codes := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			codes[i] = f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`).Code
		})
	}
	close(start)
	wg.Wait()
	slices.Sort(codes)
	want := []int{200, 409, 409, 409, 409, 409}
	if !slices.Equal(codes, want) {
		t.Errorf("codes = %v, want %v", codes, want)
	}
	if got := f.count(event.SubjectResume); got != 1 {
		t.Errorf("resume events = %d, want 1", got)
	}
}

// TestResumePublishFailure deletes the stream so that the publish fails: the answer is 503, no
// claim is written, and the same token works once the stream is back.
func TestResumePublishFailure(t *testing.T) {
	f := newFixture(t)
	const id = "pri_nostream"
	f.putRequest(pausedRequest(id, 1))
	raw, jti := f.replyToken(id, "wh-verify", 1)
	ctx := context.Background()
	if err := f.js.DeleteStream(ctx, event.Stream); err != nil {
		t.Fatal(err)
	}

	w := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d (Retry-After %q) %s, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if strings.Contains(w.Body.String(), "stream") {
		t.Errorf("answer leaks the cause: %s", w.Body)
	}
	if e, err := f.claims.Get(ctx, jti); err == nil {
		t.Fatalf("claim still present (op %v), want removed", e.Operation())
	}

	var err error
	if f.stream, err = natsconn.EnsureStream(ctx, f.js); err != nil {
		t.Fatal(err)
	}
	if w := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`); w.Code != http.StatusOK {
		t.Fatalf("after the stream is back: got %d %s, want 200", w.Code, w.Body)
	}
	if got := f.count(event.SubjectResume); got != 1 {
		t.Errorf("resume events = %d, want 1", got)
	}
}

// TestStoreUnavailable: when the privacy_requests bucket does not answer (its stream's leader is
// being elected; here the stream is gone), a resume, a retry and a read are answered 503 with
// Retry-After, never 4xx: a refusal is only ever decided on a record the store's leader gave, so a
// receiver is never told "not found" or "not paused" because of an unavailable store. Nothing is
// published or claimed, and the cause stays in the log.
func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	const id = "pri_nostore"
	f.putRequest(pausedRequest(id, 1))
	raw, jti := f.replyToken(id, "wh-verify", 1)
	ctx := context.Background()
	if err := f.js.DeleteStream(ctx, "KV_"+event.BucketRequests); err != nil {
		t.Fatal(err)
	}
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume, scope.PrivacyRequestRead))
	for _, c := range []struct{ method, path, auth, body string }{
		{http.MethodPost, resumePath(id), bearer(raw), `{}`},
		{http.MethodPost, "/api/v1/privacy-request/" + id + "/retry", auth, ``},
		{http.MethodGet, "/api/v1/privacy-request/" + id, auth, ``},
	} {
		w := f.do(c.method, c.path, c.auth, c.body)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s: got %d (Retry-After %q) %s, want 503 with Retry-After", c.method, c.path, w.Code,
				w.Header().Get("Retry-After"), w.Body)
		}
		if strings.Contains(w.Body.String(), "stream") || strings.Contains(w.Body.String(), "KV_") {
			t.Errorf("%s %s: the answer leaks the cause: %s", c.method, c.path, w.Body)
		}
	}
	if got := f.count(event.SubjectResume) + f.count(event.SubjectRetry); got != 0 {
		t.Errorf("events published: %d, want none", got)
	}
	if _, err := f.claims.Get(ctx, jti); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("claim Get = %v, want ErrKeyNotFound", err)
	}
}

// faultyPublisher publishes through js, except that its first call goes to fault instead.
type faultyPublisher struct {
	js    jetstream.JetStream
	fault func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	mu    sync.Mutex
	calls int
}

func (p *faultyPublisher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.mu.Lock()
	p.calls++
	first := p.calls == 1
	p.mu.Unlock()
	if first {
		return p.fault(ctx, msg, opts...)
	}
	return p.js.PublishMsg(ctx, msg, opts...)
}

// TestResumeNeverBurnsAToken is the regression test of D28: a resume whose publish fails, panics
// (the middleware answers 500) or loses its ack leaves no claim, so the receiver's retry with the
// same token resumes (one event on the stream) and only a third call is 409. No call is ever
// answered 409 while the stream holds no resume event for the token.
func TestResumeNeverBurnsAToken(t *testing.T) {
	type publishFunc = func(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	tests := []struct {
		name  string
		fault func(js jetstream.JetStream) publishFunc
		first int // the answer to the call whose publish is faulty
		// events is how many resume events the stream holds after that call.
		events int
	}{
		{"publish fails", func(jetstream.JetStream) publishFunc {
			return func(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
				return nil, errors.New("injected: nats: timeout")
			}
		}, http.StatusServiceUnavailable, 0},
		{"publisher panics", func(jetstream.JetStream) publishFunc {
			return func(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
				panic("injected fault")
			}
		}, http.StatusInternalServerError, 0},
		{"ack lost", func(js jetstream.JetStream) publishFunc {
			return func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
				if _, err := js.PublishMsg(ctx, msg, opts...); err != nil {
					return nil, err
				}
				return nil, errors.New("injected: ack lost")
			}
		}, http.StatusServiceUnavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, func(js jetstream.JetStream) resume.Publisher {
				return &faultyPublisher{js: js, fault: tt.fault(js)}
			})
			const id = "pri_d28"
			f.putRequest(pausedRequest(id, 1))
			raw, jti := f.replyToken(id, "wh-verify", 1)
			ctx := context.Background()
			call := func(n int) int {
				t.Helper()
				code := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`).Code
				if got := len(f.resumesOf(jti)); code == http.StatusConflict && got == 0 {
					t.Errorf("call %d: 409 without a resume event: the token was used up, nothing was published", n)
				}
				return code
			}

			if got := call(1); got != tt.first {
				t.Fatalf("call 1 (faulty publish): got %d, want %d", got, tt.first)
			}
			if got := len(f.resumesOf(jti)); got != tt.events {
				t.Errorf("after call 1: resume events = %d, want %d", got, tt.events)
			}
			if _, err := f.claims.Get(ctx, jti); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("after call 1: claim Get error = %v, want ErrKeyNotFound: no claim without a published resume", err)
			}

			if got := call(2); got != http.StatusOK {
				t.Fatalf("call 2 (the receiver's retry): got %d, want 200", got)
			}
			evs := f.resumesOf(jti)
			if len(evs) != 1 {
				t.Fatalf("after call 2: resume events = %d, want 1", len(evs))
			}
			if evs[0].RequestID != id || evs[0].WebhookID != "wh-verify" || evs[0].Pause != 1 {
				t.Errorf("event = %+v, want request %s, webhook wh-verify, pause 1", evs[0], id)
			}
			if _, err := f.claims.Get(ctx, jti); err != nil {
				t.Errorf("after call 2: claim Get = %v, want the claim", err)
			}

			if got := call(3); got != http.StatusConflict {
				t.Fatalf("call 3: got %d, want 409", got)
			}
			if got := len(f.resumesOf(jti)); got != 1 {
				t.Errorf("after call 3: resume events = %d, want 1", got)
			}
		})
	}
}

func TestResumeMetrics(t *testing.T) {
	f := newFixture(t)
	f.putRequest(pausedRequest("pri_m", 1))
	raw, _ := f.replyToken("pri_m", "wh-verify", 1)
	f.do(http.MethodPost, resumePath("pri_m"), bearer(raw), `{}`)
	f.do(http.MethodPost, resumePath("pri_m"), bearer(raw), `{}`)
	f.do(http.MethodPost, resumePath("pri_m"), "", `{}`)
	body := f.do(http.MethodGet, "/metrics", "", "").Body.String()
	for _, want := range []string{
		`callback_resume_total{code="200"} 1`,
		`callback_resume_total{code="409"} 1`,
		`callback_resume_total{code="401"} 1`,
		`http_requests_total{method="POST",route="/api/v1/privacy-request/{id}/resume",status="409"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestRetryMetrics: callback_retry_total tells a retry by id from the scoped retry, each by its
// answered status code.
func TestRetryMetrics(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume))
	f.putRequest(failedRequest("pri_r", 1))
	f.do(http.MethodPost, "/api/v1/privacy-request/pri_r/retry", auth, "")
	f.do(http.MethodPost, "/api/v1/privacy-request/pri_none/retry", auth, "")
	f.do(http.MethodPost, "/api/v1/privacy-request/retry", auth, `{"nope": 1}`)
	body := f.do(http.MethodGet, "/metrics", "", "").Body.String()
	for _, want := range []string{
		`callback_retry_total{code="200",scope="request"} 1`,
		`callback_retry_total{code="404",scope="request"} 1`,
		`callback_retry_total{code="422",scope="matching"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestPlanSnapshots: the early resume (D3) needs the request's plan, which a record names by
// reference in plan_snapshots. It is accepted for such a record and for one written before
// plan_snapshots (its plan inline); a record naming a snapshot the store does not give, or written
// in a newer format by a newer executor (a rolling upgrade), is 503, never a refusal.
func TestPlanSnapshots(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		put  func(event.Request) uint64
		want int
	}{
		{"by reference", f.putRequest, http.StatusOK},
		{"inline", f.putStored, http.StatusOK},
		{"newer format", func(req event.Request) uint64 {
			req.Format = event.RecordFormat + 1
			return f.putRequest(req)
		}, http.StatusServiceUnavailable},
		{"missing snapshot", func(req event.Request) uint64 {
			req.Plan, req.PlanRef = event.Plan{}, "0123456789abcdef0123456789abcdef"
			return f.putStored(req)
		}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "pri_snap_" + strings.ReplaceAll(tc.name, " ", "_")
			tc.put(awaitingRequest(id, 0))
			raw, _ := f.replyToken(id, "wh-verify", 1)
			w := f.do(http.MethodPost, resumePath(id), bearer(raw), `{}`)
			if w.Code != tc.want {
				t.Fatalf("resume: got %d %s, want %d", w.Code, w.Body, tc.want)
			}
			auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
			if w := f.do(http.MethodGet, "/api/v1/privacy-request/"+id, auth, ``); w.Code != tc.want {
				t.Fatalf("GET: got %d %s, want %d", w.Code, w.Body, tc.want)
			}
		})
	}
}

// manyCustom returns n custom identities as members of a JSON object.
func manyCustom(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"k%d": {"label": "L", "value": "v"}`, i)
	}
	return b.String()
}

func strp(s string) *string { return &s }
