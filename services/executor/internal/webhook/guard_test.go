package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
)

// receiver is a loopback HTTP server that counts its calls; /redirect answers 307 to /target.
func receiver(t *testing.T) (srv *httptest.Server, calls *atomic.Int32, port string) {
	t.Helper()
	calls = &atomic.Int32{}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/target", http.StatusTemporaryRedirect)
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return srv, calls, u.Port()
}

func send(s *Sender, rawURL string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Send(ctx, Call{Secrets: event.HTTPSSecrets{URL: rawURL}, WebhookID: "msg_1"})
}

// TestSenderRefusesWhatTheGuardRefuses sends to a loopback receiver named in the ways the guard
// refuses with private networks refused (SPEC §6): every call is Forbidden and none arrives.
func TestSenderRefusesWhatTheGuardRefuses(t *testing.T) {
	_, calls, port := receiver(t)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true}})
	allowList := NewSender(Config{Timeout: 2 * time.Second,
		Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true, AllowedHosts: []string{"hooks.example.com"}}})
	tests := []struct {
		sender *Sender
		url    string
		want   string // in the error
	}{
		{s, "http://127.0.0.1:" + port + "/", "not public"},
		{s, "http://localhost:" + port + "/", "not public"}, // refused after DNS resolution
		{s, "http://2130706433:" + port + "/", "not public"},
		{s, "http://0x7f.1:" + port + "/", "not public"},
		{s, "http://[::ffff:127.0.0.1]:" + port + "/", "not public"},
		{s, "http://[::1%25lo]:" + port + "/", "zone"},
		{s, "http://08.0.0.1:" + port + "/", "cannot be judged"},
		{allowList, "http://localhost:" + port + "/", "WEBHOOK_ALLOWED_HOSTS"},
		{allowList, "http://127.0.0.1:" + port + "/", "WEBHOOK_ALLOWED_HOSTS"},
	}
	for _, tt := range tests {
		res := send(tt.sender, tt.url)
		if !res.Forbidden || res.Err == nil || !strings.Contains(res.Err.Error(), tt.want) {
			t.Errorf("%s: got %+v, want Forbidden with %q", tt.url, res, tt.want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the receiver got %d calls, want 0", n)
	}
}

// TestSenderIgnoresProxiesAndRedirects pins that the transport never uses the environment's proxy
// (HTTP_PROXY/HTTPS_PROXY: such a proxy would connect in the guard's place; WEBHOOK_PROXY_URL goes
// through the guard's dialer instead, TestSenderThroughProxy) and that a redirect is answered as
// it is, never followed.
func TestSenderIgnoresProxiesAndRedirects(t *testing.T) {
	srv, calls, _ := receiver(t)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true}})
	tr, ok := s.client.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("transport %T with Proxy set: want an *http.Transport with no proxy", s.client.Transport)
	}
	res := send(s, srv.URL+"/redirect")
	if res.Status != http.StatusTemporaryRedirect || calls.Load() != 1 {
		t.Fatalf("got status %d and %d calls, want 307 and 1 (the redirect not followed)", res.Status, calls.Load())
	}
}

// TestSenderRefusesInvalidHeaders sends secrets whose custom headers break RFC 9110 (stored before
// config refused them, D16): each call is refused for good, reaches no one and does not echo the
// value; a valid header is sent.
func TestSenderRefusesInvalidHeaders(t *testing.T) {
	srv, calls, _ := receiver(t)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true}})
	call := func(headers map[string]string) Result {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.Send(ctx, Call{Secrets: event.HTTPSSecrets{URL: srv.URL + "/", Headers: headers}, WebhookID: "msg_1"})
	}
	for _, h := range []map[string]string{
		{"X-Tenant": "S3CRET\x01b"},
		{"X-Tenant": "S3CRET\x7f"},
		{"X-Tenant": "S3CRET\x00"},
		{"Bad Name": "S3CRET"},
		{"X-Ünicode": "S3CRET"},
		{"": "S3CRET"},
	} {
		res := call(h)
		if !res.Forbidden || res.Err == nil || strings.Contains(res.Err.Error(), "S3CRET") {
			t.Errorf("%q: got %+v, want Forbidden without the value", h, res)
		}
		if a := Classify(event.OneWay, res); a.Verdict != Refused {
			t.Errorf("%q: verdict %v, want Refused (no retry)", h, a.Verdict)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the receiver got %d calls, want 0", n)
	}
	if res := call(map[string]string{"X-Tenant": "a b\tc"}); res.Status != http.StatusOK || calls.Load() != 1 {
		t.Fatalf("valid header: got %+v and %d calls, want 200 and 1", res, calls.Load())
	}
}
