package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

type connResource struct {
	Key               string  `json:"key"`
	Name              string  `json:"name"`
	Description       *string `json:"description"`
	ConnectionType    string  `json:"connection_type"`
	Access            string  `json:"access"`
	Disabled          bool    `json:"disabled"`
	DisabledAt        *string `json:"disabled_at"`
	CreatedAt         string  `json:"created_at"`
	UpdatedAt         string  `json:"updated_at"`
	LastTestTimestamp *string `json:"last_test_timestamp"`
	LastTestSucceeded *bool   `json:"last_test_succeeded"`
}

type bulkAnswer struct {
	Succeeded []connResource `json:"succeeded"`
	Failed    []struct {
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	} `json:"failed"`
}

func (e *env) connectionTotal() int {
	e.t.Helper()
	var page struct {
		Total int `json:"total"`
	}
	e.call(http.MethodGet, "/api/v1/connection", nil, http.StatusOK, &page)
	return page.Total
}

func TestConnectionUpsert(t *testing.T) {
	e := newEnv(t, envOptions{})
	var ans bulkAnswer
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Poke Snowflake Webhook", "connection_type": "https", "access": "read"},
		{"name": "Warehouse", "key": "wh", "connection_type": "snowflake", "access": "write", "description": "the DWH"},
	}, http.StatusOK, &ans)
	if len(ans.Succeeded) != 2 || len(ans.Failed) != 0 || ans.Succeeded[0].Key != "poke_snowflake_webhook" {
		t.Fatalf("create: got %+v, want two created, the first keyed poke_snowflake_webhook", ans)
	}
	if c := ans.Succeeded[1]; c.Description == nil || *c.Description != "the DWH" || c.Disabled || c.DisabledAt != nil || c.CreatedAt == "" {
		t.Fatalf("resource: got %+v", c)
	}

	t.Run("update by key, disabling", func(t *testing.T) {
		var ans bulkAnswer
		e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
			{"name": "Warehouse 2", "key": "wh", "connection_type": "snowflake", "access": "read", "disabled": true},
		}, http.StatusOK, &ans)
		if len(ans.Succeeded) != 1 || ans.Succeeded[0].Name != "Warehouse 2" || !ans.Succeeded[0].Disabled || ans.Succeeded[0].DisabledAt == nil {
			t.Fatalf("update: got %+v, want renamed and disabled with disabled_at", ans)
		}
		var c connResource
		e.call(http.MethodGet, "/api/v1/connection/wh", nil, http.StatusOK, &c)
		if c.Name != "Warehouse 2" || c.Access != "read" || !c.Disabled {
			t.Fatalf("GET after update: got %+v", c)
		}
	})

	t.Run("name taken by another key fails that item only", func(t *testing.T) {
		var ans bulkAnswer
		e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
			{"name": "Warehouse 2", "key": "wh2", "connection_type": "https", "access": "read"},
			{"name": "Fine", "connection_type": "https", "access": "read"},
		}, http.StatusOK, &ans)
		if len(ans.Succeeded) != 1 || ans.Succeeded[0].Key != "fine" || len(ans.Failed) != 1 {
			t.Fatalf("got %+v, want fine created and wh2 failed", ans)
		}
		f := ans.Failed[0]
		if !strings.HasPrefix(f.Message, "Key wh2 already exists in ConnectionConfig. ") {
			t.Fatalf("message: got %q", f.Message)
		}
		want := map[string]any{"name": "Warehouse 2", "key": "wh2", "connection_type": "https", "access": "read", "disabled": false, "description": nil}
		if fmt.Sprint(f.Data) != fmt.Sprint(want) {
			t.Fatalf("data: got %v, want %v", f.Data, want)
		}
	})

	many := []map[string]any{}
	for i := range 51 {
		many = append(many, map[string]any{"name": fmt.Sprintf("C%d", i), "connection_type": "https", "access": "read"})
	}
	bad := []struct {
		name   string
		body   any
		status int
	}{
		{"secrets field", []map[string]any{{"name": "S", "connection_type": "https", "access": "read", "secrets": map[string]any{"url": "https://x"}}}, 422},
		{"51 items", many, 422},
		{"unknown field", []map[string]any{{"name": "S", "connection_type": "https", "access": "read", "colour": "red"}}, 422},
		{"bad key", []map[string]any{{"name": "S", "key": "no spaces", "connection_type": "https", "access": "read"}}, 422},
		{"name without a key character", []map[string]any{{"name": "!!!", "connection_type": "https", "access": "read"}}, 422},
		{"bad type", []map[string]any{{"name": "S", "connection_type": "ftp", "access": "read"}}, 422},
		{"bad access", []map[string]any{{"name": "S", "connection_type": "https", "access": "all"}}, 422},
		{"missing access", []map[string]any{{"name": "S", "connection_type": "https"}}, 422},
		{"one bad item rejects all", []map[string]any{{"name": "Good", "connection_type": "https", "access": "read"}, {"name": "S", "connection_type": "https"}}, 422},
		{"wrong type of value", []map[string]any{{"name": 5, "connection_type": "https", "access": "read"}}, 422},
		{"malformed JSON", `[{"name": "S",`, 400},
		{"trailing data", `[] []`, 400},
		{"trailing bracket", `[{"name": "S", "connection_type": "https", "access": "read"}]]`, 400},
		{"mis-cased field", `[{"Name": "S", "connection_type": "https", "access": "read"}]`, 422},
		{"duplicate field", `[{"name": "S", "name": "T", "connection_type": "https", "access": "read"}]`, 422},
		{"duplicate field in a later item", `[{"name": "S", "connection_type": "https", "access": "read"},` +
			`{"name": "T", "connection_type": "https", "access": "read", "access": "write"}]`, 422},
		{"dot key", []map[string]any{{"name": "S", "key": ".", "connection_type": "https", "access": "read"}}, 422},
		{"dot-dot key", []map[string]any{{"name": "S", "key": "..", "connection_type": "https", "access": "read"}}, 422},
		{"leading dot key", []map[string]any{{"name": "S", "key": ".env", "connection_type": "https", "access": "read"}}, 422},
		{"trailing dot key", []map[string]any{{"name": "S", "key": "a.", "connection_type": "https", "access": "read"}}, 422},
		{"dot-dot inside key", []map[string]any{{"name": "S", "key": "a..b", "connection_type": "https", "access": "read"}}, 422},
		{"slash key", []map[string]any{{"name": "S", "key": "a/b", "connection_type": "https", "access": "read"}}, 422},
		{"percent key", []map[string]any{{"name": "S", "key": "a%2Fb", "connection_type": "https", "access": "read"}}, 422},
		{"backslash key", []map[string]any{{"name": "S", "key": `a\b`, "connection_type": "https", "access": "read"}}, 422},
		{"over 1 MiB", `[{"name": "` + strings.Repeat("n", 1<<20) + `"}]`, 413},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := e.connectionTotal()
			status, b, _ := e.raw(http.MethodPatch, "/api/v1/connection", e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%.300s), want %d", status, b, tc.status)
			}
			if status == 422 {
				var d struct {
					Detail []struct {
						Loc []any `json:"loc"`
					} `json:"detail"`
				}
				if err := json.Unmarshal(b, &d); err != nil || len(d.Detail) == 0 || d.Detail[0].Loc[0] != "body" {
					t.Fatalf("422 body: got %s, want a pydantic-like detail list", b)
				}
			}
			if after := e.connectionTotal(); after != before {
				t.Fatalf("connections: got %d after a rejected request, want %d", after, before)
			}
		})
	}

	// The 422 answers of the strict body and key rules name the field and say what is wrong.
	details := []struct{ name, body, loc, msg string }{
		{"duplicate", `[{"name": "S", "connection_type": "https", "access": "read"},` +
			`{"name": "T", "connection_type": "https", "access": "read", "access": "write"}]`,
			`["body",1,"access"]`, "duplicate field: each field may appear only once in an object"},
		{"mis-cased", `[{"name": "S", "Connection_Type": "https", "access": "read"}]`,
			`["body",0,"Connection_Type"]`, "extra fields not permitted"},
		{"dots", `[{"name": "S", "key": "..", "connection_type": "https", "access": "read"}]`,
			`["body",0,"key"]`, "FidesKey must not start or end with '.' or contain '..'."},
	}
	for _, tc := range details {
		t.Run("detail of "+tc.name, func(t *testing.T) {
			status, b, _ := e.raw(http.MethodPatch, "/api/v1/connection", e.root, tc.body)
			var d struct {
				Detail []struct {
					Loc json.RawMessage `json:"loc"`
					Msg string          `json:"msg"`
				} `json:"detail"`
			}
			if err := json.Unmarshal(b, &d); status != 422 || err != nil || len(d.Detail) != 1 ||
				string(d.Detail[0].Loc) != tc.loc || d.Detail[0].Msg != tc.msg {
				t.Fatalf("got %d %s, want 422 at %s: %s", status, b, tc.loc, tc.msg)
			}
		})
	}
}

func TestConnectionList(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Bravo", "key": "b_hook", "connection_type": "https", "access": "read"},
		{"name": "Alpha", "key": "a_db", "connection_type": "postgres", "access": "write", "description": "Main Customer DB"},
		{"name": "Charlie", "key": "c_db", "connection_type": "mysql", "access": "write", "disabled": true},
		{"name": "Delta (1+1)", "key": "d", "connection_type": "https", "access": "read"},
	}, http.StatusOK, nil)
	tests := []struct {
		query string
		want  []string
		total int
	}{
		{"", []string{"a_db", "b_hook", "c_db", "d"}, 4},
		{"?page=2&size=3", []string{"d"}, 4},
		{"?search=CUSTOMER", []string{"a_db"}, 1},
		{"?search=hOoK", []string{"b_hook"}, 1},
		{"?search=charl", []string{"c_db"}, 1},
		{"?search=(1%2B1)", []string{"d"}, 1},
		{"?search=.*", []string{}, 0},
		{"?connection_type=https", []string{"b_hook", "d"}, 2},
		{"?connection_type=postgres&connection_type=mysql", []string{"a_db", "c_db"}, 2},
		{"?disabled=true", []string{"c_db"}, 1},
		{"?disabled=false&connection_type=mysql", []string{}, 0},
		{"?search=db&disabled=false", []string{"a_db"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			var page struct {
				Items []connResource `json:"items"`
				Total int            `json:"total"`
				Page  int            `json:"page"`
				Size  int            `json:"size"`
			}
			e.call(http.MethodGet, "/api/v1/connection"+tc.query, nil, http.StatusOK, &page)
			got := []string{}
			for _, c := range page.Items {
				got = append(got, c.Key)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || page.Total != tc.total {
				t.Fatalf("got %v total %d, want %v total %d", got, page.Total, tc.want, tc.total)
			}
		})
	}
	for _, q := range []string{"?size=0", "?size=101", "?page=0", "?page=x", "?connection_type=ftp", "?disabled=maybe"} {
		t.Run("bad "+q, func(t *testing.T) {
			if status, b, _ := e.raw(http.MethodGet, "/api/v1/connection"+q, e.root, nil); status != 422 {
				t.Fatalf("got %d %s, want 422", status, b)
			}
		})
	}
}

func TestConnectionGetAndDelete(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	e.https("spare", "https://example.com", "auth")
	e.policy("p1")
	e.policy("p2")
	e.call(http.MethodPut, "/api/v1/policy/p1/webhook/pre_execution", []any{hook("w1", "W1", "one_way", "hooks")}, 200, nil)
	e.call(http.MethodPut, "/api/v1/policy/p2/webhook/post_execution", []any{hook("w2", "W2", "two_way", "hooks")}, 200, nil)

	status, b, _ := e.raw(http.MethodGet, "/api/v1/connection/ghost", e.root, nil)
	if status != 404 || detail(t, b) != "No connection configuration found with key 'ghost'." {
		t.Fatalf("unknown: got %d %s", status, b)
	}
	status, b, _ = e.raw(http.MethodDelete, "/api/v1/connection/hooks", e.root, nil)
	if status != http.StatusConflict || !strings.Contains(detail(t, b), "p1.pre_execution.w1") || !strings.Contains(detail(t, b), "p2.post_execution.w2") {
		t.Fatalf("in use: got %d %s, want 409 naming p1.pre_execution.w1 and p2.post_execution.w2", status, b)
	}
	e.call(http.MethodGet, "/api/v1/connection/hooks", nil, http.StatusOK, nil)
	var ans bulkAnswer
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Connection hooks", "key": "hooks", "connection_type": "postgres", "access": "read"},
	}, http.StatusOK, &ans)
	if len(ans.Failed) != 1 || !strings.Contains(ans.Failed[0].Message, "must stay of type https") {
		t.Fatalf("type change of a used connection: got %+v, want it failed", ans)
	}

	e.call(http.MethodPut, "/api/v1/policy/p1/webhook/pre_execution", []any{hook("w1", "W1", "one_way", "spare")}, 200, nil)
	e.call(http.MethodDelete, "/api/v1/policy/p2", nil, http.StatusNoContent, nil)
	e.call(http.MethodDelete, "/api/v1/connection/hooks", nil, http.StatusNoContent, nil)
	e.call(http.MethodDelete, "/api/v1/connection/hooks", nil, http.StatusNotFound, nil)
	e.call(http.MethodGet, "/api/v1/connection/hooks", nil, http.StatusNotFound, nil)
}

func TestSecretsValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "PG", "key": "pg", "connection_type": "postgres", "access": "read"},
	}, http.StatusOK, nil)
	tests := []struct {
		name, key, query string
		body             any
		status           int
	}{
		{"valid", "hooks", "?verify=false", map[string]any{"url": "https://example.com/h", "authorization": "a", "headers": map[string]string{"X-Api-Key": "k"}, "signing_secret": "s"}, 200},
		{"plain http", "hooks", "?verify=false", map[string]any{"url": "http://example.com", "authorization": "a"}, 422},
		{"not a URL", "hooks", "?verify=false", map[string]any{"url": "example.com/path", "authorization": "a"}, 422},
		{"user info", "hooks", "?verify=false", map[string]any{"url": "https://u:p@example.com", "authorization": "a"}, 422},
		{"missing authorization", "hooks", "?verify=false", map[string]any{"url": "https://example.com"}, 422},
		{"unknown field", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "password": "x"}, 422},
		{"bad header name", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "headers": map[string]string{"Bad Header": "v"}}, 422},
		{"header value with newline", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "headers": map[string]string{"X-A": "v\r\nX-B: w"}}, 422},
		{"header value with a control character", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "headers": map[string]string{"X-Tenant": "a\x01b"}}, 422},
		{"header value with DEL", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "headers": map[string]string{"X-Tenant": "a\x7f"}}, 422},
		{"header name twice in two cases", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a", "headers": map[string]string{"X-A": "1", "x-a": "2"}}, 422},
		{"authorization with a control character", "hooks", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "Bearer a\x01"}, 422},
		{"duplicate header key", "hooks", "?verify=false", `{"url": "https://example.com", "authorization": "a", "headers": {"X-A": "1", "X-A": "2"}}`, 422},
		{"mis-cased field", "hooks", "?verify=false", `{"URL": "https://example.com", "authorization": "a"}`, 422},
		{"duplicate field", "hooks", "?verify=false", `{"url": "https://example.com", "url": "https://example.org", "authorization": "a"}`, 422},
		{"trailing brace", "hooks", "?verify=false", `{"url": "https://example.com", "authorization": "a"}}`, 400},
		{"bad verify", "hooks", "?verify=perhaps", map[string]any{"url": "https://example.com", "authorization": "a"}, 422},
		{"other connection type", "pg", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a"}, 422},
		{"unknown connection", "ghost", "?verify=false", map[string]any{"url": "https://example.com", "authorization": "a"}, 404},
		{"malformed", "hooks", "?verify=false", `{"url": `, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.storedSecrets(tc.key)
			status, b, _ := e.raw(http.MethodPut, "/api/v1/connection/"+tc.key+"/secret"+tc.query, e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%s), want %d", status, b, tc.status)
			}
			if status == 200 {
				var out map[string]any
				_ = json.Unmarshal(b, &out)
				if out["msg"] != "Secrets updated for ConnectionConfig with key: hooks." || out["test_status"] != nil || out["failure_reason"] != nil {
					t.Fatalf("answer: got %s", b)
				}
				return
			}
			if after := e.storedSecrets(tc.key); after != before {
				t.Fatal("a rejected PUT changed the stored secrets")
			}
		})
	}
}

// TestSecretsVerifyFails checks verify=true against a listener that does not speak TLS, and
// against a loopback address while private networks are not allowed.
func TestSecretsVerifyFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.0 400 not tls\r\n\r\n"))
			_ = c.Close()
		}
	}()
	url := "https://" + ln.Addr().String() + "/hook"
	tests := []struct {
		name         string
		allowPrivate bool
		reason       string
	}{
		{"plain TCP listener", true, "tls handshake"},
		{"loopback refused", false, "not public"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{allowPrivate: tc.allowPrivate})
			e.https("hooks", "https://example.com", "auth")
			var out map[string]any
			e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=true",
				map[string]any{"url": url, "authorization": "auth"}, http.StatusOK, &out)
			reason, _ := out["failure_reason"].(string)
			if out["test_status"] != "failed" || !strings.Contains(reason, tc.reason) {
				t.Fatalf("got %v, want test_status failed with a reason containing %q", out, tc.reason)
			}
			var c connResource
			e.call(http.MethodGet, "/api/v1/connection/hooks", nil, http.StatusOK, &c)
			if c.LastTestSucceeded == nil || *c.LastTestSucceeded || c.LastTestTimestamp == nil {
				t.Fatalf("recorded test: got %+v, want last_test_succeeded false with a timestamp", c)
			}
		})
	}
}
