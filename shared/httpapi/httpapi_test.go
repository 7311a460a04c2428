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

// Base is embedded untagged in body: its fields are promoted, as encoding/json does.
type Base struct {
	ID string `json:"id"`
}

type inner struct {
	Email *string `json:"email"`
}

type body struct {
	Base
	Name    string            `json:"name"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Inner   *inner            `json:"inner"`
	Items   []item            `json:"items"`
	Extra   json.RawMessage   `json:"extra"`
	Any     any               `json:"any"`
	Skipped string            `json:"-"`
	GoName  string
}

func TestUnmarshal(t *testing.T) {
	const extra, dup = "extra fields not permitted", "duplicate field: each field may appear only once in an object"
	tests := []struct {
		name       string
		body       string
		strict     bool
		wantStatus int
		wantLoc    string
		wantMsg    string
	}{
		{"ok", `{"name":"a"}`, true, 0, "", ""},
		{"unknown lenient", `{"name":"a","x":1}`, false, 0, "", ""},
		{"unknown strict", `{"name":"a","x":1}`, true, 422, `["body","x"]`, extra},
		{"wrong type", `{"order":"one"}`, true, 422, `["body","order"]`, ""},
		{"malformed", `{"name":`, true, 400, "", ""},
		{"trailing value", `{"name":"a"} {}`, true, 400, "", ""},
		{"trailing brace", `{"name":"a"}}`, true, 400, "", ""},
		{"trailing bracket", `{"name":"a"}]`, true, 400, "", ""},
		{"trailing brace lenient", `{"name":"a"}}`, false, 400, "", ""},
		{"trailing whitespace", "{\"name\":\"a\"} \n\t", true, 0, "", ""},
		{"empty", ``, true, 400, "", ""},
		{"mis-cased", `{"Name":"a"}`, true, 422, `["body","Name"]`, extra},
		{"mis-cased after the exact name", `{"name":"a","NAME":"b"}`, true, 422, `["body","NAME"]`, extra},
		{"folded by encoding/json", "{\"direction\":\"a\",\"ordeR\":1}", true, 422, `["body","ordeR"]`, extra},
		{"unicode fold (long s)", "{\"name\":\"a\",\"direction\":\"b\",\"order\":1,\"nameſ\":1}", true, 422, `["body","nameſ"]`, extra},
		{"escaped exact name", `{"n\u0061me":"a"}`, true, 0, "", ""},
		{"duplicate", `{"name":"a","name":"b"}`, true, 422, `["body","name"]`, dup},
		{"duplicate lenient", `{"name":"a","name":"b"}`, false, 0, "", ""},
		{"duplicate by escape", `{"name":"a","n\u0061me":"b"}`, true, 422, `["body","name"]`, dup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v item
			checkUnmarshal(t, tt.body, &v, tt.strict, tt.wantStatus, tt.wantLoc, tt.wantMsg)
		})
	}
}

// TestUnmarshalNested pins the strict rules below the top level: nested structs, list items,
// maps and untyped values, embedded fields, and json.RawMessage left alone.
func TestUnmarshalNested(t *testing.T) {
	const extra, dup = "extra fields not permitted", "duplicate field: each field may appear only once in an object"
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantLoc    string
		wantMsg    string
	}{
		{"all fields", `{"id":"1","name":"n","url":"u","headers":{"X-A":"1","x-a":"2"},"inner":{"email":"e"},` +
			`"items":[{"name":"a"},{"order":2}],"extra":{"Any":1,"Any":2},"any":{"a":[{"b":1}]},"GoName":"g"}`, 0, "", ""},
		{"promoted field mis-cased", `{"ID":"1"}`, 422, `["body","ID"]`, extra},
		{"embedded struct name is not a field", `{"Base":{"id":"1"}}`, 422, `["body","Base"]`, extra},
		{"json:\"-\" field", `{"Skipped":"x"}`, 422, `["body","Skipped"]`, extra},
		{"untagged field by Go name only", `{"goname":"g"}`, 422, `["body","goname"]`, extra},
		{"url mis-cased", `{"URL":"a","Url":"b"}`, 422, `["body","URL"]`, extra},
		{"nested mis-cased", `{"inner":{"Email":"e"}}`, 422, `["body","inner","Email"]`, extra},
		{"nested duplicate", `{"inner":{"email":"a","email":"b"}}`, 422, `["body","inner","email"]`, dup},
		{"list item unknown", `{"items":[{"name":"a"},{"nme":"b"}]}`, 422, `["body","items",1,"nme"]`, extra},
		{"list item duplicate", `{"items":[{"order":1,"order":2}]}`, 422, `["body","items",0,"order"]`, dup},
		{"map duplicate", `{"headers":{"X-A":"1","X-A":"2"}}`, 422, `["body","headers","X-A"]`, dup},
		{"map keys are free", `{"headers":{"anything":"1","ANYTHING":"2"}}`, 0, "", ""},
		{"untyped duplicate", `{"any":[{"a":1,"a":2}]}`, 422, `["body","any",0,"a"]`, dup},
		{"raw message not looked into", `{"extra":{"x":1,"x":2,"X":3}}`, 0, "", ""},
		{"raw message still well-formed", `{"extra":{"x":}}`, 400, "", ""},
		{"wrong shape is a type error", `{"inner":[{"Email":1}]}`, 422, `["body","inner"]`, ""},
		{"first problem wins", `{"a":1,"name":"x","name":"y"}`, 422, `["body","a"]`, extra},
		{"syntax error after a field problem", `{"a":1,"name":}`, 400, "", ""},
		{"top-level duplicate", `{"name":"a","url":"u","name":"b"}`, 422, `["body","name"]`, dup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v body
			checkUnmarshal(t, tt.body, &v, true, tt.wantStatus, tt.wantLoc, tt.wantMsg)
		})
	}
}

// TestUnmarshalLocPrefix pins that loc starts with the caller's prefix (a list item's index).
func TestUnmarshalLocPrefix(t *testing.T) {
	var v item
	err := Unmarshal([]byte(`{"name":"a","name":"b"}`), &v, true, "body", 3)
	var he *Error
	if !errors.As(err, &he) || he.Status != 422 {
		t.Fatalf("err = %v, want 422", err)
	}
	if loc, _ := json.Marshal(he.Detail.([]FieldError)[0].Loc); string(loc) != `["body",3,"name"]` {
		t.Fatalf("loc = %s, want [\"body\",3,\"name\"]", loc)
	}
}

// TestUnmarshalRecursive pins that recursive types (through pointers and slices) are checked at
// every depth and do not loop.
func TestUnmarshalRecursive(t *testing.T) {
	type node struct {
		Name     string  `json:"name"`
		Next     *node   `json:"next"`
		Children []*node `json:"children"`
	}
	var v node
	checkUnmarshal(t, `{"name":"a","next":{"name":"b","children":[{"name":"c"}]}}`, &v, true, 0, "", "")
	checkUnmarshal(t, `{"next":{"children":[{"Name":"c"}]}}`, &v, true, 422, `["body","next","children",0,"Name"]`, "")
	type selfPointer *selfPointer
	var p selfPointer
	checkUnmarshal(t, `null`, &p, true, 0, "", "")
}

func checkUnmarshal(t *testing.T, in string, dst any, strict bool, wantStatus int, wantLoc, wantMsg string) {
	t.Helper()
	err := Unmarshal([]byte(in), dst, strict, "body")
	if wantStatus == 0 {
		if err != nil {
			t.Fatalf("Unmarshal(%s): err = %v, want nil", in, err)
		}
		return
	}
	var he *Error
	if !errors.As(err, &he) || he.Status != wantStatus {
		t.Fatalf("Unmarshal(%s): err = %v, want status %d", in, err, wantStatus)
	}
	if wantLoc == "" {
		return
	}
	fe := he.Detail.([]FieldError)[0]
	if loc, _ := json.Marshal(fe.Loc); string(loc) != wantLoc {
		t.Fatalf("Unmarshal(%s): loc = %s, want %s", in, loc, wantLoc)
	}
	if wantMsg != "" && fe.Msg != wantMsg {
		t.Fatalf("Unmarshal(%s): msg = %q, want %q", in, fe.Msg, wantMsg)
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
