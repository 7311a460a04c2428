package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/callback/internal/httpapi"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

const testAppKey = "0123456789abcdef0123456789abcdef"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{"APP_ENCRYPTION_KEY": testAppKey}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8081" || cfg.NATSURL != "nats://127.0.0.1:4222" || cfg.RootClientID != "" {
		t.Errorf("defaults = %+v, want :8081, the local NATS and no root client", cfg)
	}

	cfg, err = LoadConfig(env(map[string]string{
		"APP_ENCRYPTION_KEY": testAppKey, "HTTP_ADDR": "127.0.0.1:0", "OAUTH_ROOT_CLIENT_ID": "root",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:0" || cfg.RootClientID != "root" {
		t.Errorf("overrides = %+v", cfg)
	}

	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no key", map[string]string{}, []string{"APP_ENCRYPTION_KEY"}},
		{"short key", map[string]string{"APP_ENCRYPTION_KEY": "short"}, []string{"APP_ENCRYPTION_KEY"}},
		{"every problem", map[string]string{
			"APP_ENCRYPTION_KEY": testAppKey, "NATS_URL": "nats://a", "LOG_LEVEL": "loud", "LOG_FORMAT": "xml",
		}, []string{"LOG_LEVEL", "LOG_FORMAT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(env(tt.env))
			if err == nil {
				t.Fatalf("err = nil, want one naming %v", tt.want)
			}
			for _, name := range tt.want {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("err = %q, want it to name %s", err, name)
				}
			}
		})
	}
}

func TestOpenAPIDocument(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	// The document is valid OpenAPI 3, as judged by a maintained validator (schemas, $refs,
	// parameters, responses).
	loaded, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatalf("openapi3 load: %v", err)
	}
	if err := loaded.Validate(context.Background()); err != nil {
		t.Fatalf("openapi3 validate: %v", err)
	}

	// Every $ref points at a component that exists.
	var whole map[string]any
	_ = json.Unmarshal(OpenAPI, &whole)
	schemas := whole["components"].(map[string]any)["schemas"].(map[string]any)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, found := schemas[strings.TrimPrefix(ref, "#/components/schemas/")]; !found {
					t.Errorf("dangling $ref %s", ref)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(whole)

	router := httpapi.NewRouter(httpapi.Deps{
		Log: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: api.NewAuthorizer(nil, nil), OpenAPI: OpenAPI,
	})
	routes := 0
	err = router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			t.Errorf("route %s has no methods", tpl)
			return nil
		}
		for _, m := range methods {
			routes++
			if _, ok := doc.Paths[tpl][strings.ToLower(m)]; !ok {
				t.Errorf("route %s %s is missing from openapi.json", m, tpl)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	documented := 0
	for _, ops := range doc.Paths {
		documented += len(ops)
	}
	if routes != documented {
		t.Errorf("router has %d operations, the document %d", routes, documented)
	}
}

// TestStartServes starts the service on a real listener over embedded NATS and resumes a request
// the way a webhook receiver would.
func TestStartServes(t *testing.T) {
	n := testkit.StartNATS(t)
	cfg, err := LoadConfig(env(map[string]string{
		"APP_ENCRYPTION_KEY": testAppKey, "NATS_URL": n.URL(), "HTTP_ADDR": "127.0.0.1:0", "OAUTH_ROOT_CLIENT_ID": "root",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			_ = s.Wait()
		}
	})
	base := "http://" + s.Addr()

	// Seed a paused request as the executor would.
	requests := n.Bucket(t, event.BucketRequests)
	req := event.Request{ID: "pri_app", PolicyKey: "p", Status: event.StatusPaused, Step: event.StepPreWebhooks,
		Pause: 1, PausedWebhookID: "wh-1", CreatedAt: time.Now().UTC()}
	b, _ := json.Marshal(req)
	if _, err := requests.Put(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}
	key, _ := secret.DeriveKey(testAppKey, secret.PurposeResumeTokens)
	sealer, _ := token.NewSealer(key)
	raw, err := sealer.Seal(&token.ResumeClaims{RequestID: "pri_app", WebhookID: "wh-1", Pause: 1, Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	call := func(method, path, auth, body string) (int, string) {
		t.Helper()
		r, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	for _, path := range []string{"/health", "/ready", "/metrics", "/api/v1/openapi.json"} {
		if code, body := call(http.MethodGet, path, "", ""); code != 200 {
			t.Errorf("GET %s: got %d %s, want 200", path, code, body)
		}
	}
	if code, body := call(http.MethodPost, "/privacy-request/pri_app/resume", "Bearer "+raw, `{}`); code != 200 ||
		!strings.Contains(body, `"status":"in_processing"`) {
		t.Errorf("resume: got %d %s, want 200 in_processing", code, body)
	}
	if code, _ := call(http.MethodPost, "/api/v1/privacy-request/pri_app/resume", "Bearer "+raw, `{}`); code != 409 {
		t.Errorf("second resume: got %d, want 409", code)
	}
	accessKey, _ := secret.DeriveKey(testAppKey, secret.PurposeAccessTokens)
	access, _ := token.NewSealer(accessKey)
	rootToken, _ := access.Seal(&token.AccessClaims{ClientID: "root", Scopes: []string{"privacy-request:read"}}, time.Hour)
	if code, body := call(http.MethodGet, "/api/v1/privacy-request/pri_app", "Bearer "+rootToken, ""); code != 200 {
		t.Errorf("GET by the root client: got %d %s, want 200", code, body)
	}
	code, metrics := call(http.MethodGet, "/metrics", "", "")
	for _, want := range []string{`callback_resume_total{code="409"} 1`, "go_goroutines"} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	cancel()
	stopped = true
	if err := s.Wait(); err != nil {
		t.Errorf("Wait = %v, want nil after a clean shutdown", err)
	}
	if _, err := http.Get(base + "/health"); err == nil {
		t.Error("still serving after the context ended")
	}
}

func TestRunReportsBadConfig(t *testing.T) {
	var stderr strings.Builder
	err := Run(context.Background(), env(map[string]string{"APP_ENCRYPTION_KEY": "short", "LOG_FORMAT": "xml"}), &stderr)
	if err == nil || !strings.Contains(err.Error(), "APP_ENCRYPTION_KEY") || !strings.Contains(err.Error(), "LOG_FORMAT") {
		t.Fatalf("Run = %v, want an error naming APP_ENCRYPTION_KEY and LOG_FORMAT", err)
	}
}

func TestReadyReportsBuckets(t *testing.T) {
	n := testkit.StartNATS(t)
	cfg, _ := LoadConfig(env(map[string]string{"APP_ENCRYPTION_KEY": testAppKey, "NATS_URL": n.URL(), "HTTP_ADDR": "127.0.0.1:0"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = s.Wait() }()
	resp, err := http.Get("http://" + s.Addr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/ready = %d, want 200", resp.StatusCode)
	}

	// Deleting a bucket makes the service unready, naming it.
	if err := n.JS.DeleteKeyValue(ctx, event.BucketResumeTokens); err != nil {
		t.Fatal(err)
	}
	resp2, err := http.Get("http://" + s.Addr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	body, _ := io.ReadAll(resp2.Body)
	if resp2.StatusCode != 503 || !strings.Contains(string(body), event.BucketResumeTokens) {
		t.Errorf("/ready = %d %s, want 503 naming %s", resp2.StatusCode, body, event.BucketResumeTokens)
	}
}
