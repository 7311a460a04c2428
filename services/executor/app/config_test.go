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
		cfg.CallbackPublicURL != "" || cfg.ActiveHandlers != 256 || cfg.ShutdownGrace != 25*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	for _, tc := range []struct{ name, value string }{
		{"WEBHOOK_TIMEOUT", "soon"},
		{"WEBHOOK_MAX_ATTEMPTS", "0"},
		{"WEBHOOK_ALLOW_HTTP", "perhaps"},
		{"WEBHOOK_CA_FILE", "/does/not/exist.pem"},
		{"CALLBACK_PUBLIC_URL", "callback.example.com"},
		{"EXECUTION_STAGE", "later"},
		{"EXECUTOR_CONCURRENCY", "-1"},
		{"EXECUTOR_ACTIVE_HANDLERS", "0"},
		{"WEBHOOK_RETRY_MAX_DELAY", "1ms"},
		{"EXECUTION_TIMEOUT", "720h"},
		{"PRIVACY_REQUEST_DELAY_TIMEOUT", "336h"},
		{"APP_ENCRYPTION_KEY", "short"},
		{"EXECUTOR_SHUTDOWN_GRACE", "soonish"},
	} {
		env := map[string]string{"APP_ENCRYPTION_KEY": appKey, tc.name: tc.value}
		_, err := app.LoadConfig(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %v, want one naming the variable", tc.name, tc.value, err)
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
