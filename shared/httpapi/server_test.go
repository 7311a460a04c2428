package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// TestServer serves NewRouter's routes on a real listener: the operational routes answer, an
// unknown path and a wrong method carry a request id, a failing check makes /ready 503 and names
// it, and Wait returns only once the context ended and every after ran, in order.
func TestServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r := NewRouter(zerolog.Nop(), reg, map[string]Check{
		"store": func(context.Context) error { return errors.New("down") },
	})
	r.HandleFunc("/api/thing", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, 200, map[string]string{"ok": "yes"}) }).Methods(http.MethodGet)
	ctx, cancel := context.WithCancel(context.Background())
	var order []string
	s := Start(ctx, ln, r, func() { order = append(order, "first") }, func() { order = append(order, "second") })
	if s.Addr() != ln.Addr().String() {
		t.Fatalf("Addr = %s, want %s", s.Addr(), ln.Addr())
	}
	base := "http://" + s.Addr()
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, "/health", 200, ""},
		{http.MethodGet, "/ready", 503, "store"},
		{http.MethodGet, "/api/thing", 200, `"ok":"yes"`},
		{http.MethodGet, "/nope", 404, "Not Found"},
		{http.MethodPost, "/health", 405, ""},
		{http.MethodGet, "/metrics", 200, `http_requests_total{method="GET",route="/api/thing",status="200"} 1`},
	} {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != tt.status || !strings.Contains(string(b), tt.body) || res.Header.Get(HeaderRequestID) == "" {
			t.Errorf("%s %s: %d %q (request id %q), want %d containing %q and a request id",
				tt.method, tt.path, res.StatusCode, b, res.Header.Get(HeaderRequestID), tt.status, tt.body)
		}
	}
	if len(order) != 0 {
		t.Fatalf("after ran while serving: %v", order)
	}
	cancel()
	if err := s.Wait(); err != nil {
		t.Fatalf("Wait after the context ended: %v, want nil", err)
	}
	if got := strings.Join(order, ","); got != "first,second" {
		t.Fatalf("after ran as %q, want first,second", got)
	}
	if _, err := http.Get(base + "/health"); err == nil {
		t.Fatal("still serving after Wait")
	}
}
