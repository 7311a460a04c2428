package app_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestAnswerMatrix runs one request per case: the tested webhook answers as scripted, a one-way
// probe webhook after it (same step) shows the identity the next webhook receives.
func TestAnswerMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	refused := "https://" + closedPort(t) + "/refused"
	type tc struct {
		name       string
		dir        event.Direction
		ct         event.CallbackType
		answers    []testkit.Answer
		url        string // default: the receiver
		wantStatus event.Status
		wantOut    event.Outcome
		wantCalls  int
		wantEmail  string // the probe's email; "" when the probe must not be called
		wantPhone  string
		minGap     time.Duration // between the first two attempts
		wantErr    string
	}
	const email, phone = "customer-1@example.com", "555-5555"
	derived := `{"derived_identity": {"email": "derived@example.com"}}`
	cases := []tc{
		{name: "one_way pre 200 empty", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{ok("")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "one_way pre 200 body ignored", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": true, "derived_identity": {"email": "x@y"}}`)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "one_way post 204", dir: event.OneWay, ct: event.Post, answers: []testkit.Answer{{Status: 204}}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way pre 200 empty", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok("")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way pre {}", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok("{}")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way pre derived identity", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(derived)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: "derived@example.com", wantPhone: phone},
		{name: "two_way post derived identity", dir: event.TwoWay, ct: event.Post, answers: []testkit.Answer{ok(`{"derived_identity": {"phone_number": "+1 555"}, "halt": false}`)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: "+1 555"},
		{name: "two_way pre halt true", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": true}`)}, wantStatus: event.StatusPaused, wantOut: event.OutcomeHalted, wantCalls: 1},
		{name: "two_way pre halt string true", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": "true", "derived_identity": {"email": "d2@example.com"}}`)}, wantStatus: event.StatusPaused, wantOut: event.OutcomeHalted, wantCalls: 1},
		{name: "two_way pre halt false", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": false}`)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way pre halt string false", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": "false"}`)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way post halt ignored", dir: event.TwoWay, ct: event.Post, answers: []testkit.Answer{ok(`{"halt": true}`)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "one_way pre 302 ignored", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{{Status: 302, Header: map[string]string{"Location": "/elsewhere"}}}, wantStatus: event.StatusComplete, wantOut: event.OutcomeIgnoredStatus, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "one_way post 404 ignored", dir: event.OneWay, ct: event.Post, answers: []testkit.Answer{{Status: 404}}, wantStatus: event.StatusComplete, wantOut: event.OutcomeIgnoredStatus, wantCalls: 1, wantEmail: email, wantPhone: phone},
		{name: "two_way pre 302 error", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{{Status: 302, Header: map[string]string{"Location": "/elsewhere"}}}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: "two-way webhook answered 302"},
		{name: "two_way pre 400 error", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{{Status: 400}}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: "two-way webhook answered 400"},
		{name: "one_way pre 408 then 200", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{{Status: 408}, ok("")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 2, wantEmail: email, wantPhone: phone},
		{name: "one_way pre 429 Retry-After then 200", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{{Status: 429, Header: map[string]string{"Retry-After": "1"}}, ok("")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 2, wantEmail: email, wantPhone: phone, minGap: 900 * time.Millisecond},
		{name: "two_way pre 5xx then 200", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{{Status: 500}, {Status: 503}, ok(derived)}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 3, wantEmail: "derived@example.com", wantPhone: phone},
		{name: "one_way post 5xx until attempts run out", dir: event.OneWay, ct: event.Post, answers: []testkit.Answer{{Status: 502}}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 3, wantErr: "failed after 3 attempts"},
		{name: "one_way pre timeout then 200", dir: event.OneWay, ct: event.Pre, answers: []testkit.Answer{{Status: 200, Sleep: 3 * time.Second}, ok("")}, wantStatus: event.StatusComplete, wantOut: event.OutcomeSucceeded, wantCalls: 2, wantEmail: email, wantPhone: phone},
		{name: "one_way pre connection refused", dir: event.OneWay, ct: event.Pre, url: refused, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 3, wantErr: "failed after 3 attempts"},
		{name: "two_way pre not JSON", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok("halt please")}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: "not JSON"},
		{name: "two_way pre not an object", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`[{"halt": true}]`)}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: "not a JSON object"},
		{name: "two_way post unknown identity field", dir: event.TwoWay, ct: event.Post, answers: []testkit.Answer{ok(`{"derived_identity": {"name": "Ann"}}`)}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: `unknown field "name"`},
		{name: "two_way pre bad halt", dir: event.TwoWay, ct: event.Pre, answers: []testkit.Answer{ok(`{"halt": "maybe"}`)}, wantStatus: event.StatusError, wantOut: event.OutcomeFailed, wantCalls: 1, wantErr: "halt must be true or false"},
	}
	e.start(e.config())
	var wg sync.WaitGroup
	for i, c := range cases {
		policy := fmt.Sprintf("matrix_%d", i)
		tested, probe := "/"+policy+"/tested", "/"+policy+"/probe"
		u := c.url
		if u == "" {
			u = e.rc.URL(tested)
			e.rc.On(tested, seq(c.answers...))
		}
		hooks := []hook{{Key: "tested", Direction: c.dir, URL: u}, {Key: "probe", URL: e.rc.URL(probe)}}
		if c.ct == event.Pre {
			e.putPlan(policy, hooks, nil)
		} else {
			e.putPlan(policy, nil, hooks)
		}
		id := "pri_" + policy
		e.submit(id, policy, identity(email, phone))
		wg.Add(1)
		t.Run(c.name, func(t *testing.T) {
			defer wg.Done()
			t.Parallel()
			ee := *e
			ee.t = t
			r := ee.waitStatus(id, 30*time.Second, c.wantStatus)
			idx := 0
			if c.ct == event.Post {
				idx = len(r.Plan.Pre)
			}
			wr := r.Webhooks[idx]
			if wr.Outcome != c.wantOut || len(wr.Attempts) != c.wantCalls {
				t.Errorf("outcome %s with %d attempts, want %s with %d: %s", wr.Outcome, len(wr.Attempts), c.wantOut, c.wantCalls, describe(r))
			}
			if c.url == "" {
				if got := len(e.rc.CallsOf(id, tested)); got != c.wantCalls {
					t.Errorf("receiver got %d calls, want %d", got, c.wantCalls)
				}
			}
			for _, a := range wr.Attempts {
				if a.WebhookID == "" || a.At.IsZero() {
					t.Errorf("attempt without webhook id or time: %+v", a)
				}
			}
			if c.wantErr != "" {
				if r.Error == nil || !strings.Contains(r.Error.Message, c.wantErr) || r.Error.WebhookKey != "tested" || r.Error.Step != stepOf(c.ct) {
					t.Errorf("error %+v, want step %s webhook tested message containing %q", r.Error, stepOf(c.ct), c.wantErr)
				}
			} else if r.Error != nil {
				t.Errorf("unexpected error %+v", r.Error)
			}
			if c.wantStatus == event.StatusPaused && (r.Pause != 1 || r.PausedAt == nil || r.PauseExpiresAt == nil || r.PausedWebhookID != r.Plan.Pre[0].ID || r.Next != 1) {
				t.Errorf("paused state: pause %d paused_at %v expires %v webhook %q next %d", r.Pause, r.PausedAt, r.PauseExpiresAt, r.PausedWebhookID, r.Next)
			}
			probeCalls := e.rc.CallsOf(id, probe)
			if c.wantEmail == "" {
				if len(probeCalls) != 0 {
					t.Errorf("probe called %d times, want 0", len(probeCalls))
				}
			} else {
				if len(probeCalls) != 1 {
					t.Fatalf("probe called %d times, want 1", len(probeCalls))
				}
				ident := bodyOf(t, probeCalls[0])["identity"].(map[string]any)
				if ident["email"] != c.wantEmail || ident["phone_number"] != c.wantPhone {
					t.Errorf("probe identity %v, want email %q phone %q", ident, c.wantEmail, c.wantPhone)
				}
			}
			if c.minGap > 0 {
				calls := e.rc.CallsOf(id, tested)
				if gap := calls[1].At.Sub(calls[0].At); gap < c.minGap {
					t.Errorf("second attempt %s after the first, want at least %s (Retry-After)", gap, c.minGap)
				}
			}
			if c.wantCalls > 1 && c.url == "" {
				calls := e.rc.CallsOf(id, tested)
				for _, cl := range calls[1:] {
					if cl.Header.Get("webhook-id") != calls[0].Header.Get("webhook-id") {
						t.Errorf("retries carry webhook-id %q and %q, want the same", calls[0].Header.Get("webhook-id"), cl.Header.Get("webhook-id"))
					}
				}
			}
		})
	}
}

func stepOf(ct event.CallbackType) event.Step {
	if ct == event.Post {
		return event.StepPostWebhooks
	}
	return event.StepPreWebhooks
}
