package app_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
)

// verifySignature checks a Standard Webhooks signature the way a receiver would.
func verifySignature(t *testing.T, c testkit.Call, signingSecret string) {
	t.Helper()
	var key []byte
	if rest, ok := strings.CutPrefix(signingSecret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
			t.Fatal(err)
		}
	} else {
		key = []byte(signingSecret)
	}
	id, ts := c.Header.Get("webhook-id"), c.Header.Get("webhook-timestamp")
	if id == "" || ts == "" {
		t.Fatalf("webhook-id %q webhook-timestamp %q: want both", id, ts)
	}
	if n, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(n, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q is not a current unix time", ts)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(c.Body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if got := c.Header.Get("webhook-signature"); got != want {
		t.Errorf("webhook-signature %q, want %q", got, want)
	}
}

func TestCallHeadersAndBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	rawSecret := "plain-signing-secret"
	plan := e.putPlan("headers", []hook{
		{Key: "pre_one", URL: e.rc.URL("/pre_one"), Secrets: &event.HTTPSSecrets{URL: e.rc.URL("/pre_one"),
			Authorization: "Token abc def", Headers: map[string]string{"X-Tenant": "t1"}}},
		{Key: "pre_two", Direction: event.TwoWay, URL: e.rc.URL("/pre_two"), Secrets: &event.HTTPSSecrets{URL: e.rc.URL("/pre_two"),
			Authorization: "Bearer two", SigningSecret: testSigningSecret}},
	}, []hook{
		{Key: "post_two", Direction: event.TwoWay, URL: e.rc.URL("/post_two"), Secrets: &event.HTTPSSecrets{URL: e.rc.URL("/post_two"),
			Authorization: "Bearer post", SigningSecret: rawSecret}},
	})
	e.submit("pri_headers", "headers", identity("a@example.com", ""))
	e.waitStatus("pri_headers", 20*time.Second, event.StatusComplete)

	resumeKey, _ := secret.DeriveKey(appKey, secret.PurposeResumeTokens)
	sealer, _ := token.NewSealer(resumeKey)
	for _, tc := range []struct {
		path, ct, dir, auth, signing string
		replyTo                      bool
		webhookID                    string
	}{
		{"/pre_one", "pre", "one_way", "Token abc def", "", false, plan.Pre[0].ID},
		{"/pre_two", "pre", "two_way", "Bearer two", testSigningSecret, true, plan.Pre[1].ID},
		{"/post_two", "post", "two_way", "Bearer post", rawSecret, false, plan.Post[0].ID},
	} {
		t.Run(tc.path, func(t *testing.T) {
			calls := e.rc.CallsOf("pri_headers", tc.path)
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1", len(calls))
			}
			c := calls[0]
			if got := c.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			if got := c.Header.Get("Authorization"); got != tc.auth {
				t.Errorf("Authorization %q, want %q", got, tc.auth)
			}
			if got := c.Header.Get("User-Agent"); !strings.HasPrefix(got, "policyhooks/") {
				t.Errorf("User-Agent %q, want policyhooks/<version>", got)
			}
			if tc.path == "/pre_one" && c.Header.Get("X-Tenant") != "t1" {
				t.Errorf("X-Tenant %q, want t1", c.Header.Get("X-Tenant"))
			}
			var body map[string]json.RawMessage
			if err := json.Unmarshal(c.Body, &body); err != nil {
				t.Fatal(err)
			}
			// fidesops's five fields, exactly; fides's four beside them (TestCallBodyHasFidesFields
			// checks their values).
			fidesops := map[string]json.RawMessage{}
			for _, k := range []string{"callback_type", "direction", "identity", "policy_key", "privacy_request_id"} {
				fidesops[k] = body[k]
			}
			want := fmt.Sprintf(`{"callback_type":%q,"direction":%q,"identity":{"email":"a@example.com","phone_number":null},"policy_key":"headers","privacy_request_id":"pri_headers"}`, tc.ct, tc.dir)
			if got, _ := json.Marshal(fidesops); string(got) != want {
				t.Errorf("fidesops's fields %s, want %s", got, want)
			}
			keys := slices.Sorted(maps.Keys(body))
			if wantKeys := []string{"callback_type", "direction", "identity", "policy_action", "policy_key", "privacy_request",
				"privacy_request_id", "privacy_request_status", "timestamp"}; !slices.Equal(keys, wantKeys) {
				t.Errorf("body keys %v, want %v", keys, wantKeys)
			}
			if tc.signing != "" {
				verifySignature(t, c, tc.signing)
			} else if c.Header.Get("webhook-signature") != "" {
				t.Errorf("signature sent without signing secret")
			}
			replyTo, tok := c.Header.Get("reply-to"), c.Header.Get("reply-to-token")
			if !tc.replyTo {
				if replyTo != "" || tok != "" {
					t.Errorf("reply-to %q token %q on a call that must not have them", replyTo, tok)
				}
				return
			}
			if replyTo != "https://callback.example.com/api/v1/privacy-request/pri_headers/resume" {
				t.Errorf("reply-to %q", replyTo)
			}
			var claims token.ResumeClaims
			if err := sealer.Open(tok, &claims); err != nil {
				t.Fatalf("reply-to-token: %v", err)
			}
			if claims.RequestID != "pri_headers" || claims.WebhookID != tc.webhookID || claims.Pause != 1 ||
				len(claims.Scopes) != 1 || claims.Scopes[0] != scope.PrivacyRequestResume || claims.ID == "" {
				t.Errorf("claims %+v, want request pri_headers webhook %s pause 1 scope resume", claims, tc.webhookID)
			}
			if d := time.Until(time.Unix(claims.Expiry, 0)); d < 59*time.Hour || d > 61*time.Hour {
				t.Errorf("token expires in %s, want PRIVACY_REQUEST_DELAY_TIMEOUT (60h)", d)
			}
		})
	}
}

// TestOrderAndPlanSnapshot: webhooks run strictly in order, and a plan edit made while a request
// runs does not change that request.
func TestOrderAndPlanSnapshot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	var pre, post []hook
	for i := range 5 {
		pre = append(pre, hook{Key: fmt.Sprintf("pre%d", i), URL: e.rc.URL(fmt.Sprintf("/pre%d", i))})
	}
	for i := range 3 {
		post = append(post, hook{Key: fmt.Sprintf("post%d", i), Direction: event.TwoWay, URL: e.rc.URL(fmt.Sprintf("/post%d", i))})
	}
	e.putPlan("ordered", pre, post)
	release := make(chan struct{})
	e.rc.On("/pre1", func(int, testkit.Call) testkit.Answer { <-release; return ok("") })
	e.submit("pri_order", "ordered", identity("", "555"))
	testkit.Eventually(t, 10*time.Second, "pre1 being called", func() bool { return len(e.rc.CallsOf("pri_order", "/pre1")) == 1 })
	// Edit the policy while the request is in its second webhook.
	e.putPlan("ordered", []hook{{Key: "new", URL: e.rc.URL("/new")}}, nil)
	close(release)
	r := e.waitStatus("pri_order", 20*time.Second, event.StatusComplete)
	var got []string
	for _, c := range e.rc.CallsOf("pri_order", "") {
		got = append(got, c.Path)
	}
	want := []string{"/pre0", "/pre1", "/pre2", "/pre3", "/pre4", "/post0", "/post1", "/post2"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("calls %v, want %v", got, want)
	}
	if len(r.Plan.Pre) != 5 || r.FinishedProcessingAt == nil || r.StartedProcessingAt == nil {
		t.Errorf("record %s", describe(r))
	}
	// A new request takes the edited plan.
	e.submit("pri_order_2", "ordered", identity("", "555"))
	e.waitStatus("pri_order_2", 10*time.Second, event.StatusComplete)
	if n := len(e.rc.CallsOf("pri_order_2", "/new")); n != 1 {
		t.Errorf("new plan webhook called %d times, want 1", n)
	}
}

// TestIDsWithColonsAndDots runs requests whose ids hold characters KV keys cannot (SPEC §5 allows
// ':' and '.'): they are stored under event.KVKey and complete like any other.
func TestIDsWithColonsAndDots(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	e.putPlan("odd_ids", []hook{{Key: "pre", URL: e.rc.URL("/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/post")}})
	for _, id := range []string{"urn:req:1", "a..b", ".lead", "trail.", "x.y:z"} {
		e.submit(id, "odd_ids", identity("a@example.com", ""))
		e.waitStatus(id, 10*time.Second, event.StatusComplete)
		if got := e.rc.CallsOf(id, ""); len(got) != 2 {
			t.Errorf("request %q: %d calls, want 2", id, len(got))
		}
	}
}

// TestCallsPerHostBounded runs more requests at once than there are call slots for their webhook
// host and active handlers: the calls beyond the bound wait (suspended, not failed), never more
// than WEBHOOK_MAX_CONNS_PER_HOST calls reach the host at once, and every request completes with
// exactly one call per webhook.
func TestCallsPerHostBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		slots, active int
	}{
		{name: "one slot", slots: 1, active: 8},
		{name: "two slots, one active handler", slots: 2, active: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.start(e.config(func(c *app.Config) {
				c.WebhookMaxConnsPerHost = tc.slots
				c.ActiveHandlers = tc.active
			}))
			var mu sync.Mutex
			cur, most := 0, 0
			slow := func(int, testkit.Call) testkit.Answer {
				mu.Lock()
				cur++
				most = max(most, cur)
				mu.Unlock()
				// The call lasts a moment, so that calls beyond the bound would overlap here.
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				cur--
				mu.Unlock()
				return ok("")
			}
			e.rc.On("/pre", slow)
			e.rc.On("/post", slow)
			policy := "bounded_" + strconv.Itoa(tc.slots)
			e.putPlan(policy, []hook{{Key: "pre", URL: e.rc.URL("/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/post")}})
			const n = 12
			for i := range n {
				e.submit(fmt.Sprintf("pri_bounded_%d", i), policy, identity("b@example.com", ""))
			}
			for i := range n {
				id := fmt.Sprintf("pri_bounded_%d", i)
				e.waitStatus(id, 20*time.Second, event.StatusComplete)
				for _, path := range []string{"/pre", "/post"} {
					if got := len(e.rc.CallsOf(id, path)); got != 1 {
						t.Errorf("%s %s: %d calls, want 1", id, path, got)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if most > tc.slots {
				t.Errorf("%d calls at once to the host, want at most %d", most, tc.slots)
			}
		})
	}
}
