package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

type item struct {
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Order     int    `json:"order"`
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		strict     bool
		wantStatus int
		wantLoc    string
	}{
		{"ok", `{"name":"a"}`, true, 0, ""},
		{"unknown lenient", `{"name":"a","x":1}`, false, 0, ""},
		{"unknown strict", `{"name":"a","x":1}`, true, 422, `["body","x"]`},
		{"wrong type", `{"order":"one"}`, true, 422, `["body","order"]`},
		{"malformed", `{"name":`, true, 400, ""},
		{"trailing", `{"name":"a"} {}`, true, 400, ""},
		{"empty", ``, true, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v item
			err := Unmarshal([]byte(tt.body), &v, tt.strict, "body")
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || he.Status != tt.wantStatus {
				t.Fatalf("err = %v, want status %d", err, tt.wantStatus)
			}
			if tt.wantLoc != "" {
				loc, _ := json.Marshal(he.Detail.([]FieldError)[0].Loc)
				if string(loc) != tt.wantLoc {
					t.Fatalf("loc = %s, want %s", loc, tt.wantLoc)
				}
			}
		})
	}
}

func TestDecodeTooLarge(t *testing.T) {
	body := `{"name":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	var v item
	var he *Error
	if err := Decode(r, &v, true); !errors.As(err, &he) || he.Status != 413 {
		t.Fatalf("err = %v, want 413", err)
	}
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.ContentLength = -1 // chunked: the size is only known by reading
	if err := Decode(r, &v, true); !errors.As(err, &he) || he.Status != 413 {
		t.Fatalf("chunked err = %v, want 413", err)
	}
}

type clients map[string]bool

func (c clients) ClientExists(_ context.Context, id string) (bool, error) { return c[id], nil }

func TestRequireAndMiddleware(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, _ := token.NewSealer(key)
	good, _ := sealer.Seal(&token.AccessClaims{ClientID: "c1", Scopes: []string{"policy:read"}}, time.Hour)
	gone, _ := sealer.Seal(&token.AccessClaims{ClientID: "deleted", Scopes: []string{"policy:read"}}, time.Hour)
	wrongScope, _ := sealer.Seal(&token.AccessClaims{ClientID: "c1", Scopes: []string{"policy:delete"}}, time.Hour)
	expired, _ := sealer.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }).
		Seal(&token.AccessClaims{ClientID: "c1", Scopes: []string{"policy:read"}}, time.Hour)

	auth := NewAuthorizer(sealer, clients{"c1": true})
	r := mux.NewRouter()
	r.Use(Middleware(zerolog.Nop(), NewMetrics(prometheus.NewRegistry())))
	r.HandleFunc("/x", auth.Require("policy:read", func(w http.ResponseWriter, r *http.Request) {
		c, _ := ClaimsFrom(r.Context())
		WriteJSON(w, 200, map[string]string{"client": c.ClientID})
	}))
	r.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })

	tests := []struct {
		name   string
		path   string
		auth   string
		status int
		detail string
	}{
		{"no header", "/x", "", 401, "Failed to authenticate"},
		{"basic", "/x", "Basic abc", 401, "Failed to authenticate"},
		{"garbage", "/x", "Bearer garbage", 403, "Not Authorized for this action"},
		{"expired", "/x", "Bearer " + expired, 403, "Not Authorized for this action"},
		{"wrong scope", "/x", "Bearer " + wrongScope, 403, "Not Authorized for this action"},
		{"deleted client", "/x", "Bearer " + gone, 403, "Not Authorized for this action"},
		{"ok", "/x", "Bearer " + good, 200, ""},
		{"panic", "/panic", "", 500, "Internal server error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			req.Header.Set(HeaderRequestID, "req-123")
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			if got := rec.Header().Get(HeaderRequestID); got != "req-123" {
				t.Fatalf("X-Request-ID = %q, want echo", got)
			}
			if tt.status == 401 && rec.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Fatal("401 without WWW-Authenticate: Bearer")
			}
			if tt.detail != "" {
				var body struct{ Detail string }
				_ = json.Unmarshal(rec.Body.Bytes(), &body)
				if body.Detail != tt.detail {
					t.Fatalf("detail = %q, want %q", body.Detail, tt.detail)
				}
			}
		})
	}
	// A generated request id when none (or an invalid one) is given.
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set(HeaderRequestID, "bad id with spaces")
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if got := rec.Header().Get(HeaderRequestID); got == "" || got == "bad id with spaces" {
		t.Fatalf("X-Request-ID = %q, want a generated id", got)
	}
}

// TestLogsCarryRequestID pins SPEC §1: the request id of a request is on its log lines, both the
// access log and what a handler logs through the request's context.
func TestLogsCarryRequestID(t *testing.T) {
	var logs strings.Builder
	r := mux.NewRouter()
	r.Use(Middleware(zerolog.New(&logs), nil))
	r.HandleFunc("/x", func(w http.ResponseWriter, r *http.Request) {
		zerolog.Ctx(r.Context()).Info().Msg("handler line")
		WriteJSON(w, 200, nil)
	})
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set(HeaderRequestID, "req-log-1")
	r.ServeHTTP(httptest.NewRecorder(), req)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines = %q, want the handler's and the access log's", lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, `"request_id":"req-log-1"`) {
			t.Errorf("log line %s lacks the request id", l)
		}
	}
}
