package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/config/app"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

const appKey = "0123456789abcdef0123456789abcdef"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	base := map[string]string{"APP_ENCRYPTION_KEY": appKey, "OAUTH_ROOT_CLIENT_ID": "root", "OAUTH_ROOT_CLIENT_SECRET": "s"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := app.LoadConfig(env(base))
		if err != nil {
			t.Fatal(err)
		}
		if c.HTTPAddr != ":8080" || c.MongoURI != "mongodb://127.0.0.1:27017" || c.MongoDatabase != "policyhooks" ||
			c.AccessTokenTTL != time.Hour || c.PlanRepublishInterval != time.Minute || c.WebhookAllowHTTP || c.WebhookAllowPrivate ||
			c.WebhookAllowedHosts != nil || c.WebhookDeniedCIDRs != nil || c.WebhookRoots != nil || c.PreApproval ||
			c.WebhookProxy != nil {
			t.Fatalf("defaults: got %+v", c)
		}
	})
	tests := []struct {
		name string
		env  map[string]string
		bad  string // the variable the error must name
	}{
		{"missing root id", with("OAUTH_ROOT_CLIENT_ID", ""), "OAUTH_ROOT_CLIENT_ID"},
		{"missing root secret", with("OAUTH_ROOT_CLIENT_SECRET", ""), "OAUTH_ROOT_CLIENT_SECRET"},
		{"root id with a space", with("OAUTH_ROOT_CLIENT_ID", "root client"), "OAUTH_ROOT_CLIENT_ID"},
		{"root id with an empty token", with("OAUTH_ROOT_CLIENT_ID", "root..client"), "OAUTH_ROOT_CLIENT_ID"},
		{"short app key", with("APP_ENCRYPTION_KEY", "short"), "APP_ENCRYPTION_KEY"},
		{"bad ttl", with("OAUTH_ACCESS_TOKEN_TTL", "soon"), "OAUTH_ACCESS_TOKEN_TTL"},
		{"bad interval", with("PLAN_REPUBLISH_INTERVAL", "-1s"), "PLAN_REPUBLISH_INTERVAL"},
		{"bad bool", with("WEBHOOK_ALLOW_HTTP", "sure"), "WEBHOOK_ALLOW_HTTP"},
		{"bad pre-approval", with("PRE_APPROVAL", "maybe"), "PRE_APPROVAL"},
		{"bad mongo uri", with("MONGODB_URI", "postgres://x"), "MONGODB_URI"},
		{"bad database", with("MONGODB_DATABASE", "a.b"), "MONGODB_DATABASE"},
		{"missing CA file", with("WEBHOOK_CA_FILE", "/nonexistent/ca.pem"), "WEBHOOK_CA_FILE"},
		{"allowed host with a scheme", with("WEBHOOK_ALLOWED_HOSTS", "https://hooks.example.com"), "WEBHOOK_ALLOWED_HOSTS"},
		{"bad denied range", with("WEBHOOK_DENIED_CIDRS", "10.0.0.0/33"), "WEBHOOK_DENIED_CIDRS"},
		{"proxy of another scheme", with("WEBHOOK_PROXY_URL", "socks5://proxy.internal:1080"), "WEBHOOK_PROXY_URL"},
	}
	t.Run("proxy", func(t *testing.T) {
		c, err := app.LoadConfig(env(with("WEBHOOK_PROXY_URL", "http://egress:PR0XY-S3CRET@proxy.internal:3128")))
		if err != nil || c.Policy().Proxy == nil || c.Policy().Proxy.String() != "http://proxy.internal:3128" {
			t.Fatalf("WEBHOOK_PROXY_URL: got %v, %v; want the verification's proxy", c.WebhookProxy, err)
		}
	})
	t.Run("pre-approval on", func(t *testing.T) {
		if c, err := app.LoadConfig(env(with("PRE_APPROVAL", "true"))); err != nil || !c.PreApproval {
			t.Fatalf("PRE_APPROVAL=true: got %v, %v; want on", c.PreApproval, err)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := app.LoadConfig(env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Fatalf("got %v, want an error naming %s", err, tc.bad)
			}
		})
	}
}

// TestStartAndVerify starts the whole service as main does, checks health and readiness, issues
// a token, verifies secrets against a testkit receiver (httptest TLS) trusted through
// WEBHOOK_CA_FILE, and stops it.
func TestStartAndVerify(t *testing.T) {
	rc := testkit.NewReceiver(t)
	n := testkit.StartNATS(t)
	cfg, err := app.LoadConfig(env(map[string]string{
		"APP_ENCRYPTION_KEY": appKey, "OAUTH_ROOT_CLIENT_ID": "root", "OAUTH_ROOT_CLIENT_SECRET": "root-secret",
		"NATS_URL": n.URL(), "MONGODB_URI": ferret.ForTest(t), "MONGODB_DATABASE": "apptest", "HTTP_ADDR": "127.0.0.1:0",
		"WEBHOOK_CA_FILE": rc.CAFile(), "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	s, err := app.Start(ctx, cfg, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr()
	for _, p := range []string{"/health", "/ready"} {
		res, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: got %d, want 200", p, res.StatusCode)
		}
	}
	res, err := http.PostForm(base+"/api/v1/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"root"}, "client_secret": {"root-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	do := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	if status, out := do(http.MethodPatch, "/api/v1/connection", `[{"name": "Hooks", "key": "hooks", "connection_type": "https", "access": "read"}]`); status != 200 {
		t.Fatalf("create connection: %d %v", status, out)
	}
	status, out := do(http.MethodPut, "/api/v1/connection/hooks/secret?verify=true", `{"url": "`+rc.URL("/hook")+`", "authorization": "a"}`)
	if status != 200 || out["test_status"] != "succeeded" || out["failure_reason"] != nil {
		t.Fatalf("verify against the trusted TLS server: got %d %v, want succeeded", status, out)
	}
	if _, c := do(http.MethodGet, "/api/v1/connection/hooks", ""); c["last_test_succeeded"] != true || c["last_test_timestamp"] == nil {
		t.Fatalf("recorded test: got %v", c)
	}
	for _, c := range rc.Calls() {
		t.Errorf("verification sent an HTTP request: %s %s", c.Method, c.Path)
	}
	// /ready checks the buckets the service uses, not only the connection (SPEC §8, NATS_REPLICAS:
	// a bucket without a leader makes the service not ready).
	if err := n.JS.DeleteKeyValue(ctx, event.BucketClients); err != nil {
		t.Fatal(err)
	}
	res, err = http.Get(base + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "bucket "+event.BucketClients) {
		t.Fatalf("/ready without %s: %d %s, want 503 naming the bucket", event.BucketClients, res.StatusCode, body)
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not stop")
	}
}

func TestRunReportsBadSettings(t *testing.T) {
	var stderr bytes.Buffer
	err := app.Run(context.Background(), env(map[string]string{}), &stderr)
	if err == nil || !strings.Contains(err.Error(), "APP_ENCRYPTION_KEY") || !strings.Contains(err.Error(), "OAUTH_ROOT_CLIENT_SECRET") {
		t.Fatalf("got %v, want every missing variable named", err)
	}
}
