package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/rs/zerolog"
)

type healthBody struct {
	ConnectionKey string  `json:"connection_key"`
	State         string  `json:"state"`
	Failures      int     `json:"failures"`
	Since         *string `json:"since"`
	ProbeAt       *string `json:"probe_at"`
	ProbeInFlight bool    `json:"probe_in_flight"`
	LastError     *string `json:"last_error"`
	ChangedBy     *string `json:"changed_by"`
}

// TestConnectionHealth reads and closes a connection's circuit breaker through the API (SPEC
// §6.3): closed with no entry, open as the executor's store left it, closed by hand with the
// healthy event published, bad bodies and scopes refused without a change, and the entry gone
// with its connection.
func TestConnectionHealth(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("crm", "https://example.com/hook", "auth")
	path := "/api/v1/connection/crm/health"

	e.https("erp", "https://example.com/erp", "auth")
	// listed returns the keys and states of GET /connection_health with query q.
	listed := func(q string) string {
		t.Helper()
		var page struct {
			Items []healthBody `json:"items"`
			Total int          `json:"total"`
			Size  int          `json:"size"`
			Pages int          `json:"pages"`
		}
		e.call(http.MethodGet, "/api/v1/connection_health"+q, nil, 200, &page)
		var out []string
		for _, it := range page.Items {
			out = append(out, it.ConnectionKey+":"+it.State)
		}
		if page.Total < len(page.Items) || page.Size == 0 || page.Pages != (page.Total+page.Size-1)/page.Size {
			t.Fatalf("list%s: total %d, size %d, pages %d for %d items", q, page.Total, page.Size, page.Pages, len(page.Items))
		}
		return strings.Join(out, ",")
	}
	if got := listed(""); got != "" {
		t.Fatalf("breakers listed before any failure: %q", got)
	}

	var h healthBody
	e.call(http.MethodGet, path, nil, 200, &h)
	if h.ConnectionKey != "crm" || h.State != "closed" || h.Failures != 0 || h.Since != nil || h.ProbeAt != nil || h.ChangedBy != nil {
		t.Fatalf("a connection never failed: %+v", h)
	}
	e.call(http.MethodGet, "/api/v1/connection/nope/health", nil, 404, nil)
	e.call(http.MethodPost, "/api/v1/connection/nope/health/close", nil, 404, nil)

	// The executor's side: two failures open the breaker (threshold 2).
	ctx := context.Background()
	exec := breaker.NewStore(e.healthKV, e.js, breaker.Config{Failures: 2, Cooldown: time.Hour, ProbeTTL: time.Minute}, zerolog.Nop())
	for range 2 {
		if err := exec.Observe(ctx, "crm", "run", true, "HTTP 503"); err != nil {
			t.Fatal(err)
		}
	}
	e.call(http.MethodGet, path, nil, 200, &h)
	if h.State != "open" || h.Failures != 2 || h.ProbeAt == nil || h.LastError == nil || *h.LastError != "HTTP 503" ||
		h.ChangedBy == nil || *h.ChangedBy != "executor" || h.ProbeInFlight {
		t.Fatalf("opened by the executor: %+v", h)
	}
	if err := exec.Observe(ctx, "erp", "run", true, "timeout"); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{"": "crm:open,erp:closed", "?state=open": "crm:open", "?state=closed": "erp:closed",
		"?state=open&size=1&page=2": "", "?size=1&page=2": "erp:closed"} {
		if got := listed(q); got != want {
			t.Errorf("list%s = %q, want %q", q, got, want)
		}
	}
	for _, q := range []string{"?state=Open", "?state=half", "?size=101", "?page=0"} {
		if status, b, _ := e.raw(http.MethodGet, "/api/v1/connection_health"+q, e.root, nil); status != 422 {
			t.Errorf("list%s: %d %s, want 422", q, status, b)
		}
	}

	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"an unknown field", `{"state": "closed"}`, 422},
		{"malformed JSON", `{`, 400},
		{"not an object", `[]`, 422},
	} {
		status, b, _ := e.raw(http.MethodPost, path+"/close", e.root, tt.body)
		if status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, b, tt.status)
		}
	}
	_, _, reader := e.client(scope.ConnectionRead)
	if status, b, _ := e.raw(http.MethodPost, path+"/close", reader, nil); status != 403 {
		t.Errorf("close with connection:read only: %d %s, want 403", status, b)
	}
	if status, _, _ := e.raw(http.MethodGet, path, reader, nil); status != 200 {
		t.Errorf("read with connection:read: %d, want 200", status)
	}
	if status, _, _ := e.raw(http.MethodGet, path, "", nil); status != 401 {
		t.Errorf("read without a token: %d, want 401", status)
	}
	if status, _, _ := e.raw(http.MethodGet, "/api/v1/connection_health", reader, nil); status != 200 {
		t.Errorf("list with connection:read: %d, want 200", status)
	}
	if status, _, _ := e.raw(http.MethodGet, "/api/v1/connection_health", "", nil); status != 401 {
		t.Errorf("list without a token: %d, want 401", status)
	}
	_, _, policyReader := e.client(scope.PolicyRead)
	if status, _, _ := e.raw(http.MethodGet, "/api/v1/connection_health", policyReader, nil); status != 403 {
		t.Errorf("list with policy:read only: %d, want 403", status)
	}
	e.call(http.MethodGet, path, nil, 200, &h)
	if h.State != "open" {
		t.Fatalf("a refused close changed the breaker: %+v", h)
	}

	for _, body := range []any{nil, "{}"} {
		e.call(http.MethodPost, path+"/close", body, 200, &h)
		if h.State != "closed" || h.ChangedBy == nil || *h.ChangedBy != "operator" || h.Failures != 0 {
			t.Fatalf("closed by hand (body %v): %+v", body, h)
		}
	}
	if got := listed("?state=open"); got != "" {
		t.Fatalf("open breakers after closing crm by hand: %q", got)
	}
	var states []string
	for _, m := range e.nats.Msgs(t, event.SubjectConnectionAll) {
		var ev event.ConnectionHealthChanged
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		states = append(states, m.Subject()+" by "+ev.By)
	}
	if got := strings.Join(states, ", "); got != "privacy.connection.unhealthy by executor, privacy.connection.healthy by operator" {
		t.Fatalf("events: %s", got)
	}

	for range 2 {
		_ = exec.Observe(ctx, "crm", "run", true, "HTTP 503")
	}
	e.call(http.MethodDelete, "/api/v1/connection/crm", nil, 204, nil)
	if _, rev, err := exec.Get(ctx, "crm"); err != nil || rev != 0 {
		t.Fatalf("the breaker outlived its connection: revision %d, %v", rev, err)
	}
	if got := listed(""); got != "erp:closed" {
		t.Fatalf("breakers after deleting crm: %q, want erp:closed", got)
	}
}
