package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
)

// public routes need no token.
var public = map[string]bool{
	"/health": true, "/ready": true, "/metrics": true, "/api/v1/openapi.json": true, "/api/v1/oauth/token": true,
}

type route struct{ method, template string }

func routes(t *testing.T, r *mux.Router) []route {
	t.Helper()
	var out []route
	err := r.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := rt.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := rt.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			out = append(out, route{m, tpl})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var placeholder = regexp.MustCompile(`\{([a-z_]+)\}`)

func concrete(tpl string) string {
	return placeholder.ReplaceAllStringFunc(tpl, func(s string) string {
		if s == "{kind}" {
			return "pre_execution"
		}
		return "x1"
	})
}

// TestEveryRouteRequiresAuth walks the router: every route but the public ones answers 401
// without a token and 403 with a token lacking its scope (a client with no scope, and one with
// only scope:read).
func TestEveryRouteRequiresAuth(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, _, none := e.client()
	_, _, scopeOnly := e.client("scope:read")
	all := routes(t, e.router)
	if len(all) < 20 {
		t.Fatalf("walked %d routes, want every route of the service", len(all))
	}
	for _, rt := range all {
		t.Run(rt.method+" "+rt.template, func(t *testing.T) {
			path := concrete(rt.template)
			status, b, h := e.raw(rt.method, path, "", `{}`)
			if public[rt.template] {
				// The token endpoint answers 401 to missing credentials; that is not a bearer check.
				if rt.template != "/api/v1/oauth/token" && (status == http.StatusUnauthorized || status == http.StatusForbidden) {
					t.Fatalf("public route answered %d", status)
				}
				return
			}
			if status != http.StatusUnauthorized || detail(t, b) != "Failed to authenticate" || h.Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("no token: got %d %s (WWW-Authenticate %q), want 401 Failed to authenticate", status, b, h.Get("WWW-Authenticate"))
			}
			status, b, _ = e.raw(rt.method, path, "", `{}`, "Authorization", "Basic cm9vdDpyb290")
			if status != http.StatusUnauthorized {
				t.Fatalf("non-bearer: got %d %s, want 401", status, b)
			}
			status, b, _ = e.raw(rt.method, path, "not-a-token", `{}`)
			if status != http.StatusForbidden || detail(t, b) != "Not Authorized for this action" {
				t.Fatalf("garbage token: got %d %s, want 403", status, b)
			}
			status, b, _ = e.raw(rt.method, path, none, `{}`)
			if status != http.StatusForbidden || detail(t, b) != "Not Authorized for this action" {
				t.Fatalf("token without scopes: got %d %s, want 403", status, b)
			}
			if rt.template != "/api/v1/oauth/scope" {
				status, b, _ = e.raw(rt.method, path, scopeOnly, `{}`)
				if status != http.StatusForbidden {
					t.Fatalf("token with scope:read only: got %d %s, want 403", status, b)
				}
			}
		})
	}
}

// TestOAuthToken pins the token endpoint (SPEC §1.1, RFC 6749 §4.4): grant_type=client_credentials
// is required, credentials come from the form or from HTTP Basic (form-url-decoded, §2.3.1), and
// errors carry the §5.2 error code next to detail.
func TestOAuthToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, secret, _ := e.client("policy:read")
	grant := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name        string
		form        url.Values
		basicID     string
		basicSecret string
		status      int
		wantError   string // the RFC 6749 §5.2 error code of a refusal
	}{
		{"root form", grant("client_id", rootID, "client_secret", rootSecret), "", "", 200, ""},
		{"client form", grant("client_id", id, "client_secret", secret), "", "", 200, ""},
		{"client basic", grant(), id, secret, 200, ""},
		{"root basic", grant(), rootID, rootSecret, 200, ""},
		{"basic credentials are form-url-decoded", grant(), "r%6Fot", "root%2Dsecret-for-tests", 200, ""},
		{"basic credentials not form-url-encoded", grant(), rootID, "100%", 400, "invalid_request"},
		{"wrong secret", grant("client_id", id, "client_secret", "nope"), "", "", 401, "invalid_client"},
		{"wrong root secret", grant("client_id", rootID, "client_secret", "nope"), "", "", 401, "invalid_client"},
		{"unknown client", grant("client_id", "ghost", "client_secret", secret), "", "", 401, "invalid_client"},
		{"basic wrong secret", grant(), id, "nope", 401, "invalid_client"},
		{"no credentials", grant(), "", "", 401, "invalid_client"},
		{"without grant_type", url.Values{"client_id": {id}, "client_secret": {secret}}, "", "", 400, "invalid_request"},
		{"nothing", url.Values{}, "", "", 400, "invalid_request"},
		{"basic without grant_type", nil, rootID, rootSecret, 400, "invalid_request"},
		{"other grant type", url.Values{"grant_type": {"password"}, "client_id": {id}, "client_secret": {secret}}, "", "", 400, "unsupported_grant_type"},
		{"grant_type twice", url.Values{"grant_type": {"client_credentials", "password"}, "client_id": {id}, "client_secret": {secret}}, "", "", 400, "invalid_request"},
		{"client_secret twice", grant("client_id", id, "client_secret", secret, "client_secret", "nope"), "", "", 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/oauth/token", strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.basicID != "" {
				req.SetBasicAuth(tc.basicID, tc.basicSecret)
			}
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(res.Body).Decode(&out)
			if res.StatusCode != tc.status {
				t.Fatalf("status: got %d (%v), want %d", res.StatusCode, out, tc.status)
			}
			if tc.status != 200 {
				if out["error"] != tc.wantError || out["detail"] == "" || out["error_description"] != out["detail"] {
					t.Fatalf("answer: got %v, want error %q with detail and error_description", out, tc.wantError)
				}
				if tc.status == 401 && out["detail"] != api.DetailUnauthenticated {
					t.Fatalf("detail: got %v, want %q", out["detail"], api.DetailUnauthenticated)
				}
				if basic := tc.basicID != ""; tc.status == 401 && basic != (res.Header.Get("WWW-Authenticate") != "") {
					t.Fatalf("WWW-Authenticate: got %q with basic %v", res.Header.Get("WWW-Authenticate"), basic)
				}
				return
			}
			if out["token_type"] != "bearer" || out["expires_in"] != float64(3600) || out["access_token"] == "" || out["error"] != nil {
				t.Fatalf("answer: got %v, want a bearer token expiring in 3600", out)
			}
			// The token works on a route its scopes allow.
			tok := out["access_token"].(string)
			if status, b, _ := e.raw(http.MethodGet, "/api/v1/policy", tok, nil); status != 200 {
				t.Fatalf("GET /policy with the token: %d %s", status, b)
			}
		})
	}
}

func TestOAuthClients(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, _, creator := e.client("client:create", "policy:read", "connection:read")
	tests := []struct {
		name   string
		token  string
		body   any
		status int
	}{
		{"root any scopes", e.root, map[string]any{"scopes": []string{"webhook:read", "privacy-request:resume"}}, 200},
		{"subset of the caller", creator, map[string]any{"scopes": []string{"policy:read"}}, 200},
		{"not a subset", creator, map[string]any{"scopes": []string{"policy:read", "policy:delete"}}, 403},
		{"unknown scope", e.root, map[string]any{"scopes": []string{"policy:read", "everything"}}, 422},
		{"unknown field", e.root, map[string]any{"scopes": []string{}, "name": "x"}, 422},
		{"missing scopes", e.root, map[string]any{}, 422},
		{"malformed", e.root, `{"scopes": [`, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.clientCount()
			status, b, _ := e.raw(http.MethodPost, "/api/v1/oauth/client", tc.token, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%s), want %d", status, b, tc.status)
			}
			after := e.clientCount()
			if status != 200 {
				if after != before {
					t.Fatalf("clients: got %d after a rejected create, want %d", after, before)
				}
				return
			}
			var out map[string]string
			if err := json.Unmarshal(b, &out); err != nil || out["client_id"] == "" || len(out["client_secret"]) < 32 {
				t.Fatalf("answer: got %s, want client_id and client_secret", b)
			}
			// The secret is stored only as a hash.
			raw, err := e.st.Collection("oauth_clients").FindOne(context.Background(), map[string]any{"_id": out["client_id"]}).Raw()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(raw.String(), out["client_secret"]) {
				t.Fatalf("stored client holds the plaintext secret: %s", raw)
			}
			// The client is mirrored, without its secret.
			ent, err := e.clientsKV.Get(context.Background(), out["client_id"])
			if err != nil {
				t.Fatalf("mirror entry: %v", err)
			}
			if strings.Contains(string(ent.Value()), out["client_secret"]) {
				t.Fatalf("mirror holds the secret: %s", ent.Value())
			}
		})
	}

	t.Run("delete stops its tokens at once", func(t *testing.T) {
		id, _, tok := e.client("policy:read")
		if status, b, _ := e.raw(http.MethodGet, "/api/v1/policy", tok, nil); status != 200 {
			t.Fatalf("before delete: %d %s", status, b)
		}
		e.call(http.MethodDelete, "/api/v1/oauth/client/"+id, nil, http.StatusNoContent, nil)
		if status, b, _ := e.raw(http.MethodGet, "/api/v1/policy", tok, nil); status != http.StatusForbidden {
			t.Fatalf("after delete: got %d %s, want 403", status, b)
		}
		if _, err := e.clientsKV.Get(context.Background(), id); err == nil {
			t.Fatal("mirror entry survived the delete")
		}
		e.call(http.MethodDelete, "/api/v1/oauth/client/"+id, nil, http.StatusNotFound, nil)
		e.call(http.MethodDelete, "/api/v1/oauth/client/"+rootID, nil, http.StatusBadRequest, nil)
	})

	t.Run("scopes", func(t *testing.T) {
		var scopes []string
		e.call(http.MethodGet, "/api/v1/oauth/scope", nil, http.StatusOK, &scopes)
		if !slices.Equal(scopes, scope.All) || len(scopes) != 15 {
			t.Fatalf("scopes: got %v, want %v", scopes, scope.All)
		}
	})

	t.Run("root is mirrored with every scope", func(t *testing.T) {
		ent, err := e.clientsKV.Get(context.Background(), rootID)
		if err != nil {
			t.Fatal(err)
		}
		var m oauth.MirrorEntry
		if err := json.Unmarshal(ent.Value(), &m); err != nil || !slices.Equal(m.Scopes, scope.All) {
			t.Fatalf("root mirror: got %s, want every scope", ent.Value())
		}
		if strings.Contains(string(ent.Value()), rootSecret) {
			t.Fatal("root mirror holds the secret")
		}
	})
}

func (e *env) clientCount() int64 {
	e.t.Helper()
	n, err := e.st.Collection("oauth_clients").CountDocuments(context.Background(), map[string]any{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}
