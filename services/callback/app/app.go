// Package app wires the callback service (SPEC §7): it reads the configuration, connects to NATS,
// opens the buckets it reads and the one it claims tokens in, and serves the REST API until its
// context ends. It is importable so that the local stack and end-to-end tests can run it.
package app

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/callback/internal/httpapi"
	"github.com/policyhooks/policyhooks/services/callback/internal/oauthclients"
	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/logging"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

// OpenAPI is the OpenAPI 3 document of the service, served at GET /api/v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// DefaultHTTPAddr is where the service listens unless HTTP_ADDR says otherwise.
const DefaultHTTPAddr = ":8081"

// Config is the configuration of the callback service (SPEC §8).
type Config struct {
	envconfig.Common
	// RootClientID is OAUTH_ROOT_CLIENT_ID: its access tokens are accepted without an entry in
	// oauth_clients. Optional here.
	RootClientID string
	// Tracing starts the spans of the events published (the OTEL_* variables, read by Run with
	// tracing.Setup); nil: tracing off.
	Tracing *tracing.Provider
}

// LoadConfig reads the configuration through getenv and reports every problem, each naming its
// variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	r := envconfig.New(getenv)
	c := Config{
		Common:       r.Common(DefaultHTTPAddr),
		RootClientID: r.String("OAUTH_ROOT_CLIENT_ID", ""),
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Service is a running callback service.
type Service = api.Server

// Start connects to NATS, ensures the stream and buckets, opens the listener on cfg.HTTPAddr and
// serves until ctx ends. It returns once the service is ready.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Service, error) {
	resumeKey, err := secret.DeriveKey(cfg.AppKey, secret.PurposeResumeTokens)
	if err != nil {
		return nil, fmt.Errorf("callback: APP_ENCRYPTION_KEY: %w", err)
	}
	resumeSealer, err := token.NewSealer(resumeKey)
	if err != nil {
		return nil, fmt.Errorf("callback: resume tokens: %w", err)
	}
	sealers := []*token.Sealer{resumeSealer}
	if cfg.PreviousAppKey != "" {
		prevKey, err := secret.DeriveKey(cfg.PreviousAppKey, secret.PurposeResumeTokens)
		if err != nil {
			return nil, fmt.Errorf("callback: APP_ENCRYPTION_KEY_PREVIOUS: %w", err)
		}
		prev, err := token.NewSealer(prevKey)
		if err != nil {
			return nil, fmt.Errorf("callback: resume tokens: %w", err)
		}
		sealers = append(sealers, prev)
	}
	accessKey, err := secret.DeriveKey(cfg.AppKey, secret.PurposeAccessTokens)
	if err != nil {
		return nil, fmt.Errorf("callback: APP_ENCRYPTION_KEY: %w", err)
	}
	accessSealer, err := token.NewSealer(accessKey)
	if err != nil {
		return nil, fmt.Errorf("callback: access tokens: %w", err)
	}

	nc, err := natsconn.Connect(ctx, cfg.Common, "policyhooks-callback", log)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Service, error) {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(fmt.Errorf("callback: jetstream: %w", err))
	}
	assets := natsconn.NewAssets(js, cfg.Common, log)
	stream, err := assets.Stream(ctx)
	if err != nil {
		return fail(err)
	}
	requests, err := assets.Requests(ctx)
	if err != nil {
		return fail(err)
	}
	snapshots, err := assets.PlanSnapshots(ctx)
	if err != nil {
		return fail(err)
	}
	claims, err := assets.ResumeTokens(ctx)
	if err != nil {
		return fail(err)
	}
	errored, err := assets.Errored(ctx)
	if err != nil {
		return fail(err)
	}
	clients, err := assets.Clients(ctx)
	if err != nil {
		return fail(err)
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fail(fmt.Errorf("callback: listen on %s: %w", cfg.HTTPAddr, err))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	list := requestlist.New()
	go requestlist.Follow(ctx, requests, nc, list, log)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callback_request_list_rows", Help: "Requests in this replica's request list index.",
	}, func() float64 { return float64(list.Len()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callback_request_list_loaded", Help: "1 once this replica's request list index has read privacy_requests whole, else 0.",
	}, func() float64 {
		if list.Ready() {
			return 1
		}
		return 0
	}))
	router := httpapi.NewRouter(httpapi.Deps{
		Log:      log,
		Registry: reg,
		Resume: resume.New(resume.Config{
			Requests: requests, Snapshots: plansnapshots.New(snapshots), Claims: claims, Errored: errored, Publisher: js, Tokens: sealers,
			Tracing: cfg.Tracing,
		}),
		List:    list,
		Auth:    api.NewAuthorizer(accessSealer, oauthclients.New(clients, cfg.RootClientID)),
		Ready:   readyChecks(nc, js, stream, requests, snapshots, claims, errored, clients),
		OpenAPI: OpenAPI,
	})

	s := api.Start(ctx, ln, router, nc.Close)
	log.Info().Str("addr", s.Addr()).Msg("callback service listening")
	return s, nil
}

func readyChecks(nc *nats.Conn, js jetstream.JetStream, stream jetstream.Stream, buckets ...jetstream.KeyValue) map[string]api.Check {
	checks := map[string]api.Check{
		"nats":   func(ctx context.Context) error { return natsconn.Ready(ctx, nc, js) },
		"stream": natsconn.StreamUsable(stream),
	}
	for _, kv := range buckets {
		checks["bucket "+kv.Bucket()] = natsconn.BucketUsable(kv)
	}
	return checks
}

// Run loads the configuration through getenv, logs to stderr and runs the service until ctx ends.
func Run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("callback: configuration:\n%w", err)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat, "callback")
	if err != nil {
		return err
	}
	if cfg.Tracing, err = tracing.Setup(ctx, "callback", getenv); err != nil {
		return fmt.Errorf("callback: configuration:\n%w", err)
	}
	defer tracing.ShutdownWithin(cfg.Tracing, 5*time.Second, log)
	s, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := s.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("callback: %w", err)
	}
	return nil
}
