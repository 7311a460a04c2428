// Package app wires the config service: its settings (Config, LoadConfig), its start (Start
// connects to MongoDB and NATS, publishes the plans and the client mirror, opens the HTTP
// listener) and its lifetime (Service.Wait, Run).
package app

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/httpapi"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"github.com/policyhooks/policyhooks/services/config/internal/plans"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/logging"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

// OpenAPI is the OpenAPI 3 document of the service, served at /api/v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Config is the configuration of the config service (SPEC §8).
type Config struct {
	envconfig.Common
	MongoURI      string
	MongoDatabase string
	// RootClientID and RootClientSecret are the root OAuth client, which has every scope.
	RootClientID     string
	RootClientSecret string
	AccessTokenTTL   time.Duration
	// Settings are the webhook network settings: they check secret URLs and guard the
	// verification, whose handshake trusts WebhookRoots and whose dial goes through WebhookProxy
	// when it is set, as the executor's calls do.
	netguard.Settings
	// PlanRepublishInterval is how often every plan is re-published (and the client mirror and
	// secret key rotation are reconciled).
	PlanRepublishInterval time.Duration
	// PreApproval (PRE_APPROVAL) puts the pre-approval stage, with the pre-approval webhooks, in
	// every plan: every request then waits for their replies, or an operator's approval when there
	// is no pre-approval webhook.
	PreApproval bool
}

// LoadConfig reads the configuration through getenv and reports every problem, each naming its
// variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	r := envconfig.New(getenv)
	c := Config{
		Common:                r.Common(":8080"),
		MongoURI:              r.String("MONGODB_URI", "mongodb://127.0.0.1:27017"),
		MongoDatabase:         r.String("MONGODB_DATABASE", "policyhooks"),
		RootClientID:          r.Required("OAUTH_ROOT_CLIENT_ID"),
		RootClientSecret:      r.Required("OAUTH_ROOT_CLIENT_SECRET"),
		AccessTokenTTL:        r.Duration("OAUTH_ACCESS_TOKEN_TTL", time.Hour),
		Settings:              netguard.Read(r),
		PlanRepublishInterval: r.Duration("PLAN_REPUBLISH_INTERVAL", time.Minute),
		PreApproval:           r.Bool("PRE_APPROVAL", false),
	}
	if !strings.HasPrefix(c.MongoURI, "mongodb://") && !strings.HasPrefix(c.MongoURI, "mongodb+srv://") {
		r.Fail("MONGODB_URI", "must start with mongodb:// or mongodb+srv://")
	}
	if strings.ContainsAny(c.MongoDatabase, `/\. "$`) {
		r.Fail("MONGODB_DATABASE", "must not contain /, \\, ., space, \" or $, got %q", c.MongoDatabase)
	}
	// Client ids are keys of the oauth_clients bucket.
	if c.RootClientID != "" && !event.ValidKVKey(c.RootClientID) {
		r.Fail("OAUTH_ROOT_CLIENT_ID", "must contain only letters, digits and '_-=./', not start or end with '.' nor hold '..'")
	}
	return c, r.Err()
}

// Service is a running config service.
type Service = api.Server

// Start connects to MongoDB and NATS, ensures the buckets, re-seals secrets sealed under the
// previous key, mirrors the OAuth clients, publishes every plan, opens the HTTP listener and
// serves until ctx ends.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Service, error) {
	keyring, err := secret.NewKeyring(cfg.AppKey, cfg.PreviousAppKey, secret.PurposeSecrets)
	if err != nil {
		return nil, fmt.Errorf("APP_ENCRYPTION_KEY: %w", err)
	}
	tokenKey, err := secret.DeriveKey(cfg.AppKey, secret.PurposeAccessTokens)
	if err != nil {
		return nil, fmt.Errorf("APP_ENCRYPTION_KEY: %w", err)
	}
	sealer, err := token.NewSealer(tokenKey)
	if err != nil {
		return nil, err
	}
	openCtx, cancelOpen := context.WithTimeout(ctx, 30*time.Second)
	defer cancelOpen()
	st, err := store.Open(openCtx, cfg.MongoURI, cfg.MongoDatabase)
	if err != nil {
		return nil, err
	}
	closeStore := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.Close(c)
	}
	nc, err := natsconn.Connect(ctx, cfg.Common, "policyhooks-config", log)
	if err != nil {
		closeStore()
		return nil, err
	}
	fail := func(err error) (*Service, error) {
		nc.Close()
		closeStore()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(fmt.Errorf("jetstream: %w", err))
	}
	// The buckets wait for JetStream as long as the service runs (a cluster electing its leaders).
	assets := natsconn.NewAssets(js, cfg.Common, log)
	plansKV, err := assets.Plans(ctx)
	if err != nil {
		return fail(err)
	}
	clientsKV, err := assets.Clients(ctx)
	if err != nil {
		return fail(err)
	}
	healthKV, err := assets.Health(ctx)
	if err != nil {
		return fail(err)
	}

	pub := plans.NewPublisher(st, plansKV, cfg.PreApproval, log)
	conns := connection.NewService(st, st, pub, keyring, cfg.Settings.Policy(), cfg.WebhookRoots, log)
	// Config only reads and closes breakers: the executor's settings open them.
	conns.UseBreakers(breaker.NewStore(healthKV, js, breaker.Config{}, log))
	pols := policy.NewService(st, st, pub, log)
	oa := oauth.NewService(st, clientsKV, sealer, oauth.Root{ID: cfg.RootClientID, Secret: cfg.RootClientSecret},
		cfg.AccessTokenTTL, log)

	if err := conns.Reseal(openCtx); err != nil {
		log.Warn().Err(err).Msg("re-sealing connection secrets under the current key failed")
	}
	if err := oa.Sync(openCtx); err != nil {
		return fail(err)
	}
	if err := pub.Republish(openCtx); err != nil {
		return fail(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	router := httpapi.Routes(httpapi.Deps{
		Log: log, Registry: reg, OAuth: oa, Auth: api.NewAuthorizer(sealer, oa),
		Connections: conns, Policies: pols, OpenAPI: OpenAPI,
		Ready: map[string]api.Check{
			"mongodb":                      st.Ping,
			"nats":                         func(ctx context.Context) error { return natsconn.Ready(ctx, nc, js) },
			"bucket " + plansKV.Bucket():   natsconn.BucketUsable(plansKV),
			"bucket " + clientsKV.Bucket(): natsconn.BucketUsable(clientsKV),
			"bucket " + healthKV.Bucket():  natsconn.BucketUsable(healthKV),
		},
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fail(fmt.Errorf("HTTP_ADDR: listen %s: %w", cfg.HTTPAddr, err))
	}

	runCtx, stop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		pub.Run(runCtx, cfg.PlanRepublishInterval, conns.Reseal, oa.Sync)
	}()
	// After the serving: the re-publish loop ends, then NATS drains and the store closes.
	return api.Start(runCtx, ln, router, stop, func() { <-loopDone }, func() {
		if err := nc.Drain(); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Msg("nats drain")
		}
	}, closeStore), nil
}

// Run loads the configuration, starts the service and waits for it to stop.
func Run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: invalid settings:\n%w", err)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat, "config")
	if err != nil {
		return err
	}
	s, err := Start(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("config: start: %w", err)
	}
	log.Info().Str("addr", s.Addr()).Msg("config service listening")
	return s.Wait()
}
