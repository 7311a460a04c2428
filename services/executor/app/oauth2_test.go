package app_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

// Secret values of the OAuth2 tests: none may appear in a log line, a record or an event.
const (
	oauthClientSecret = "client-SECRET-7f3a"
	oauthTokenPrefix  = "tok-SECRET-"
)

// logBuffer collects the log lines of an executor.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLogged starts an executor that logs everything (trace level) into the returned buffer; it
// is stopped when the test ends.
func (e *env) startLogged(cfg app.Config) *logBuffer {
	e.t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := app.Start(ctx, cfg, zerolog.New(logs).Level(zerolog.TraceLevel))
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		cancel()
		if err := s.Wait(); err != nil {
			e.t.Errorf("executor stopped with %v", err)
		}
	})
	return logs
}

// oauthHook is a webhook at path of the receiver whose connection has oauth2 client credentials
// for the receiver's tokenPath.
func (e *env) oauthHook(key, path, tokenPath string, dir event.Direction) hook {
	return hook{Key: key, Direction: dir, URL: e.rc.URL(path), Secrets: &event.HTTPSSecrets{URL: e.rc.URL(path),
		SigningSecret: testSigningSecret, OAuth2: &event.OAuth2{TokenURL: e.rc.URL(tokenPath), ClientID: "executor client",
			ClientSecret: oauthClientSecret, Scopes: []string{"hooks:write", "read"}}}}
}

// tokens answers the n-th token request with the token oauthTokenPrefix+n, valid expiresIn
// seconds.
func tokens(expiresIn int) func(int, testkit.Call) testkit.Answer {
	return func(n int, _ testkit.Call) testkit.Answer {
		return testkit.Answer{Header: map[string]string{"Content-Type": "application/json"},
			Body: fmt.Sprintf(`{"access_token": "%s%d", "token_type": "Bearer", "expires_in": %d}`, oauthTokenPrefix, n, expiresIn)}
	}
}

// bearers returns the Authorization headers of calls.
func bearers(calls []testkit.Call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.Header.Get("Authorization")
	}
	return out
}

// checkNoSecrets fails the test when the client secret or a token is in the logs, the records of
// ids or any status event.
func (e *env) checkNoSecrets(logs *logBuffer, ids ...string) {
	e.t.Helper()
	places := map[string]string{"logs": logs.String()}
	for _, id := range ids {
		places["record of "+id] = describe(e.record(id))
	}
	var events []string
	for _, m := range e.nats.Msgs(e.t, event.SubjectStatusPrefix+">") {
		events = append(events, string(m.Data()))
	}
	places["status events"] = strings.Join(events, "\n")
	for where, text := range places {
		for _, needle := range []string{oauthClientSecret, oauthTokenPrefix, url.QueryEscape(oauthClientSecret)} {
			if strings.Contains(text, needle) {
				e.t.Errorf("%s holds %q", where, needle)
			}
		}
	}
	if !strings.Contains(logs.String(), "executor") {
		e.t.Fatal("the log capture holds no line of the executor; the check above would be vacuous")
	}
}

// TestOAuth2TokenSharedByCalls: calls of one connection, from several requests at once, share one
// token obtained by the client credentials grant and carry it as a Bearer credential; another
// connection gets its own.
func TestOAuth2TokenSharedByCalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rc.On("/token", tokens(3600))
	e.rc.On("/token_b", tokens(3600))
	logs := e.startLogged(e.config())
	e.putPlan("oauth", []hook{e.oauthHook("a", "/a", "/token", event.OneWay)},
		[]hook{e.oauthHook("b", "/b", "/token_b", event.TwoWay)})
	var ids []string
	for i := range 4 {
		id := fmt.Sprintf("pri_oauth_%d", i)
		ids = append(ids, id)
		e.submit(id, "oauth", identity("a@example.com", ""))
	}
	for _, id := range ids {
		e.waitStatus(id, 20*time.Second, event.StatusComplete)
	}
	fetches := e.rc.CallsOf("", "/token")
	if len(fetches) != 1 {
		t.Fatalf("%d token requests for connection a, want 1", len(fetches))
	}
	if n := len(e.rc.CallsOf("", "/token_b")); n != 1 {
		t.Fatalf("%d token requests for connection b, want 1", n)
	}
	f := fetches[0]
	form, err := url.ParseQuery(string(f.Body))
	if err != nil || f.Method != "POST" || form.Get("grant_type") != "client_credentials" || form.Get("scope") != "hooks:write read" {
		t.Errorf("token request %s %q, want a form POST of grant_type=client_credentials and scope", f.Method, f.Body)
	}
	if user, _, ok := (&http.Request{Header: f.Header}).BasicAuth(); !ok || user != "executor+client" {
		t.Errorf("token request Basic user %q, want the form-url-encoded client id", user)
	}
	for _, c := range []struct{ path, want string }{{"/a", "Bearer " + oauthTokenPrefix + "0"}, {"/b", "Bearer " + oauthTokenPrefix + "0"}} {
		got := bearers(e.rc.CallsOf("", c.path))
		if len(got) != 4 {
			t.Fatalf("%s: %d calls, want 4", c.path, len(got))
		}
		for _, b := range got {
			if b != c.want {
				t.Fatalf("%s: Authorization %v, want %q on every call", c.path, got, c.want)
			}
		}
	}
	e.checkNoSecrets(logs, ids...)
}

// TestOAuth2TokenRenewed: a token is replaced before it expires (expires_in 1 s: used for 0.9 s).
func TestOAuth2TokenRenewed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rc.On("/token", tokens(1))
	logs := e.startLogged(e.config())
	e.putPlan("renew", []hook{e.oauthHook("a", "/a", "/token", event.OneWay)}, nil)
	e.submit("pri_renew_1", "renew", identity("a@example.com", ""))
	e.waitStatus("pri_renew_1", 20*time.Second, event.StatusComplete)
	time.Sleep(1100 * time.Millisecond)
	e.submit("pri_renew_2", "renew", identity("a@example.com", ""))
	e.waitStatus("pri_renew_2", 20*time.Second, event.StatusComplete)
	if got, want := bearers(e.rc.CallsOf("", "/a")), []string{"Bearer " + oauthTokenPrefix + "0", "Bearer " + oauthTokenPrefix + "1"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Authorization of the calls %v, want %v", got, want)
	}
	if n := len(e.rc.CallsOf("", "/token")); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
	e.checkNoSecrets(logs, "pri_renew_1", "pri_renew_2")
}

// TestOAuth2RefreshedOn401: a webhook that refuses the token with 401 is called once more, in the
// same attempt, with a fresh token; the attempt records the second answer.
func TestOAuth2RefreshedOn401(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.rc.On("/token", tokens(3600))
	e.rc.On("/a", func(_ int, c testkit.Call) testkit.Answer {
		if c.Header.Get("Authorization") == "Bearer "+oauthTokenPrefix+"0" {
			return testkit.Answer{Status: 401}
		}
		return ok(`{"derived_identity": {"phone_number": "555"}}`)
	})
	logs := e.startLogged(e.config())
	e.putPlan("401", []hook{e.oauthHook("a", "/a", "/token", event.TwoWay)}, nil)
	e.submit("pri_401", "401", identity("a@example.com", ""))
	r := e.waitStatus("pri_401", 20*time.Second, event.StatusComplete)
	if got := bearers(e.rc.CallsOf("pri_401", "/a")); len(got) != 2 || got[1] != "Bearer "+oauthTokenPrefix+"1" {
		t.Fatalf("Authorization of the calls %v, want the refused token then %s1", got, oauthTokenPrefix)
	}
	calls := e.rc.CallsOf("pri_401", "/a")
	if calls[0].Header.Get("webhook-id") != calls[1].Header.Get("webhook-id") {
		t.Errorf("webhook-id changed between the two calls of one attempt")
	}
	if a := r.Webhooks[0].Attempts; len(a) != 1 || a[0].Status != 200 {
		t.Fatalf("attempts %+v, want one, answered 200", a)
	}
	if n := len(e.rc.CallsOf("", "/token")); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
	e.checkNoSecrets(logs, "pri_401")
}

// TestOAuth2TokenEndpointFailure: a token endpoint that answers 500 fails the webhook's attempt
// (the webhook is not called), which is retried with the webhook's backoff; when it keeps failing
// the request goes to error with the token endpoint's status, never the body or a secret.
func TestOAuth2TokenEndpointFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fail := testkit.Answer{Status: 500, Body: `{"error": "server_error", "client_secret": "` + oauthClientSecret + `"}`}
	e.rc.On("/token", func(n int, c testkit.Call) testkit.Answer {
		if n == 0 {
			return fail
		}
		return tokens(3600)(n, c)
	})
	e.rc.On("/token_down", func(int, testkit.Call) testkit.Answer { return fail })
	logs := e.startLogged(e.config())
	e.putPlan("flaky", []hook{e.oauthHook("a", "/a", "/token", event.OneWay)}, nil)
	e.putPlan("down", []hook{e.oauthHook("b", "/b", "/token_down", event.OneWay)}, nil)
	e.submit("pri_flaky", "flaky", identity("a@example.com", ""))
	e.submit("pri_down", "down", identity("a@example.com", ""))

	r := e.waitStatus("pri_flaky", 20*time.Second, event.StatusComplete)
	a := r.Webhooks[0].Attempts
	if len(a) != 2 || a[0].Status != 0 || a[0].Error != "oauth2 token endpoint answered 500" || a[1].Status != 200 {
		t.Fatalf("attempts %+v, want the token endpoint's 500, then 200", a)
	}
	if got := bearers(e.rc.CallsOf("pri_flaky", "/a")); len(got) != 1 || got[0] != "Bearer "+oauthTokenPrefix+"1" {
		t.Fatalf("calls of the webhook %v, want one, with the token of the second request", got)
	}

	r = e.waitStatus("pri_down", 20*time.Second, event.StatusError)
	if r.Error == nil || r.Error.Message == "" || !strings.Contains(r.Error.Message, "oauth2 token endpoint answered 500") {
		t.Fatalf("error %+v, want one naming the token endpoint's 500", r.Error)
	}
	if n := len(r.Webhooks[0].Attempts); n != 3 {
		t.Fatalf("%d attempts, want WEBHOOK_MAX_ATTEMPTS (3)", n)
	}
	if n := len(e.rc.CallsOf("", "/b")); n != 0 {
		t.Fatalf("the webhook got %d calls, want 0", n)
	}
	e.checkNoSecrets(logs, "pri_flaky", "pri_down")
}
