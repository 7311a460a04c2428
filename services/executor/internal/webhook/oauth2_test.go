package webhook

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
)

// fakeClock is a settable clock for the token cache.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// tokenServer is a loopback token endpoint and webhook in one: POST /token hands out tok-1,
// tok-2, … with the answer that answer returns (expires_in 3600 by default); every other path is
// the webhook, answering what hook returns for the bearer token it got (200 by default).
type tokenServer struct {
	srv     *httptest.Server
	fetches atomic.Int32
	calls   atomic.Int32

	mu      sync.Mutex
	forms   []url.Values
	basic   [][2]string
	bearers []string
	answer  func(n int) (int, string)
	hook    func(bearer string) int
	delay   time.Duration
}

func newTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ts := &tokenServer{}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		answer, hook, delay := ts.answer, ts.hook, ts.delay
		ts.mu.Unlock()
		if r.URL.Path == "/token" {
			n := int(ts.fetches.Add(1))
			_ = r.ParseForm()
			user, pass, _ := r.BasicAuth()
			ts.mu.Lock()
			ts.forms = append(ts.forms, r.PostForm)
			ts.basic = append(ts.basic, [2]string{user, pass})
			ts.mu.Unlock()
			time.Sleep(delay)
			status, body := http.StatusOK, fmt.Sprintf(`{"access_token": "tok-%d", "token_type": "bearer", "expires_in": 3600}`, n)
			if answer != nil {
				status, body = answer(n)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
			return
		}
		ts.calls.Add(1)
		bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ts.mu.Lock()
		ts.bearers = append(ts.bearers, bearer)
		ts.mu.Unlock()
		status := http.StatusOK
		if hook != nil {
			status = hook(bearer)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) set(f func(ts *tokenServer)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	f(ts)
}

// requests returns the forms and Basic credentials of the token requests so far.
func (ts *tokenServer) requests() ([]url.Values, [][2]string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]url.Values(nil), ts.forms...), append([][2]string(nil), ts.basic...)
}

func (ts *tokenServer) lastBearer() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.bearers) == 0 {
		return ""
	}
	return ts.bearers[len(ts.bearers)-1]
}

// oauthSender is a Sender allowed to call loopback over http, its token cache on clock.
func oauthSender(clock *fakeClock) *Sender {
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true}})
	s.tokens.now = clock.Now
	return s
}

func (ts *tokenServer) secrets(scopes ...string) event.HTTPSSecrets {
	return event.HTTPSSecrets{URL: ts.srv.URL + "/hook", OAuth2: &event.OAuth2{TokenURL: ts.srv.URL + "/token",
		ClientID: "client id&1", ClientSecret: "s3cret:+/é", Scopes: scopes}}
}

func oauthCall(s *Sender, conn string, sec event.HTTPSSecrets) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Send(ctx, Call{ConnectionKey: conn, Secrets: sec, WebhookID: "msg_1"})
}

// TestOAuth2TokenRequest pins the token request (RFC 6749 §4.4): a form POST with grant_type and
// the space-separated scopes, the client authenticated by HTTP Basic with its id and secret
// form-url-encoded first (§2.3.1); the call then carries the token as a Bearer credential.
func TestOAuth2TokenRequest(t *testing.T) {
	ts := newTokenServer(t)
	s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
	if res := oauthCall(s, "c", ts.secrets("hooks:write", "read")); res.Status != http.StatusOK || res.Err != nil {
		t.Fatalf("call: %+v, want 200", res)
	}
	forms, basics := ts.requests()
	form, basic := forms[0], basics[0]
	if form.Get("grant_type") != "client_credentials" || form.Get("scope") != "hooks:write read" || len(form) != 2 {
		t.Errorf("form %v, want grant_type=client_credentials and scope=\"hooks:write read\" alone", form)
	}
	if basic != [2]string{"client+id%261", "s3cret%3A%2B%2F%C3%A9"} {
		t.Errorf("basic credentials %q, want the id and secret form-url-encoded", basic)
	}
	if got := ts.lastBearer(); got != "tok-1" {
		t.Errorf("bearer %q, want tok-1", got)
	}
	if res := oauthCall(s, "d", ts.secrets()); res.Status != http.StatusOK {
		t.Fatalf("call without scopes: %+v", res)
	}
	if forms, _ := ts.requests(); forms[1].Has("scope") {
		t.Errorf("form %v without scopes: want no scope parameter", form)
	}
}

// TestOAuth2TokenCache checks the cache on a fake clock: one fetch serves the calls of a
// connection until its lifetime less the margin (a tenth, at most a minute; 5 minutes without
// expires_in), concurrent calls share one fetch, and changed credentials get their own token.
func TestOAuth2TokenCache(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn string // the JSON value, "" for none
		fresh     time.Duration
		renewed   time.Duration
	}{
		{"expires_in 100 s: renewed 10 s early", "100", 89 * time.Second, 91 * time.Second},
		{"expires_in 3600 s: renewed 60 s early", "3600", 3539 * time.Second, 3541 * time.Second},
		{"expires_in as a string", `"100"`, 89 * time.Second, 91 * time.Second},
		{"no expires_in: 5 minutes", "", 269 * time.Second, 271 * time.Second},
		{"expires_in 0: 5 minutes", "0", 269 * time.Second, 271 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t)
			ts.set(func(ts *tokenServer) {
				ts.answer = func(n int) (int, string) {
					exp := ""
					if tc.expiresIn != "" {
						exp = `, "expires_in": ` + tc.expiresIn
					}
					return 200, fmt.Sprintf(`{"access_token": "tok-%d", "token_type": "Bearer"%s}`, n, exp)
				}
			})
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			s := oauthSender(clock)
			for range 3 {
				oauthCall(s, "c", ts.secrets())
			}
			clock.Advance(tc.fresh)
			oauthCall(s, "c", ts.secrets())
			if n := ts.fetches.Load(); n != 1 || ts.lastBearer() != "tok-1" {
				t.Fatalf("after %s: %d fetches, bearer %q; want 1 and tok-1", tc.fresh, n, ts.lastBearer())
			}
			clock.Advance(tc.renewed - tc.fresh)
			oauthCall(s, "c", ts.secrets())
			if n := ts.fetches.Load(); n != 2 || ts.lastBearer() != "tok-2" {
				t.Fatalf("after %s: %d fetches, bearer %q; want 2 and tok-2", tc.renewed, n, ts.lastBearer())
			}
		})
	}

	t.Run("concurrent calls share one fetch", func(t *testing.T) {
		ts := newTokenServer(t)
		ts.set(func(ts *tokenServer) { ts.delay = 200 * time.Millisecond })
		s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if res := oauthCall(s, "c", ts.secrets()); res.Status != http.StatusOK {
					t.Errorf("call: %+v", res)
				}
			})
		}
		wg.Wait()
		if n, calls := ts.fetches.Load(), ts.calls.Load(); n != 1 || calls != 20 {
			t.Fatalf("%d fetches for %d calls, want 1 for 20", n, calls)
		}
	})

	t.Run("per connection and credentials", func(t *testing.T) {
		ts := newTokenServer(t)
		s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
		changed := ts.secrets()
		o := *changed.OAuth2
		o.ClientSecret = "rotated"
		changed.OAuth2 = &o
		for _, c := range []struct {
			conn   string
			sec    event.HTTPSSecrets
			bearer string
		}{
			{"c", ts.secrets(), "tok-1"}, {"other", ts.secrets(), "tok-2"}, {"c", changed, "tok-3"},
			{"c", ts.secrets(), "tok-1"}, {"c", ts.secrets("more"), "tok-4"},
		} {
			oauthCall(s, c.conn, c.sec)
			if got := ts.lastBearer(); got != c.bearer {
				t.Fatalf("%s: bearer %q, want %q", c.conn, got, c.bearer)
			}
		}
	})
}

// TestOAuth2RefreshOn401: a 401 from the webhook drops the token and makes the call once more, in
// the same Send, with a fresh token; a second 401 is the answer.
func TestOAuth2RefreshOn401(t *testing.T) {
	ts := newTokenServer(t)
	s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
	ts.set(func(ts *tokenServer) {
		ts.hook = func(bearer string) int {
			if bearer == "tok-1" {
				return http.StatusUnauthorized
			}
			return http.StatusOK
		}
	})
	if res := oauthCall(s, "c", ts.secrets()); res.Status != http.StatusOK {
		t.Fatalf("call: %+v, want 200 with the second token", res)
	}
	if f, c := ts.fetches.Load(), ts.calls.Load(); f != 2 || c != 2 {
		t.Fatalf("%d fetches and %d calls, want 2 and 2", f, c)
	}
	oauthCall(s, "c", ts.secrets())
	if f, got := ts.fetches.Load(), ts.lastBearer(); f != 2 || got != "tok-2" {
		t.Fatalf("next call: %d fetches, bearer %q; want the fresh token kept (2, tok-2)", f, got)
	}
	ts.set(func(ts *tokenServer) { ts.hook = func(string) int { return http.StatusUnauthorized } })
	res := oauthCall(s, "c", ts.secrets())
	if res.Status != http.StatusUnauthorized || ts.calls.Load() != 5 || ts.fetches.Load() != 3 {
		t.Fatalf("always 401: %+v after %d calls and %d fetches; want 401 after 5 and 3 (one more try)",
			res, ts.calls.Load(), ts.fetches.Load())
	}
}

// TestOAuth2TokenEndpointFails: a token endpoint that does not give a usable token fails the
// attempt as retryable, with a reason naming the endpoint's status or fault and never the
// answer, the secret or the token; the webhook is not called.
func TestOAuth2TokenEndpointFails(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		reason string
	}{
		{"500", 500, `{"error": "server_error", "leak": "BODY-LEAK"}`, "oauth2 token endpoint answered 500"},
		{"401 invalid_client", 401, `{"error": "invalid_client", "leak": "BODY-LEAK"}`, "oauth2 token endpoint answered 401"},
		{"redirect not followed", 302, `BODY-LEAK`, "oauth2 token endpoint answered 302"},
		{"not JSON", 200, `BODY-LEAK`, "oauth2 token endpoint answered 200: the answer is not a JSON object with access_token"},
		{"no access_token", 200, `{"token_type": "bearer", "leak": "BODY-LEAK"}`, "oauth2 token endpoint answered 200: the answer has no access_token"},
		{"another token type", 200, `{"access_token": "BODY-LEAK", "token_type": "mac"}`, "oauth2 token endpoint answered 200: the token_type is not Bearer"},
		{"token with a newline", 200, `{"access_token": "BODY-LEAK\n", "token_type": "bearer"}`, "oauth2 token endpoint answered 200: the access_token cannot be sent in an HTTP header"},
		{"too long", 200, `{"access_token": "` + strings.Repeat("x", MaxTokenAnswer) + `"}`, "oauth2 token endpoint answered 200: answer longer than 65536 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTokenServer(t)
			ts.set(func(ts *tokenServer) { ts.answer = func(int) (int, string) { return tc.status, tc.body } })
			s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
			res := oauthCall(s, "c", ts.secrets())
			if res.Err == nil || res.Err.Error() != tc.reason || res.Status != 0 || res.Forbidden {
				t.Fatalf("result %+v, want the error %q, no status, not forbidden", res, tc.reason)
			}
			a := Classify(event.OneWay, res)
			if a.Verdict != Retry || strings.Contains(a.Reason, "BODY-LEAK") || strings.Contains(a.Reason, "s3cret") {
				t.Fatalf("answer %+v, want Retry without the body or the secret", a)
			}
			if n := ts.calls.Load(); n != 0 {
				t.Fatalf("the webhook got %d calls, want 0", n)
			}
		})
	}
	t.Run("no answer", func(t *testing.T) {
		s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
		sec := event.HTTPSSecrets{URL: "http://127.0.0.1:1/hook", OAuth2: &event.OAuth2{TokenURL: "http://127.0.0.1:1/token?key=s3cret",
			ClientID: "i", ClientSecret: "s3cret"}}
		res := oauthCall(s, "c", sec)
		if res.Err == nil || !strings.HasPrefix(res.Err.Error(), "oauth2 token endpoint: ") ||
			strings.Contains(res.Err.Error(), "s3cret") || Classify(event.OneWay, res).Verdict != Retry {
			t.Fatalf("result %+v, want a retryable token endpoint error without the URL", res)
		}
	})
}

// TestOAuth2TokenURLGuarded: the token URL is judged by the network policy like a webhook URL
// (SPEC §6): refused, the attempt fails for good and the endpoint is never reached.
func TestOAuth2TokenURLGuarded(t *testing.T) {
	ts := newTokenServer(t)
	u, _ := url.Parse(ts.srv.URL)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true}})
	for _, tokenURL := range []string{
		ts.srv.URL + "/token",                         // 127.0.0.1, judged in the URL
		"http://localhost:" + u.Port() + "/token",     // judged after resolution
		"http://[::ffff:127.0.0.1]:" + u.Port() + "/", // in another spelling
		"ftp://auth.example.com/token",
	} {
		sec := event.HTTPSSecrets{URL: "http://hooks.example.com/hook",
			OAuth2: &event.OAuth2{TokenURL: tokenURL, ClientID: "i", ClientSecret: "s"}}
		res := oauthCall(s, "c", sec)
		if !res.Forbidden || res.Err == nil || !strings.HasPrefix(res.Err.Error(), "oauth2 token endpoint: ") {
			t.Errorf("%s: got %+v, want Forbidden by the guard", tokenURL, res)
		}
		if a := Classify(event.OneWay, res); a.Verdict != Refused {
			t.Errorf("%s: verdict %v, want Refused", tokenURL, a.Verdict)
		}
	}
	if n := ts.fetches.Load(); n != 0 {
		t.Fatalf("the token endpoint got %d requests, want 0", n)
	}
}

// TestOAuth2WaitBoundedByCall: a call waits for a slow token endpoint no longer than its own
// context; another call still gets the token of that fetch.
func TestOAuth2WaitBoundedByCall(t *testing.T) {
	ts := newTokenServer(t)
	ts.set(func(ts *tokenServer) { ts.delay = 300 * time.Millisecond })
	s := oauthSender(&fakeClock{t: time.Unix(1e9, 0)})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res := s.Send(ctx, Call{ConnectionKey: "c", Secrets: ts.secrets(), WebhookID: "msg_1"})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "oauth2 token endpoint: timeout") {
		t.Fatalf("result %+v, want a token endpoint timeout", res)
	}
	if res := oauthCall(s, "c", ts.secrets()); res.Status != http.StatusOK || ts.fetches.Load() != 1 {
		t.Fatalf("next call %+v after %d fetches, want 200 after the one fetch", res, ts.fetches.Load())
	}
}
