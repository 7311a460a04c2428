package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		path   string
		want   Backend
		wantOK bool
	}{
		{"/api/v1/privacy-request", Callback, true},
		{"/api/v1/privacy-request/pri_1", Callback, true},
		{"/api/v1/privacy-request/pri_1/retry", Callback, true},
		{"/api/v1/privacy-request/retry", Callback, true},
		{"/api/v1/privacy-requests", Config, true},
		{"/api/v1/privacy-request-x/1", Config, true},
		{"/api/v1/oauth/token", Config, true},
		{"/api/v1/connection/crm/health", Config, true},
		{"/api/v1/policy/p/webhook/pre_execution", Config, true},
		{"/api/v1/openapi.json", Config, true},
		{"/api/v1/", "", false},
		{"/api/v1", "", false},
		{"/api/v2/policy", "", false},
		{"/privacy-request/pri_1/resume", "", false},
		{"/", "", false},
	}
	for _, tt := range tests {
		got, ok := Route(tt.path)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Route(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.wantOK)
		}
	}
}

// seen is what a fake backend received.
type seen struct {
	mu      sync.Mutex
	path    string
	query   string
	headers http.Header
	body    string
}

func backend(t *testing.T, name string, s *seen, answer func(w http.ResponseWriter)) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.path, s.query, s.headers, s.body = r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), string(b)
		s.mu.Unlock()
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Request-ID", r.Header.Get("X-Request-ID"))
		if answer != nil {
			answer(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status": "ok"}`)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func newTestRouter(t *testing.T, backends map[Backend]*url.URL) http.Handler {
	t.Helper()
	h, err := NewRouter(Deps{Log: zerolog.Nop(), Registry: prometheus.NewRegistry(), Backends: backends, Client: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestProxyForwardsToTheBackendOfTheRoute(t *testing.T) {
	var cfgSeen, cbSeen seen
	h := newTestRouter(t, map[Backend]*url.URL{
		Config:   backend(t, "config", &cfgSeen, nil),
		Callback: backend(t, "callback", &cbSeen, nil),
	})
	tests := []struct {
		method, path, wantBackend string
	}{
		{http.MethodGet, "/api/v1/privacy-request?status=paused&status=error", "callback"},
		{http.MethodPost, "/api/v1/privacy-request/pri_1/retry", "callback"},
		{http.MethodGet, "/api/v1/policy?size=100", "config"},
		{http.MethodPost, "/api/v1/oauth/token", "config"},
		{http.MethodPatch, "/api/v1/policy/p/webhook/pre_execution/a", "config"},
		// An id with a slash stays one path segment.
		{http.MethodGet, "/api/v1/privacy-request/a%2Fb", "callback"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(`{"order": 1}`))
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("X-Backend") != tt.wantBackend {
			t.Errorf("%s %s: %d from %q, want 200 from %q", tt.method, tt.path, rec.Code, rec.Header().Get("X-Backend"), tt.wantBackend)
			continue
		}
		s := &cfgSeen
		if tt.wantBackend == "callback" {
			s = &cbSeen
		}
		s.mu.Lock()
		u, _ := url.Parse(tt.path)
		if s.path != u.EscapedPath() || s.query != u.RawQuery || s.headers.Get("Authorization") != "Bearer tok" || s.body != `{"order": 1}` {
			t.Errorf("%s %s: backend saw path %q query %q auth %q body %q", tt.method, tt.path, s.path, s.query, s.headers.Get("Authorization"), s.body)
		}
		s.mu.Unlock()
	}
}

func TestProxyDropsHopByHopHeaders(t *testing.T) {
	var cfgSeen, cbSeen seen
	h := newTestRouter(t, map[Backend]*url.URL{
		Config: backend(t, "config", &cfgSeen, func(w http.ResponseWriter) {
			w.Header().Set("Connection", "X-Answer-Hop")
			w.Header().Set("X-Answer-Hop", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("Proxy-Authenticate", "Basic")
			w.Header().Set("Set-Cookie", "backend=1")
			w.Header().Set("Content-Security-Policy", "default-src *")
			w.Header().Set("X-Content-Type-Options", "sniff-away")
			_, _ = io.WriteString(w, "{}")
		}),
		Callback: backend(t, "callback", &cbSeen, nil),
	})
	req := httptest.NewRequest(http.MethodGet, "/api/v1/connection", nil)
	for k, v := range map[string]string{
		"Connection": "X-Custom-Hop", "X-Custom-Hop": "1", "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic abc",
		"Te": "trailers", "Upgrade": "websocket", "Proxy-Connection": "keep-alive", "Cookie": "session=1",
	} {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("status %d, want 200", rec.Code)
	}
	cfgSeen.mu.Lock()
	defer cfgSeen.mu.Unlock()
	for _, k := range []string{"X-Custom-Hop", "Keep-Alive", "Proxy-Authorization", "Upgrade", "Proxy-Connection", "Cookie"} {
		if v := cfgSeen.headers.Get(k); v != "" {
			t.Errorf("the backend got %s: %q, want it dropped", k, v)
		}
	}
	if v := cfgSeen.headers.Get("Connection"); v != "" && !strings.EqualFold(v, "close") && !strings.EqualFold(v, "keep-alive") {
		t.Errorf("the backend got Connection: %q", v)
	}
	for _, k := range []string{"X-Answer-Hop", "Keep-Alive", "Proxy-Authenticate", "Set-Cookie"} {
		if v := rec.Header().Get(k); v != "" {
			t.Errorf("the browser got %s: %q, want it dropped", k, v)
		}
	}
	if got := rec.Header().Values("Content-Security-Policy"); len(got) != 1 || got[0] != ContentSecurityPolicy {
		t.Errorf("Content-Security-Policy = %q, want only the console's", got)
	}
	if got := rec.Header().Values("X-Content-Type-Options"); len(got) != 1 || got[0] != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want only nosniff", got)
	}
	if got := rec.Header().Values("X-Request-ID"); len(got) != 1 || got[0] != cfgSeen.headers.Get("X-Request-ID") {
		t.Errorf("X-Request-ID = %q, want one, the one the backend got (%q)", got, cfgSeen.headers.Get("X-Request-ID"))
	}
}

func TestProxyUnreachableBackend(t *testing.T) {
	var cbSeen seen
	dead, _ := url.Parse("http://127.0.0.1:1")
	h := newTestRouter(t, map[Backend]*url.URL{Config: dead, Callback: backend(t, "callback", &cbSeen, nil)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/policy", nil))
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), `"detail"`) {
		t.Fatalf("got %d %s, want 502 with a detail", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "config") {
		t.Fatalf("/ready with config down: %d %s, want 503 naming config", rec.Code, rec.Body)
	}
}

func TestHeadersAndStatic(t *testing.T) {
	var cfgSeen, cbSeen seen
	h := newTestRouter(t, map[Backend]*url.URL{
		Config:   backend(t, "config", &cfgSeen, nil),
		Callback: backend(t, "callback", &cbSeen, nil),
	})
	tests := []struct {
		path       string
		wantStatus int
		wantType   string
	}{
		{"/", 200, "text/html; charset=utf-8"},
		{"/index.html", 200, "text/html; charset=utf-8"},
		{"/console.css", 200, "text/css; charset=utf-8"},
		{"/js/app.js", 200, "text/javascript; charset=utf-8"},
		{"/js/", 404, "application/json"},
		{"/js", 404, "application/json"},
		{"/nope.js", 404, "application/json"},
		{"/assets/index.html", 404, "application/json"},
		{"/api/v1/", 404, "application/json"},
		{"/health", 200, "application/json"},
		{"/ready", 200, "application/json"},
		{"/metrics", 200, ""},
		{"/api/v1/policy", 200, "application/json"},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.wantStatus {
			t.Errorf("GET %s: %d, want %d", tt.path, rec.Code, tt.wantStatus)
		}
		if tt.wantType != "" && rec.Header().Get("Content-Type") != tt.wantType {
			t.Errorf("GET %s: Content-Type %q, want %q", tt.path, rec.Header().Get("Content-Type"), tt.wantType)
		}
		want := map[string]string{
			"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		}
		for k, v := range want {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("GET %s: %s = %q, want %q", tt.path, k, got, v)
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/index.html", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Content-Security-Policy") == "" {
		t.Errorf("POST /index.html: %d (CSP %q), want 405 with the headers", rec.Code, rec.Header().Get("Content-Security-Policy"))
	}
}

// TestAssetsHaveNoInlineCode pins the CSP's promise: no inline script or style, no other origin.
func TestAssetsHaveNoInlineCode(t *testing.T) {
	files, err := loadAssets()
	if err != nil {
		t.Fatal(err)
	}
	for p, a := range files {
		text := string(a.body)
		for _, bad := range []string{"<style", " style=", "onclick=", "onload=", "javascript:", "http://", "https://", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
			if strings.Contains(text, bad) && !(bad == "https://" && strings.Contains(text, "placeholder: 'https://example.com/hook'")) {
				t.Errorf("%s contains %q", p, bad)
			}
		}
		if strings.HasSuffix(p, ".html") && strings.Count(text, "<script") != strings.Count(text, `<script type="module" src="/js/`) {
			t.Errorf("%s has a script that is not one of the console's modules", p)
		}
	}
}
