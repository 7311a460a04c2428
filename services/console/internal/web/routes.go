// Package web is the console's HTTP face: the embedded single-page application, the reverse proxy
// that puts the config and callback APIs behind the console's origin, the strict security headers
// on every answer, and health, readiness and metrics.
package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Deps are what the routes need.
type Deps struct {
	Log      zerolog.Logger
	Registry *prometheus.Registry
	// Backends are the base URLs of the config and callback services.
	Backends map[Backend]*url.URL
	// Client makes the readiness checks' calls to the backends.
	Client *http.Client
}

// NewRouter returns every route of the console on one router, behind the shared middleware and the
// security headers. It registers the HTTP metrics on d.Registry.
func NewRouter(d Deps) (http.Handler, error) {
	files, err := loadAssets()
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	for _, b := range []Backend{Config, Callback} {
		if d.Backends[b] == nil {
			return nil, fmt.Errorf("console: no URL for the %s service", b)
		}
	}
	r := api.NewRouter(d.Log, d.Registry, readyChecks(d.Client, d.Backends))
	r.PathPrefix("/api/").Handler(proxyHandler(newProxy(d.Backends, d.Log)))
	r.PathPrefix("/").Handler(staticHandler(files)).Methods(http.MethodGet, http.MethodHead)
	return securityHeaders(r), nil
}

// readyChecks asks each backend's /health.
func readyChecks(client *http.Client, backends map[Backend]*url.URL) map[string]api.Check {
	checks := map[string]api.Check{}
	for name, base := range backends {
		healthURL := base.JoinPath("/health").String()
		checks[string(name)] = func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, healthURL, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("health: status %d", resp.StatusCode)
			}
			return nil
		}
	}
	return checks
}
