package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

// FuzzResume sends arbitrary bearer tokens and bodies through the real resume handler. When
// validToken is set the token is a fresh, valid reply-to-token for a paused request and raw is
// ignored; the seeds also hold a used token. The answer must be a 4xx, or 200 only for a token
// that opens for the pause with a valid body; a panic is answered 500 by the middleware and fails
// the target.
func FuzzResume(f *testing.F) {
	fx := newFixture(f)
	const id = "pri_fuzz"
	fx.putRequest(pausedRequest(id, 1))
	used, _ := fx.replyToken(id, "wh-verify", 1)
	if w := fx.do(http.MethodPost, resumePath(id), "Bearer "+used, `{}`); w.Code != http.StatusOK {
		f.Fatalf("first use: got %d %s, want 200", w.Code, w.Body)
	}
	expired, _ := sealResume(f, fx.resume.WithClock(func() time.Time { return time.Now().Add(-time.Hour) }),
		token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1, Scopes: []string{scope.PrivacyRequestResume}}, time.Minute)

	for _, seed := range []struct {
		raw        string
		body       string
		validToken bool
	}{
		{"", `{}`, false},
		{used, `{}`, false},
		{expired, `{}`, false},
		{used[:len(used)/2], `{}`, false},
		{"a.b.c.d.e", `{}`, false},
		{"eyJhbGciOiJub25lIn0.e30.", `{}`, false},
		{"", `{}`, true},
		{"", ``, true},
		{"", `{"derived_identity": {"email": "a@example.com", "phone_number": "555"}}`, true},
		{"", `{"derived_identity": {"email": 1}}`, true},
		{"", `{"derived_identity": [`, true},
		{"", `[]`, true},
		{"", `null`, true},
		{"", "{\"derived_identity\": {\"email\": \"\xff\"}}", true},
		{"", `{"derived_identity": {"ga_client_id": "g", "ljt_readerID": "r", "fides_user_device_id": "d", "external_id": "x"}}`, true},
		{"", `{"derived_identity": {"loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}}`, true},
		{"", `{"derived_identity": {"loyalty_id": null}}`, true},
		{"", `{"derived_identity": {"loyalty_id": "CH-1"}}`, true},
		{"", `{"derived_identity": {"Loyalty ID": {"label": "L", "value": "v"}}}`, true},
		{"", `{"derived_identity": {"k": {"label": "", "value": "v", "x": 1}}}`, true},
		{"", `{"derived_identity": {"k": {"label": "L", "value": "v"}, "k": {"label": "L", "value": "v"}}}`, true},
		{"", `{"derived_identity": {"external_id": {"label": "L", "value": "v"}}}`, true},
	} {
		f.Add(seed.raw, []byte(seed.body), seed.validToken)
	}

	f.Fuzz(func(t *testing.T, raw string, body []byte, validToken bool) {
		if validToken {
			raw, _ = sealResume(t, fx.resume, token.ResumeClaims{RequestID: id, WebhookID: "wh-verify", Pause: 1,
				Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
		}
		w := fx.do(http.MethodPost, resumePath(id), "Bearer "+raw, string(body))
		switch {
		case w.Code == http.StatusOK:
			// Seeds are built per process: under -fuzz a worker may see the "used" seed token
			// fresh. A 200 is right whenever the token truly opens for this pause and the body is
			// valid.
			var c token.ResumeClaims
			if err := fx.resume.Open(raw, &c); err != nil || c.RequestID != id || c.Pause != 1 || c.WebhookID != "wh-verify" {
				t.Fatalf("200 for a token that does not open for %s (%v): %q", id, err, raw)
			}
			d, err := decodeResumeBody(body)
			if err != nil {
				t.Fatalf("200 for a body the decoder refuses (%v): %q", err, body)
			}
			// What is published is within the bounds the executor checks again.
			if d != nil && (d.IsZero() || d.Validate() != nil) {
				t.Fatalf("200 for a derived identity that sets nothing or breaks a bound (%v): %q", d.Validate(), body)
			}
		case w.Code >= 400 && w.Code < 500:
			if validToken && w.Code != http.StatusUnprocessableEntity && w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("valid token answered %d %s", w.Code, w.Body)
			}
		default:
			t.Fatalf("got %d %s for token %q body %q", w.Code, w.Body, raw, body)
		}
	})
}

// FuzzPreApprove sends arbitrary bearer tokens and bodies through the real pre-approval reply
// handlers (eligible and not eligible). When validToken is set the token is a fresh, valid
// reply-to-token of one of the request's pre-approval webhooks (a new jti each time, so that it is
// never used yet) and raw is ignored. The answer must be a 4xx, or 200 only for a token that opens
// as a pre-approval token of this request, its run and one of its webhooks, with an empty body or
// {}; a valid token is refused only for its body.
func FuzzPreApprove(f *testing.F) {
	fx := newFixture(f)
	const id = "pri_fuzz_pa"
	fx.putRequest(preApprovalRequest(id, 1))
	used, _ := fx.preApprovalToken(id, "wh-fraud", 1)
	if w := fx.do(http.MethodPost, eligiblePath(id), "Bearer "+used, ``); w.Code != http.StatusOK {
		f.Fatalf("first use: got %d %s, want 200", w.Code, w.Body)
	}
	resumeTok, _ := fx.replyToken(id, "wh-fraud", 1)
	other, _ := fx.preApprovalToken("pri_other", "wh-fraud", 1)
	earlier, _ := fx.preApprovalToken(id, "wh-legal", 0)
	for _, seed := range []struct {
		raw        string
		body       string
		validToken bool
		eligible   bool
	}{
		{"", ``, false, true},
		{used, ``, false, true},
		{used, `{}`, false, false},
		{resumeTok, ``, false, true},
		{other, ``, false, true},
		{earlier, ``, false, false},
		{used[:len(used)/2], ``, false, true},
		{"", ``, true, true},
		{"", `{}`, true, false},
		{"", ` { } `, true, true},
		{"", `{"reason": "x"}`, true, false},
		{"", `[]`, true, true},
		{"", `null`, true, true},
		{"", `{`, true, false},
	} {
		f.Add(seed.raw, []byte(seed.body), seed.validToken, seed.eligible)
	}

	f.Fuzz(func(t *testing.T, raw string, body []byte, validToken, eligible bool) {
		if validToken {
			raw, _ = sealPreApproval(t, fx.resume, token.PreApprovalClaims{Claims: token.Claims{ID: token.NewID()},
				RequestID: id, WebhookID: "wh-legal", Run: 1, Scopes: []string{scope.PrivacyRequestReview}}, time.Hour)
		}
		path := notEligiblePath(id)
		if eligible {
			path = eligiblePath(id)
		}
		w := fx.do(http.MethodPost, path, "Bearer "+raw, string(body))
		switch {
		case w.Code == http.StatusOK:
			var c token.PreApprovalClaims
			err := fx.resume.Open(raw, &c)
			if err != nil || c.RequestID != id || c.Run != 1 || (c.WebhookID != "wh-fraud" && c.WebhookID != "wh-legal") ||
				!c.HasScope(scope.PrivacyRequestReview) {
				t.Fatalf("200 for a token that is no pre-approval token of %s's run 1 (%v, %+v): %q", id, err, c, raw)
			}
			if err := decodeEmptyBody(body); err != nil {
				t.Fatalf("200 for a body the decoder refuses (%v): %q", err, body)
			}
		case w.Code >= 400 && w.Code < 500:
			if validToken && w.Code != http.StatusUnprocessableEntity && w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("valid token answered %d %s", w.Code, w.Body)
			}
		default:
			t.Fatalf("got %d %s for token %q body %q", w.Code, w.Body, raw, body)
		}
	})
}

// FuzzRetryMatching: any body through the real scoped retry: 200 with a count only for a body that
// decodes (decodeReplayBody), a 422 otherwise, never a 5xx; a retry is published only after a 200.
func FuzzRetryMatching(f *testing.F) {
	fx := newFixture(f)
	fx.index(event.Errored{ID: "pri_fuzz_r", PolicyKey: "p1", WebhookKey: "verify", ConnectionKey: "crm", Status: 503, ErrorCount: 1, At: t0})
	fx.putRequest(failedRequest("pri_fuzz_r", 1))
	auth := "Bearer " + fx.accessToken(rootClientID, scope.PrivacyRequestResume)
	for _, seed := range []string{``, `{}`, `{"policy_key": "p1"}`, `{"status": 503, "webhook_key": "verify"}`,
		`{"errored_since": "2025-03-01T00:00:00Z", "errored_until": "2025-03-02T00:00:00Z"}`, `{"status": 1e400}`,
		`{"connection_key": null}`, `{"policy_key": "p1", "policy_key": "p1"}`, "{\"policy_key\": \"\xff\"}", `[{}]`} {
		f.Add(seed)
	}
	retries := func(t *testing.T) uint64 {
		info, err := fx.stream.Info(context.Background(), jetstream.WithSubjectFilter(event.SubjectRetry))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[event.SubjectRetry]
	}
	f.Fuzz(func(t *testing.T, body string) {
		before := retries(t)
		w := fx.do(http.MethodPost, "/api/v1/privacy-request/retry", auth, body)
		_, decodeErr := decodeReplayBody([]byte(body))
		switch {
		case w.Code >= 500:
			t.Fatalf("%q: %d %s", body, w.Code, w.Body)
		case decodeErr == nil && (w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), `{"queued":`)):
			t.Fatalf("%q decodes, yet %d %s", body, w.Code, w.Body)
		case decodeErr != nil && w.Code != http.StatusUnprocessableEntity:
			t.Fatalf("%q does not decode (%v), yet %d %s", body, decodeErr, w.Code, w.Body)
		case w.Code != http.StatusOK && retries(t) != before:
			t.Fatalf("%q: refused with %d, yet a retry was published", body, w.Code)
		}
	})
}
