package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	base := map[string]string{"APP_ENCRYPTION_KEY": appKey}
	cfg, err := app.LoadConfig(func(k string) string { return base[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8082" || cfg.WebhookTimeout != 30*time.Second || cfg.WebhookMaxAttempts != 5 ||
		cfg.WebhookAllowHTTP || cfg.WebhookAllowPrivate || cfg.IdentityTTL != 604800*time.Second ||
		cfg.PauseTimeout != 60*time.Hour || cfg.ExecutionStage != "await" || cfg.ExecutionTimeout != 24*time.Hour ||
		cfg.Concurrency != 256 || cfg.WebhookRetryBaseDelay != time.Second || cfg.WebhookRetryMaxDelay != time.Minute ||
		cfg.CallbackPublicURL != "" || cfg.ActiveHandlers != 256 || cfg.ShutdownGrace != 25*time.Second ||
		cfg.RequestRetention != app.DefaultRequestRetention || cfg.EventRetention != 14*24*time.Hour ||
		cfg.FinishedIdentityRetention != 0 || cfg.IdentitySweepInterval != 10*time.Minute {
		t.Errorf("defaults: %+v", cfg)
	}
	for _, tc := range []struct{ name, value string }{
		{"WEBHOOK_TIMEOUT", "soon"},
		{"WEBHOOK_MAX_ATTEMPTS", "0"},
		{"WEBHOOK_ALLOW_HTTP", "perhaps"},
		{"WEBHOOK_CA_FILE", "/does/not/exist.pem"},
		{"WEBHOOK_PROXY_URL", "socks5://proxy.internal:1080"},
		{"WEBHOOK_PROXY_URL", "http://proxy.internal:3128/path"},
		{"CALLBACK_PUBLIC_URL", "callback.example.com"},
		{"EXECUTION_STAGE", "later"},
		{"EXECUTOR_CONCURRENCY", "-1"},
		{"EXECUTOR_ACTIVE_HANDLERS", "0"},
		{"WEBHOOK_RETRY_MAX_DELAY", "1ms"},
		{"EXECUTION_TIMEOUT", "720h"},
		{"PRIVACY_REQUEST_DELAY_TIMEOUT", "336h"},
		{"APP_ENCRYPTION_KEY", "short"},
		{"EXECUTOR_SHUTDOWN_GRACE", "soonish"},
		{"REQUEST_RETENTION", "24h"},
		{"REQUEST_RETENTION", "never"},
		{"EVENT_RETENTION", "48h"},
		{"FINISHED_IDENTITY_RETENTION", "-1h"},
		{"FINISHED_IDENTITY_RETENTION", "forever"},
		{"IDENTITY_SWEEP_INTERVAL", "0"},
	} {
		env := map[string]string{"APP_ENCRYPTION_KEY": appKey, tc.name: tc.value}
		_, err := app.LoadConfig(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %v, want one naming the variable", tc.name, tc.value, err)
		}
	}
}

// TestWebhookProxySetting: WEBHOOK_PROXY_URL becomes the proxy of the calls' policy; a bad one
// is refused naming the variable, never showing the password.
func TestWebhookProxySetting(t *testing.T) {
	t.Parallel()
	env := map[string]string{"APP_ENCRYPTION_KEY": appKey, "WEBHOOK_PROXY_URL": "http://egress:PR0XY-S3CRET@proxy.internal:3128"}
	cfg, err := app.LoadConfig(func(k string) string { return env[k] })
	if err != nil || cfg.WebhookProxy == nil || cfg.Policy().Proxy != cfg.WebhookProxy ||
		cfg.WebhookProxy.String() != "http://proxy.internal:3128" || !cfg.WebhookProxy.HasCredentials() {
		t.Fatalf("got proxy %v, %v; want http://proxy.internal:3128 with credentials in the calls' policy", cfg.WebhookProxy, err)
	}
	env["WEBHOOK_PROXY_URL"] = "https://egress:PR0XY-S3CRET@proxy.internal:3128?x=1"
	_, err = app.LoadConfig(func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "WEBHOOK_PROXY_URL") || strings.Contains(err.Error(), "PR0XY-S3CRET") {
		t.Fatalf("a URL with a query: %v, want an error naming WEBHOOK_PROXY_URL without the password", err)
	}
}

// TestRetentionSettings: REQUEST_RETENTION keeps a record for good with 0 and must otherwise
// outlast EVENT_RETENTION; the timers must end within EVENT_RETENTION.
func TestRetentionSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env     map[string]string
		ok      bool
		request time.Duration
	}{
		{map[string]string{"REQUEST_RETENTION": "0"}, true, 0},
		{map[string]string{"REQUEST_RETENTION": "forever"}, true, 0},
		{map[string]string{"REQUEST_RETENTION": "336h"}, true, 336 * time.Hour},
		{map[string]string{"REQUEST_RETENTION": "335h"}, false, 0},
		{map[string]string{"REQUEST_RETENTION": "72h", "EVENT_RETENTION": "72h"}, true, 72 * time.Hour},
		{map[string]string{"EVENT_RETENTION": "61h"}, true, app.DefaultRequestRetention},
		{map[string]string{"EVENT_RETENTION": "60h"}, false, 0},
		{map[string]string{"EVENT_RETENTION": "1000h", "REQUEST_RETENTION": "999h"}, false, 0},
	} {
		env := map[string]string{"APP_ENCRYPTION_KEY": appKey}
		for k, v := range tc.env {
			env[k] = v
		}
		cfg, err := app.LoadConfig(func(k string) string { return env[k] })
		switch {
		case tc.ok && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case !tc.ok && err == nil:
			t.Errorf("%v: accepted, want an error", tc.env)
		case tc.ok && cfg.RequestRetention != tc.request:
			t.Errorf("%v: REQUEST_RETENTION %v, want %v", tc.env, cfg.RequestRetention, tc.request)
		}
	}
	for v, want := range map[string]time.Duration{"": 0, "0": 0, "15m": 15 * time.Minute} {
		env := map[string]string{"APP_ENCRYPTION_KEY": appKey, "FINISHED_IDENTITY_RETENTION": v}
		if cfg, err := app.LoadConfig(func(k string) string { return env[k] }); err != nil || cfg.FinishedIdentityRetention != want {
			t.Errorf("FINISHED_IDENTITY_RETENTION=%q: %v, %v; want %v", v, cfg.FinishedIdentityRetention, err, want)
		}
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	x := e.start(e.config())
	e.putPlan("m", []hook{{Key: "h", URL: e.rc.URL("/m")}}, nil)
	e.submit("pri_metrics", "m", identity("a@b", ""))
	e.waitStatus("pri_metrics", 10*time.Second, "complete")
	for path, want := range map[string]string{
		"/health":  `"ok"`,
		"/ready":   `"ready"`,
		"/metrics": "executor_webhook_call_seconds",
		// Per connection: the call of conn_m_h, and its latency.
		"/metrics?calls":   `executor_connection_calls_total{connection="conn_m_h",outcome="done"} 1`,
		"/metrics?latency": `executor_connection_call_seconds_count{connection="conn_m_h"} 1`,
	} {
		resp, err := http.Get("http://" + x.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.200s, want 200 containing %s", path, resp.StatusCode, b, want)
		}
	}
}
