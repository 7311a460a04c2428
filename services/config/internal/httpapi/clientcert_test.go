package httpapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// mtlsSecrets returns https secrets with a client certificate and key, mutated by change.
func mtlsSecrets(certPEM, keyPEM string, change func(s map[string]any)) map[string]any {
	s := map[string]any{"url": "https://example.com/h", "authorization": "auth",
		"client_certificate": certPEM, "client_key": keyPEM}
	if change != nil {
		change(s)
	}
	return s
}

// detailLocs returns the locations of a 422's details, each joined by ".".
func detailLocs(t *testing.T, b []byte) []string {
	t.Helper()
	var out struct {
		Detail []struct {
			Loc []any `json:"loc"`
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
	return locs
}

// TestSecretsClientCertificateValidation puts https secrets with a client certificate through the
// API (SPEC §2): a usable pair is stored; every broken one is a 422 naming the field that echoes
// neither the certificate nor the key and changes nothing.
func TestSecretsClientCertificateValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	ca := testkit.NewCA(t, "config test CA")
	certPEM, keyPEM := ca.Client(t, "policyhooks")
	_, otherKey := ca.Client(t, "other")
	expired, expiredKey := ca.Issue(t, "expired", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	})
	keyPart, certPart := keyPEM[40:80], certPEM[40:80]
	tests := []struct {
		name   string
		body   any
		status int
		loc    string
	}{
		{"valid", mtlsSecrets(certPEM, keyPEM, nil), 200, ""},
		{"valid with its chain", mtlsSecrets(certPEM+string(ca.PEM()), keyPEM, nil), 200, ""},
		{"both null", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) { s["client_certificate"], s["client_key"] = nil, nil }), 200, ""},
		{"certificate alone", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) { delete(s, "client_key") }), 422, "body.client_key"},
		{"key alone", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) { s["client_certificate"] = "" }), 422, "body.client_certificate"},
		{"key of another certificate", mtlsSecrets(certPEM, otherKey, nil), 422, "body.client_key"},
		{"key in the certificate's place", mtlsSecrets(keyPEM, keyPEM, nil), 422, "body.client_certificate"},
		{"expired", mtlsSecrets(expired, expiredKey, nil), 422, "body.client_certificate"},
		{"certificate too long", mtlsSecrets(certPEM+strings.Repeat("\n", 64<<10), keyPEM, nil), 422, "body.client_certificate"},
		{"key too long", mtlsSecrets(certPEM, keyPEM+strings.Repeat("\n", 16<<10), nil), 422, "body.client_key"},
		{"key not a string", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) { s["client_key"] = []string{keyPEM} }), 422, "body.client_key"},
		{"mis-cased key", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) {
			delete(s, "client_key")
			s["Client_Key"] = keyPEM
		}), 422, "body.Client_Key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.storedSecrets("hooks")
			status, b, _ := e.raw(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%s), want %d", status, b, tc.status)
			}
			if strings.Contains(string(b), keyPart) || strings.Contains(string(b), certPart) {
				t.Fatalf("the answer echoes the certificate or the key: %s", b)
			}
			if status == http.StatusOK {
				if e.storedSecrets("hooks") == before {
					t.Fatal("an accepted PUT did not change the stored secrets")
				}
				return
			}
			if e.storedSecrets("hooks") != before {
				t.Fatal("a rejected PUT changed the stored secrets")
			}
			if locs := detailLocs(t, b); locs[0] != tc.loc {
				t.Fatalf("loc: got %v (%s), want %s first", locs, b, tc.loc)
			}
		})
	}
}

// TestSecretsClientCertificateNeverExposed stores a client certificate and key and checks that no
// answer, log line, stored document or plan holds the key (or the certificate), and that the
// plan's sealed secrets open to both.
func TestSecretsClientCertificateNeverExposed(t *testing.T) {
	e := newEnv(t, envOptions{})
	ca := testkit.NewCA(t, "config test CA")
	certPEM, keyPEM := ca.Client(t, "policyhooks")
	e.https("hooks", "https://example.com", "auth")
	e.policy("p")
	e.call(http.MethodPut, "/api/v1/policy/p/webhook/pre_execution", []any{hook("w", "W", "one_way", "hooks")}, 200, nil)
	answers := []string{string(e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", mtlsSecrets(certPEM, keyPEM, nil), 200, nil))}
	// A refused PUT (the key of another pair) echoes nothing either.
	_, otherKey := ca.Client(t, "other")
	_, b, _ := e.raw(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", e.root, mtlsSecrets(certPEM, otherKey, nil))
	answers = append(answers, string(b))
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
		for _, needle := range []string{keyPEM[40:80], otherKey[40:80], certPEM[40:80]} {
			if strings.Contains(text, needle) {
				t.Errorf("%s contains part of the client key or certificate", where)
			}
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
	if err := json.Unmarshal(opened, &got); err != nil || got.ClientCertificate != certPEM || got.ClientKey != keyPEM {
		t.Fatalf("opened secrets hold certificate %t and key %t, want both", got.ClientCertificate == certPEM, got.ClientKey == keyPEM)
	}
}

// TestSecretsClientCertificateVerify: verify=true against a receiver requiring a client
// certificate (tls.RequireAndVerifyClientCert) succeeds with the connection's certificate, the
// token URL's handshake presenting it too, and fails without one, saying the server asked for it.
func TestSecretsClientCertificateVerify(t *testing.T) {
	ca := testkit.NewCA(t, "config test CA")
	certPEM, keyPEM := ca.Client(t, "policyhooks")
	rc := testkit.NewReceiverTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()})
	e := newEnv(t, envOptions{allowPrivate: true, roots: ca.Pool()})
	e.https("hooks", "https://example.com", "auth")
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status string
		reason string
	}{
		{"with the certificate", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) { s["url"] = rc.URL("/hook") }), "succeeded", ""},
		{"with the certificate and a token URL", mtlsSecrets(certPEM, keyPEM, func(s map[string]any) {
			s["url"] = rc.URL("/hook")
			delete(s, "authorization")
			s["oauth2"] = map[string]any{"token_url": rc.URL("/token"), "client_id": "c", "client_secret": "s"}
		}), "succeeded", ""},
		{"without a certificate", map[string]any{"url": rc.URL("/hook"), "authorization": "auth"}, "failed",
			"tls handshake (the server asked for a client certificate; the secrets have none)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]any
			e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=true", tc.body, http.StatusOK, &out)
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
