package httpapi_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// oauth2Secrets returns https secrets with oauth2 client credentials, mutated by change.
func oauth2Secrets(change func(s, o map[string]any)) map[string]any {
	o := map[string]any{"token_url": "https://auth.example.com/oauth/token", "client_id": "client-1",
		"client_secret": "client-SECRET-c1", "scopes": []string{"hooks:write", "read"}}
	s := map[string]any{"url": "https://example.com/h", "oauth2": o}
	if change != nil {
		change(s, o)
	}
	return s
}

// TestSecretsOAuth2Validation puts https secrets with oauth2 client credentials through the API
// (SPEC §2): valid ones are stored, every broken field is a 422 that names the field, echoes no
// secret and changes nothing.
func TestSecretsOAuth2Validation(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	tests := []struct {
		name   string
		body   any
		status int
		loc    string // the loc of the 422, joined by "."
	}{
		{"valid", oauth2Secrets(nil), 200, ""},
		{"valid without scopes", oauth2Secrets(func(_, o map[string]any) { delete(o, "scopes") }), 200, ""},
		{"valid with empty scopes and an empty authorization", oauth2Secrets(func(s, o map[string]any) {
			o["scopes"] = []string{}
			s["authorization"] = ""
		}), 200, ""},
		{"valid at the bounds", oauth2Secrets(func(_, o map[string]any) {
			o["client_id"] = strings.Repeat("i", 256)
			o["client_secret"] = strings.Repeat("s", 1024)
			scopes := make([]string, 32)
			for i := range scopes {
				scopes[i] = strings.Repeat("x", 128)
			}
			o["scopes"] = scopes
		}), 200, ""},
		{"token url on a private address is stored", oauth2Secrets(func(_, o map[string]any) {
			o["token_url"] = "https://127.0.0.1/token"
		}), 200, ""},
		{"oauth2 null needs authorization", oauth2Secrets(func(s, _ map[string]any) { s["oauth2"] = nil }), 422, "body.authorization"},
		{"missing token_url", oauth2Secrets(func(_, o map[string]any) { delete(o, "token_url") }), 422, "body.oauth2.token_url"},
		{"missing client_id", oauth2Secrets(func(_, o map[string]any) { delete(o, "client_id") }), 422, "body.oauth2.client_id"},
		{"empty client_secret", oauth2Secrets(func(_, o map[string]any) { o["client_secret"] = "" }), 422, "body.oauth2.client_secret"},
		{"empty object", oauth2Secrets(func(s, _ map[string]any) { s["oauth2"] = map[string]any{} }), 422, "body.oauth2.token_url"},
		{"token url not absolute", oauth2Secrets(func(_, o map[string]any) { o["token_url"] = "auth.example.com/token" }), 422, "body.oauth2.token_url"},
		{"token url with user info", oauth2Secrets(func(_, o map[string]any) {
			o["token_url"] = "https://client-SECRET-c1@auth.example.com/token"
		}), 422, "body.oauth2.token_url"},
		{"token url over http", oauth2Secrets(func(_, o map[string]any) { o["token_url"] = "http://auth.example.com/token" }), 422, "body.oauth2.token_url"},
		{"token url of another scheme", oauth2Secrets(func(_, o map[string]any) { o["token_url"] = "ftp://auth.example.com/token" }), 422, "body.oauth2.token_url"},
		{"client_id too long", oauth2Secrets(func(_, o map[string]any) { o["client_id"] = strings.Repeat("i", 257) }), 422, "body.oauth2.client_id"},
		{"client_secret too long", oauth2Secrets(func(_, o map[string]any) {
			o["client_secret"] = "client-SECRET-c1" + strings.Repeat("s", 1024)
		}), 422, "body.oauth2.client_secret"},
		{"too many scopes", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = make([]string, 33) }), 422, "body.oauth2.scopes"},
		{"scope too long", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = []string{"a", strings.Repeat("x", 129)} }), 422, "body.oauth2.scopes.1"},
		{"scope with a space", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = []string{"read write"} }), 422, "body.oauth2.scopes.0"},
		{"empty scope", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = []string{"read", ""} }), 422, "body.oauth2.scopes.1"},
		{"scope with a quote", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = []string{`a"b`} }), 422, "body.oauth2.scopes.0"},
		{"scopes not a list", oauth2Secrets(func(_, o map[string]any) { o["scopes"] = "read write" }), 422, "body.oauth2.scopes"},
		{"unknown key in oauth2", oauth2Secrets(func(_, o map[string]any) { o["audience"] = "x" }), 422, "body.oauth2.audience"},
		{"mis-cased key in oauth2", oauth2Secrets(func(_, o map[string]any) { o["Client_Secret"] = "client-SECRET-c1" }), 422, "body.oauth2.Client_Secret"},
		{"oauth2 not an object", oauth2Secrets(func(s, _ map[string]any) { s["oauth2"] = "client-SECRET-c1" }), 422, "body.oauth2"},
		{"authorization too", oauth2Secrets(func(s, _ map[string]any) { s["authorization"] = "Bearer a" }), 422, "body.oauth2"},
		{"Authorization header too", oauth2Secrets(func(s, _ map[string]any) {
			s["headers"] = map[string]string{"X-Tenant": "t", "authorization": "Bearer a"}
		}), 422, "body.headers.authorization"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.storedSecrets("hooks")
			status, b, _ := e.raw(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%s), want %d", status, b, tc.status)
			}
			if strings.Contains(string(b), "client-SECRET-c1") {
				t.Fatalf("the answer echoes the client secret: %s", b)
			}
			if status == http.StatusOK {
				if e.storedSecrets("hooks") == before {
					t.Fatal("an accepted PUT did not change the stored secrets")
				}
				return
			}
			if after := e.storedSecrets("hooks"); after != before {
				t.Fatal("a rejected PUT changed the stored secrets")
			}
			var out struct {
				Detail []struct {
					Loc []any  `json:"loc"`
					Msg string `json:"msg"`
				} `json:"detail"`
			}
			if err := json.Unmarshal(b, &out); err != nil || len(out.Detail) == 0 {
				t.Fatalf("422 body %s: want a detail list", b)
			}
			var locs []string
			for _, d := range out.Detail {
				var parts []string
				for _, p := range d.Loc {
					b, _ := json.Marshal(p)
					parts = append(parts, strings.Trim(string(b), `"`))
				}
				locs = append(locs, strings.Join(parts, "."))
			}
			if locs[0] != tc.loc {
				t.Fatalf("loc: got %v (%s), want %s first", locs, b, tc.loc)
			}
		})
	}
}

// TestSecretsOAuth2AllowHTTP: with WEBHOOK_ALLOW_HTTP a plain http token URL is accepted, as a
// plain http url is.
func TestSecretsOAuth2AllowHTTP(t *testing.T) {
	e := newEnv(t, envOptions{allowHTTP: true})
	e.https("hooks", "https://example.com", "auth")
	e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", oauth2Secrets(func(s, o map[string]any) {
		s["url"] = "http://example.com/h"
		o["token_url"] = "http://auth.example.com/token"
	}), http.StatusOK, nil)
}

// TestSecretsOAuth2NeverExposed stores oauth2 credentials and checks that no answer, log line,
// stored document or plan holds the client secret, and that the plan's sealed secrets open to
// them.
func TestSecretsOAuth2NeverExposed(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	e.policy("p")
	e.call(http.MethodPut, "/api/v1/policy/p/webhook/pre_execution", []any{hook("w", "W", "one_way", "hooks")}, 200, nil)
	answers := []string{string(e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", oauth2Secrets(nil), 200, nil))}
	for _, path := range []string{"/api/v1/connection", "/api/v1/connection/hooks", "/api/v1/policy/p/webhook/pre_execution"} {
		answers = append(answers, string(e.call(http.MethodGet, path, nil, 200, nil)))
	}
	_, planRaw, ok := e.plan("p")
	if !ok {
		t.Fatal("no plan published")
	}
	raw, err := e.st.Collection("connections").FindOne(context.Background(), bson.D{{Key: "_id", Value: "hooks"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{"answers": strings.Join(answers, "\n"), "logs": e.logs.String(),
		"mongodb": raw.String(), "kv": string(planRaw)} {
		if strings.Contains(text, "client-SECRET-c1") {
			t.Errorf("%s contains the client secret", where)
		}
	}
	var plan event.Plan
	if err := json.Unmarshal(planRaw, &plan); err != nil {
		t.Fatal(err)
	}
	kr, err := secret.NewKeyring(testAppKey, "", secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := kr.Open(plan.Pre[0].Secrets, []byte("hooks"))
	if err != nil {
		t.Fatal(err)
	}
	var got event.HTTPSSecrets
	if err := json.Unmarshal(opened, &got); err != nil {
		t.Fatal(err)
	}
	want := event.OAuth2{TokenURL: "https://auth.example.com/oauth/token", ClientID: "client-1",
		ClientSecret: "client-SECRET-c1", Scopes: []string{"hooks:write", "read"}}
	if got.OAuth2 == nil || got.Authorization != "" || got.OAuth2.TokenURL != want.TokenURL || got.OAuth2.ClientID != want.ClientID ||
		got.OAuth2.ClientSecret != want.ClientSecret || strings.Join(got.OAuth2.Scopes, " ") != "hooks:write read" {
		t.Fatalf("opened secrets: got %+v (oauth2 %+v), want oauth2 %+v", got, got.OAuth2, want)
	}
}

// TestSecretsOAuth2Verify: verify=true checks the token URL's host as it checks the URL's (a TLS
// handshake, no HTTP request, so no token is fetched) and says which of the two failed.
func TestSecretsOAuth2Verify(t *testing.T) {
	rc := testkit.NewReceiver(t)
	pem, err := os.ReadFile(rc.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
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
	e := newEnv(t, envOptions{allowPrivate: true, roots: roots})
	e.https("hooks", "https://example.com", "auth")
	for _, tc := range []struct {
		name, tokenURL, status, reason string
	}{
		{"both verify", rc.URL("/token"), "succeeded", ""},
		{"token url fails", "https://" + ln.Addr().String() + "/token", "failed", "token_url: tls handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]any
			e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=true", oauth2Secrets(func(s, o map[string]any) {
				s["url"] = rc.URL("/hook")
				o["token_url"] = tc.tokenURL
			}), http.StatusOK, &out)
			reason, _ := out["failure_reason"].(string)
			if out["test_status"] != tc.status || !strings.HasPrefix(reason, tc.reason) {
				t.Fatalf("got %v, want test_status %s with a reason starting %q", out, tc.status, tc.reason)
			}
		})
	}
	if calls := rc.Calls(); len(calls) != 0 {
		t.Fatalf("the receiver got %d HTTP requests, want none (verify sends none)", len(calls))
	}
}
