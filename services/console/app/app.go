// Package app wires the console: it reads the configuration and serves the operator web
// application and its API proxy until its context ends. The console holds no secret and no state.
// It is importable so that the local stack and end-to-end tests can run it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/services/console/internal/web"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

// DefaultHTTPAddr is where the console listens unless HTTP_ADDR says otherwise.
const DefaultHTTPAddr = ":8083"

// Config is the configuration of the console.
type Config struct {
	// HTTPAddr is HTTP_ADDR, the address to listen on.
	HTTPAddr string
	// ConfigURL is CONFIG_URL, the config service's base URL (http or https).
	ConfigURL string
	// CallbackURL is CALLBACK_URL, the callback service's base URL (http or https).
	CallbackURL string
	LogLevel    string
	LogFormat   string
}

// LoadConfig reads the configuration through getenv and reports every problem, each naming its
// variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	r := envconfig.New(getenv)
	c := Config{
		HTTPAddr:    r.String("HTTP_ADDR", DefaultHTTPAddr),
		ConfigURL:   r.URL("CONFIG_URL", "", "http", "https"),
		CallbackURL: r.URL("CALLBACK_URL", "", "http", "https"),
		LogLevel:    r.OneOf("LOG_LEVEL", "info", "trace", "debug", "info", "warn", "error"),
		LogFormat:   r.OneOf("LOG_FORMAT", "json", "json", "console"),
	}
	for _, u := range []struct{ name, value string }{{"CONFIG_URL", c.ConfigURL}, {"CALLBACK_URL", c.CallbackURL}} {
		name, v := u.name, u.value
		if strings.TrimSpace(getenv(name)) == "" {
			r.Fail(name, "is required")
			continue
		}
		if u, err := url.Parse(v); err == nil && (u.Path != "" || u.RawQuery != "" || u.Fragment != "") {
			r.Fail(name, "must be a base URL without a path, query or fragment, got %q", v)
		}
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Service is a running console.
type Service = api.Server

// Start opens the listener on cfg.HTTPAddr and serves until ctx ends. It returns once serving.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Service, error) {
	backends := map[web.Backend]*url.URL{}
	for b, raw := range map[web.Backend]string{web.Config: cfg.ConfigURL, web.Callback: cfg.CallbackURL} {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("console: the %s service's URL %q is not an absolute URL", b, raw)
		}
		backends[b] = u
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	handler, err := web.NewRouter(web.Deps{
		Log: log, Registry: reg, Backends: backends,
		Client: &http.Client{Timeout: 5 * time.Second},
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("console: listen on %s: %w", cfg.HTTPAddr, err)
	}
	s := api.Start(ctx, ln, handler)
	log.Info().Str("addr", s.Addr()).Msg("console listening")
	return s, nil
}

// Run loads the configuration through getenv, logs to stderr and runs the console until ctx ends.
func Run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("console: configuration:\n%w", err)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat, "console")
	if err != nil {
		return err
	}
	s, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := s.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}
