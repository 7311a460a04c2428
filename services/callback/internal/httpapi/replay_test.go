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

	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
)

// index puts the entry of errored_requests the executor writes for a request in error.
func (f *fixture) index(e event.Errored) {
	f.t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.errored.Put(context.Background(), event.KVKey(e.ID), b); err != nil {
		f.t.Fatal(err)
	}
}

// retried returns the ids of the retry events on the stream, in order, with their from_error.
func (f *fixture) retried() []string {
	f.t.Helper()
	var out []string
	for _, m := range f.events(event.SubjectRetry) {
		var r event.Retry
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, r.RequestID)
	}
	slices.Sort(out)
	return out
}

// TestRetryMatching checks the scoped retry of SPEC §7 against real NATS: each filter selects the
// requests in error it names, and only those still in the error they were indexed for; a repeat
// queues nothing new (each retry is stored once); an empty body retries every request in error.
func TestRetryMatching(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume))
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	// pri_a and pri_b failed at webhook verify (connection crm, 503), pri_c at notify (400) of
	// another policy; pri_stale was indexed but has been retried since; pri_gone has no record.
	for _, e := range []event.Errored{
		{ID: "pri_a", PolicyKey: "p1", Step: event.StepPreWebhooks, WebhookKey: "verify", ConnectionKey: "crm", Status: 503, ErrorCount: 1, At: at(1)},
		{ID: "urn:b.1", PolicyKey: "p1", Step: event.StepPreWebhooks, WebhookKey: "verify", ConnectionKey: "crm", Status: 503, ErrorCount: 2, At: at(5)},
		{ID: "pri_c", PolicyKey: "p2", Step: event.StepPostWebhooks, WebhookKey: "notify", ConnectionKey: "mail", Status: 400, ErrorCount: 1, At: at(10)},
		{ID: "pri_stale", PolicyKey: "p1", WebhookKey: "verify", ConnectionKey: "crm", Status: 503, ErrorCount: 1, At: at(2)},
		{ID: "pri_gone", PolicyKey: "p1", WebhookKey: "verify", ErrorCount: 1, At: at(3)},
	} {
		f.index(e)
		if e.ID == "pri_gone" {
			continue
		}
		req := failedRequest(e.ID, e.ErrorCount)
		if e.ID == "pri_stale" {
			req.Status, req.Error = event.StatusInProcessing, nil
		}
		f.putRequest(req)
	}
	post := func(body string) (int, string) {
		w := f.do(http.MethodPost, "/api/v1/privacy-request/retry", auth, body)
		return w.Code, strings.TrimSpace(w.Body.String())
	}
	for _, tc := range []struct {
		name, body, want string
		retried          []string
	}{
		{"another connection", `{"connection_key": "none"}`, `{"queued":0,"more":false}`, nil},
		{"since after every error", `{"errored_since": "2026-12-01T13:00:00Z"}`, `{"queued":0,"more":false}`, nil},
		{"status 400", `{"status": 400}`, `{"queued":1,"more":false}`, []string{"pri_c"}},
		{"policy, webhook, connection and a window", `{"policy_key": "p1", "webhook_key": "verify", "connection_key": "crm", "errored_since": "` +
			at(0).Format(time.RFC3339) + `", "errored_until": "` + at(2).Format(time.RFC3339) + `"}`, `{"queued":1,"more":false}`, []string{"pri_a", "pri_c"}},
		{"the same again", `{"policy_key": "p1", "errored_until": "` + at(2).Format(time.RFC3339) + `"}`, `{"queued":0,"more":false}`, []string{"pri_a", "pri_c"}},
		{"everything", ``, `{"queued":1,"more":false}`, []string{"pri_a", "pri_c", "urn:b.1"}},
	} {
		status, body := post(tc.body)
		if status != 200 || body != tc.want {
			t.Errorf("%s: %d %s, want 200 %s", tc.name, status, body, tc.want)
		}
		if got := f.retried(); !slices.Equal(got, tc.retried) {
			t.Errorf("%s: retry events for %q, want %q (each stored once)", tc.name, got, tc.retried)
		}
	}
}

// TestRetryMatchingCap: a scoped retry queues at most resume.MaxRetriesPerCall retries and says
// there are more; the same call again queues the rest (the ones queued before are duplicates,
// not counted), and a third queues nothing.
func TestRetryMatchingCap(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume))
	const n = resume.MaxRetriesPerCall + 3
	for i := range n {
		id := fmt.Sprintf("pri_cap_%04d", i)
		f.index(event.Errored{ID: id, PolicyKey: "p1", WebhookKey: "verify", ErrorCount: 1, At: t0})
		f.putRequest(failedRequest(id, 1))
	}
	for _, want := range []string{
		fmt.Sprintf(`{"queued":%d,"more":true}`, resume.MaxRetriesPerCall),
		`{"queued":3,"more":false}`,
		`{"queued":0,"more":false}`,
	} {
		w := f.do(http.MethodPost, "/api/v1/privacy-request/retry", auth, `{"policy_key": "p1"}`)
		if got := strings.TrimSpace(w.Body.String()); w.Code != 200 || got != want {
			t.Fatalf("scoped retry: %d %s, want 200 %s", w.Code, got, want)
		}
	}
	if got := f.retried(); len(got) != n {
		t.Fatalf("%d retry events stored, want %d (each once)", len(got), n)
	}
}

// TestRetryMatchingRefuses: a scoped retry without the resume scope is 403, and every bad body is
// 422 naming the field, with nothing published.
func TestRetryMatchingRefuses(t *testing.T) {
	f := newFixture(t)
	f.index(event.Errored{ID: "pri_a", PolicyKey: "p1", ErrorCount: 1, At: t0})
	f.putRequest(failedRequest("pri_a", 1))
	read := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	if w := f.do(http.MethodPost, "/api/v1/privacy-request/retry", read, `{}`); w.Code != http.StatusForbidden {
		t.Errorf("without privacy-request:resume: %d %s, want 403", w.Code, w.Body)
	}
	if w := f.do(http.MethodPost, "/api/v1/privacy-request/retry", "", `{}`); w.Code != http.StatusUnauthorized {
		t.Errorf("without a token: %d %s, want 401", w.Code, w.Body)
	}
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume))
	for _, tc := range []struct{ body, loc string }{
		{`{`, `"body"`},
		{`[]`, `"body"`},
		{`{"Policy_Key": "p1"}`, `"Policy_Key"`},
		{`{"policy_key": "p1", "policy_key": "p2"}`, `"policy_key"`},
		{`{"policy_key": ""}`, `"policy_key"`},
		{`{"policy_key": "` + strings.Repeat("k", 256) + `"}`, `"policy_key"`},
		{`{"webhook_key": 7}`, `"webhook_key"`},
		{`{"errored_since": "yesterday"}`, `"errored_since"`},
		{`{"errored_until": 1}`, `"errored_until"`},
		{`{"errored_since": "2026-12-02T00:00:00Z", "errored_until": "2026-12-01T00:00:00Z"}`, `"errored_until"`},
		{`{"status": 99}`, `"status"`},
		{`{"status": 503.5}`, `"status"`},
		{`{"status": "503"}`, `"status"`},
	} {
		w := f.do(http.MethodPost, "/api/v1/privacy-request/retry", auth, tc.body)
		if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), tc.loc) {
			t.Errorf("%s: %d %s, want 422 naming %s", tc.body, w.Code, w.Body, tc.loc)
		}
	}
	if n := f.count(event.SubjectRetry); n != 0 {
		t.Errorf("%d retry events after refusals, want 0", n)
	}
}
