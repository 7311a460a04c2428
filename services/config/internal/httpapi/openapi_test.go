package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestOpenAPIDocument checks that the served document is OpenAPI 3 JSON and describes every
// route of the router with its method.
func TestOpenAPIDocument(t *testing.T) {
	e := newEnv(t, envOptions{})
	status, b, h := e.raw(http.MethodGet, "/api/v1/openapi.json", "", nil)
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("GET openapi.json: %d %s", status, h.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if !regexp.MustCompile(`^3\.\d+\.\d+$`).MatchString(doc.OpenAPI) {
		t.Fatalf("openapi: got %q, want 3.x.y", doc.OpenAPI)
	}
	// The document is valid OpenAPI 3, as judged by a maintained validator (schemas, $refs,
	// parameters, responses).
	loaded, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatalf("openapi3 load: %v", err)
	}
	if err := loaded.Validate(context.Background()); err != nil {
		t.Fatalf("openapi3 validate: %v", err)
	}
	for _, rt := range routes(t, e.router) {
		ops, ok := doc.Paths[rt.template]
		if !ok {
			t.Errorf("route %s %s is missing from the document", rt.method, rt.template)
			continue
		}
		if _, ok := ops[strings.ToLower(rt.method)]; !ok {
			t.Errorf("route %s %s: the document has the path but not the method", rt.method, rt.template)
		}
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, path := range []string{"/health", "/ready", "/metrics"} {
		status, b, h := e.raw(http.MethodGet, path, "", nil, "X-Request-ID", "req-123")
		if status != 200 || h.Get("X-Request-ID") != "req-123" {
			t.Fatalf("%s: got %d (%.200s) request id %q, want 200 echoing req-123", path, status, b, h.Get("X-Request-ID"))
		}
	}
	e.nats.Shutdown()
	testkit.Eventually(t, 10*time.Second, "/ready to report NATS down", func() bool {
		status, _, _ := e.raw(http.MethodGet, "/ready", "", nil)
		return status == http.StatusServiceUnavailable
	})
}
