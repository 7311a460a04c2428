// Package app wires the executor: configuration, NATS topology, the plans view, the webhook sender,
// the runner of the lifecycle with its two durable consumers, the health/readiness/metrics
// listener, and the graceful stop.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/plans"
	"github.com/policyhooks/policyhooks/services/executor/internal/publish"
	"github.com/policyhooks/policyhooks/services/executor/internal/runner"
	"github.com/policyhooks/policyhooks/services/executor/internal/secrets"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/services/executor/internal/sweep"
	"github.com/policyhooks/policyhooks/services/executor/internal/timers"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/logging"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

// Version is sent in the User-Agent of webhook calls (policyhooks/<version>).
var Version = "0.1.0"

// DefaultRequestRetention is REQUEST_RETENTION when unset: 730 days. A privacy request's record is
// the proof that it was answered and when; the CCPA regulations (11 CCR §7101) ask for records of
// consumer requests to be kept at least 24 months, and GDPR's accountability (Art. 5(2)) for being
// able to show compliance. The record holds no personal data (SPEC §5).
const DefaultRequestRetention = 730 * 24 * time.Hour

// Durable consumer names, shared by every replica.
const (
	ConsumerSubmitted = "executor-submitted"
	ConsumerControl   = "executor-control"
)

// Config is the executor's configuration (SPEC §8).
type Config struct {
	envconfig.Common
	WebhookTimeout     time.Duration
	WebhookMaxAttempts int
	// Settings are the webhook network settings: the guard of every call and its trusted roots.
	netguard.Settings
	// WebhookRetryBaseDelay and WebhookRetryMaxDelay shape the backoff between attempts;
	// the max also caps Retry-After.
	WebhookRetryBaseDelay time.Duration
	WebhookRetryMaxDelay  time.Duration
	// WebhookMaxConnsPerHost caps the connections to one webhook host (WEBHOOK_MAX_CONNS_PER_HOST).
	WebhookMaxConnsPerHost int
	CallbackPublicURL      string
	IdentityTTL            time.Duration
	// FinishedIdentityRetention is how long a finished (complete or denied) request's identity is
	// kept (FINISHED_IDENTITY_RETENTION, default 0: removed when the request finishes).
	FinishedIdentityRetention time.Duration
	// IdentitySweepInterval is how often the identities of finished requests that their purge
	// missed are looked for (IDENTITY_SWEEP_INTERVAL, default 10m; package sweep).
	IdentitySweepInterval time.Duration
	// BreakerFailures is CIRCUIT_BREAKER_FAILURES: the failed calls in a row that open a
	// connection's circuit breaker (default 0: breakers off); BreakerCooldown is
	// CIRCUIT_BREAKER_COOLDOWN, the wait before an open breaker's probe (default 30s);
	// BreakerMaxWait is CIRCUIT_BREAKER_MAX_WAIT, how long a request waits on an unhealthy
	// connection before it fails (default 24h; 0: no bound).
	BreakerFailures int
	BreakerCooldown time.Duration
	BreakerMaxWait  time.Duration
	// RequestRetention is how long a finished (complete or denied) request's record is kept
	// (REQUEST_RETENTION, default DefaultRequestRetention; zero: for good).
	RequestRetention time.Duration
	PauseTimeout     time.Duration // PRIVACY_REQUEST_DELAY_TIMEOUT
	ExecutionStage   string        // await or skip
	ExecutionTimeout time.Duration
	Concurrency      int
	// ActiveHandlers bounds the handlers working at once (EXECUTOR_ACTIVE_HANDLERS, default 256, at
	// most Concurrency); handlers waiting for a webhook answer or a call slot do not count.
	ActiveHandlers int
	// PProf serves net/http/pprof under /debug/pprof on HTTP_ADDR (PPROF, default false).
	PProf bool
	// ShutdownGrace is how long a stopping executor lets its calls in flight finish
	// (EXECUTOR_SHUTDOWN_GRACE, default 25s).
	ShutdownGrace time.Duration

	// AckWait is how long a message may go without a sign of life before it is redelivered, and
	// LeaseMargin what a claim on a webhook call lasts beyond WEBHOOK_TIMEOUT. Not read from the
	// environment; tests shorten them.
	AckWait     time.Duration
	LeaseMargin time.Duration
	// Hooks are test hooks; nil in production.
	Hooks runner.Hooks
	// Tracing starts the spans of messages and webhook calls (the OTEL_* variables, read by Run
	// with tracing.Setup); nil: tracing off.
	Tracing *tracing.Provider
}

// LoadConfig reads and checks the configuration, reporting every bad variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	r := envconfig.New(getenv)
	c := Config{
		Common:                    r.Common(":8082"),
		WebhookTimeout:            r.Duration("WEBHOOK_TIMEOUT", 30*time.Second),
		WebhookMaxAttempts:        r.Int("WEBHOOK_MAX_ATTEMPTS", 5, 1, 100),
		Settings:                  netguard.Read(r),
		WebhookRetryBaseDelay:     r.Duration("WEBHOOK_RETRY_BASE_DELAY", time.Second),
		WebhookRetryMaxDelay:      r.Duration("WEBHOOK_RETRY_MAX_DELAY", 60*time.Second),
		WebhookMaxConnsPerHost:    r.Int("WEBHOOK_MAX_CONNS_PER_HOST", 1024, 1, 100000),
		CallbackPublicURL:         r.URL("CALLBACK_PUBLIC_URL", "", "http", "https"),
		IdentityTTL:               r.Duration("IDENTITY_TTL", 604800*time.Second),
		FinishedIdentityRetention: r.DurationOrZero("FINISHED_IDENTITY_RETENTION", 0),
		IdentitySweepInterval:     r.Duration("IDENTITY_SWEEP_INTERVAL", 10*time.Minute),
		BreakerFailures:           r.Int("CIRCUIT_BREAKER_FAILURES", 0, 0, 10000),
		BreakerCooldown:           r.Duration("CIRCUIT_BREAKER_COOLDOWN", 30*time.Second),
		BreakerMaxWait:            r.DurationOrZero("CIRCUIT_BREAKER_MAX_WAIT", 24*time.Hour),
		RequestRetention:          r.DurationOrForever("REQUEST_RETENTION", DefaultRequestRetention),
		PauseTimeout:              r.Duration("PRIVACY_REQUEST_DELAY_TIMEOUT", 60*time.Hour),
		ExecutionStage:            r.OneOf("EXECUTION_STAGE", "await", "await", "skip"),
		ExecutionTimeout:          r.Duration("EXECUTION_TIMEOUT", 24*time.Hour),
		Concurrency:               r.Int("EXECUTOR_CONCURRENCY", 256, 1, 100000),
		ActiveHandlers:            r.Int("EXECUTOR_ACTIVE_HANDLERS", 256, 1, 100000),
		PProf:                     r.Bool("PPROF", false),
		ShutdownGrace:             r.Duration("EXECUTOR_SHUTDOWN_GRACE", 25*time.Second),
		AckWait:                   30 * time.Second,
		LeaseMargin:               15 * time.Second,
	}
	if c.WebhookRetryMaxDelay < c.WebhookRetryBaseDelay {
		r.Fail("WEBHOOK_RETRY_MAX_DELAY", "must not be shorter than WEBHOOK_RETRY_BASE_DELAY")
	}
	// Timers are scheduled messages in the stream: one due after the stream's MaxAge would be
	// removed before it fires, and its request would never time out.
	for name, d := range map[string]time.Duration{
		"PRIVACY_REQUEST_DELAY_TIMEOUT": c.PauseTimeout, "EXECUTION_TIMEOUT": c.ExecutionTimeout,
	} {
		if d >= c.EventRetention {
			r.Fail(name, "must be shorter than EVENT_RETENTION (%s), how long the %s stream keeps its timers", c.EventRetention, event.Stream)
		}
	}
	// Every submitted event in the stream must find its record: a consumer created anew (its
	// durable deleted by an operator) would otherwise run a finished request again.
	if c.RequestRetention > 0 && c.RequestRetention < c.EventRetention {
		r.Fail("REQUEST_RETENTION", "must be 0 (keep for good) or at least EVENT_RETENTION (%s), got %s", c.EventRetention, c.RequestRetention)
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// breakerRecheck is how soon a request held on a connection whose probe is in flight looks again,
// and breakerLook how often a held request looks at the breaker at least (an operator may close it).
const (
	breakerRecheck = time.Second
	breakerLook    = 5 * time.Second
)

// Service is a running executor.
type Service struct {
	ln    net.Listener
	wg    sync.WaitGroup
	errMu sync.Mutex
	err   error
}

// Addr returns the host:port of the health/metrics listener.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// Wait blocks until the service stopped and returns the first error it met.
func (s *Service) Wait() error {
	s.wg.Wait()
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *Service) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Start connects, declares the topology, starts consuming and serving, and returns once ready.
// When ctx ends the executor stops: it pulls no more messages and starts no new call, lets the
// calls in flight finish within ShutdownGrace (then cuts them off and records them as
// interrupted), hands back every message it holds and closes its connection.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (*Service, error) {
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.LeaseMargin <= 0 {
		cfg.LeaseMargin = 15 * time.Second
	}
	secretKeys, err := secret.NewKeyring(cfg.AppKey, cfg.PreviousAppKey, secret.PurposeSecrets)
	if err != nil {
		return nil, fmt.Errorf("executor: secrets keyring: %w", err)
	}
	identityKeys, err := secret.NewKeyring(cfg.AppKey, cfg.PreviousAppKey, secret.PurposeIdentities)
	if err != nil {
		return nil, fmt.Errorf("executor: identities keyring: %w", err)
	}
	resumeKey, err := secret.DeriveKey(cfg.AppKey, secret.PurposeResumeTokens)
	if err != nil {
		return nil, fmt.Errorf("executor: resume token key: %w", err)
	}
	sealer, err := token.NewSealer(resumeKey)
	if err != nil {
		return nil, fmt.Errorf("executor: resume token sealer: %w", err)
	}
	sender := webhook.NewSender(webhook.Config{
		Timeout:             cfg.WebhookTimeout,
		Policy:              cfg.Settings.Policy(),
		Roots:               cfg.WebhookRoots,
		MaxIdleConnsPerHost: min(cfg.Concurrency, cfg.WebhookMaxConnsPerHost),
		MaxConnsPerHost:     cfg.WebhookMaxConnsPerHost,
		UserAgent:           "policyhooks/" + Version,
	})

	nc, err := natsconn.Connect(ctx, cfg.Common, "executor", log)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	// Status events are published asynchronously, a few per request in flight.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(4000, 4*cfg.Concurrency)))
	if err != nil {
		return nil, fmt.Errorf("executor: jetstream: %w", err)
	}
	// The assets wait for JetStream as long as the service runs (a cluster electing its leaders).
	assets := natsconn.NewAssets(js, cfg.Common, log)
	stream, err := assets.Stream(ctx)
	if err != nil {
		return nil, err
	}
	requestsKV, err := assets.Requests(ctx)
	if err != nil {
		return nil, err
	}
	snapshotsKV, err := assets.PlanSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	erroredKV, err := assets.Errored(ctx)
	if err != nil {
		return nil, err
	}
	healthKV, err := assets.Health(ctx)
	if err != nil {
		return nil, err
	}
	identitiesKV, err := assets.Identities(ctx, cfg.IdentityTTL)
	if err != nil {
		return nil, err
	}
	plansKV, err := assets.Plans(ctx)
	if err != nil {
		return nil, err
	}
	// runCtx ends at the soft stop (ctx), workCtx at the hard stop (ShutdownGrace later).
	runCtx, cancel := context.WithCancel(ctx)
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if !ok {
			cancel()
			cancelWork()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := runner.NewMetrics(reg)
	view := plans.Watch(workCtx, plansKV, nc, metrics.CountNATS, log)
	pool := consume.NewPool(cfg.Concurrency)
	records := store.NewRecords(requestsKV, plansnapshots.New(snapshotsKV), js, cfg.RequestRetention, metrics.CountNATS)
	identities := store.NewIdentities(identitiesKV, js, identityKeys, cfg.IdentityTTL, metrics.CountNATS)
	errored := store.NewErrored(erroredKV, metrics.CountNATS)
	lc := lifecycle.Config{
		MaxAttempts:               cfg.WebhookMaxAttempts,
		ClaimTTL:                  cfg.WebhookTimeout + cfg.LeaseMargin,
		PauseTimeout:              cfg.PauseTimeout,
		AwaitExecution:            cfg.ExecutionStage == "await",
		ExecutionTimeout:          cfg.ExecutionTimeout,
		IdentityTTL:               cfg.IdentityTTL,
		FinishedIdentityRetention: cfg.FinishedIdentityRetention,
		BreakerMaxWait:            cfg.BreakerMaxWait,
		BreakerRecheck:            breakerRecheck,
		BreakerLook:               breakerLook,
	}
	health := breaker.NewStore(healthKV, js, breaker.Config{
		Failures: cfg.BreakerFailures, Cooldown: cfg.BreakerCooldown, ProbeTTL: lc.ClaimTTL, Recheck: breakerRecheck,
	}, log)
	go health.Watch(workCtx, nc)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "executor_connection_breakers_open",
		Help: "Connections whose circuit breaker is open, as this replica's view of connection_health shows them.",
	}, func() float64 { return float64(health.OpenCount()) }))
	run := runner.New(runner.Config{
		Lifecycle:         lc,
		CallbackPublicURL: cfg.CallbackPublicURL,
		RetryBaseDelay:    cfg.WebhookRetryBaseDelay,
		RetryMaxDelay:     cfg.WebhookRetryMaxDelay,
	}, runner.Deps{
		Records:    records,
		Identities: identities,
		Errors:     errored,
		Publisher:  publish.New(js, cfg.ExecutionTimeout, metrics.CountNATS),
		Timers:     timers.NewScheduler(js, metrics.CountNATS),
		Plans:      view,
		Caller:     sender,
		Secrets:    secrets.NewOpener(secretKeys),
		Health:     health,
		Seal:       sealer.Seal,
		Pool:       pool,
		Metrics:    metrics,
		Hooks:      cfg.Hooks,
		Log:        log,
		Tracing:    cfg.Tracing,
	})

	consumers := []struct {
		name    string
		filters []string
		handler consume.Handler
	}{
		{ConsumerSubmitted, []string{event.SubjectSubmitted}, run.HandleSubmitted},
		{ConsumerControl, []string{event.SubjectExecuted, event.SubjectResume, event.SubjectRetry, event.SubjectPreApproval,
			event.SubjectReview, timers.FireSubjects}, run.HandleControl},
	}
	active := make(chan struct{}, min(cfg.ActiveHandlers, cfg.Concurrency))
	var loops []*consume.Loop
	ready := map[string]httpapi.Check{
		"nats":                            func(ctx context.Context) error { return natsconn.Ready(ctx, nc, js) },
		"stream":                          natsconn.StreamUsable(stream),
		"bucket " + requestsKV.Bucket():   natsconn.BucketUsable(requestsKV),
		"bucket " + identitiesKV.Bucket(): natsconn.BucketUsable(identitiesKV),
		"bucket " + erroredKV.Bucket():    natsconn.BucketUsable(erroredKV),
		"bucket " + healthKV.Bucket():     natsconn.BucketUsable(healthKV),
		"bucket " + snapshotsKV.Bucket():  natsconn.BucketUsable(snapshotsKV),
		"plans": func(context.Context) error {
			if !view.Loaded() {
				return errors.New("plans view not loaded yet")
			}
			return nil
		},
	}
	for _, c := range consumers {
		ccfg := jetstream.ConsumerConfig{
			Durable:        c.name,
			FilterSubjects: c.filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        cfg.AckWait,
			MaxDeliver:     -1,
			// Each replica pulls only what its slots can take; the server does not bound the
			// messages pending (handled, or handed back for later) of all replicas together.
			MaxAckPending: -1,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		}
		open := func(ctx context.Context) (jetstream.Consumer, error) {
			return js.CreateOrUpdateConsumer(ctx, event.Stream, ccfg)
		}
		loop, err := consume.Start(runCtx, open, c.handler, consume.Options{
			Pool: pool, Active: active, KeepAlive: cfg.AckWait / 3,
			Prefetch: max(1, min(16, cfg.Concurrency/4)), MaxBatch: max(1, min(cfg.Concurrency, 256)),
			Work:    workCtx,
			OnStart: metrics.InFlight.Inc, OnDone: metrics.InFlight.Dec,
			Trace: run.TraceMessage(),
		}, log.With().Str("consumer", c.name).Logger())
		if err != nil {
			return nil, fmt.Errorf("executor: consumer %s: %w", c.name, err)
		}
		loops = append(loops, loop)
		name := c.name
		ready["consumer "+name] = func(ctx context.Context) error {
			if err := loop.Ready(); err != nil {
				return err
			}
			_, err := js.Consumer(ctx, event.Stream, name)
			return err
		}
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("executor: listen %s: %w", cfg.HTTPAddr, err)
	}
	router := routes(log, reg, cfg.PProf, ready)
	s := &Service{ln: ln}
	ok = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := httpapi.Serve(runCtx, ln, router); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("executor: http: %w", err))
			cancel()
		}
	}()
	sweeper := &sweep.Sweeper{Records: records, Identities: identities, Errors: errored, Cfg: lc, Log: log}
	s.wg.Go(func() { sweeper.Run(runCtx, cfg.IdentitySweepInterval) })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-runCtx.Done()
		drained := make(chan struct{})
		go func() {
			for _, l := range loops {
				l.Wait()
			}
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(cfg.ShutdownGrace):
			log.Warn().Dur("grace", cfg.ShutdownGrace).Msg("calls still in flight after the grace period: cutting them off")
			cancelWork()
			<-drained
		}
		cancelWork()
		sender.Close()
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			nc.Close()
		}
		for nc.IsDraining() {
			time.Sleep(20 * time.Millisecond)
		}
		nc.Close()
	}()
	// Ready once the plans view holds the bucket's content, so that the first calls use the
	// secrets last published (a request's plan is read from the bucket at submission either way).
	deadline := time.After(10 * time.Second)
	for !view.Loaded() {
		select {
		case <-deadline:
			log.Warn().Msg("plans view not loaded after 10s; continuing, calls use their snapshot's secrets until it is")
			return s, nil
		case <-ctx.Done():
			return s, nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	started := log.Info().Str("addr", s.Addr()).Int("concurrency", cfg.Concurrency).Str("execution_stage", cfg.ExecutionStage)
	if cfg.WebhookProxy != nil {
		// Its scheme, host and port: never its credentials.
		started = started.Stringer("webhook_proxy", cfg.WebhookProxy)
	}
	started.Msg("executor started")
	return s, nil
}

func routes(log zerolog.Logger, reg *prometheus.Registry, profiling bool, checks map[string]httpapi.Check) *mux.Router {
	r := httpapi.NewRouter(log, reg, checks)
	if profiling {
		r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		r.HandleFunc("/debug/pprof/profile", pprof.Profile)
		r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		r.HandleFunc("/debug/pprof/trace", pprof.Trace)
		r.PathPrefix("/debug/pprof/").HandlerFunc(pprof.Index)
	}
	return r
}

// Run loads the configuration from getenv, starts the executor and waits until ctx ends.
func Run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("executor: configuration:\n%w", err)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat, "executor")
	if err != nil {
		return err
	}
	if cfg.Tracing, err = tracing.Setup(ctx, "executor", getenv); err != nil {
		return fmt.Errorf("executor: configuration:\n%w", err)
	}
	defer tracing.ShutdownWithin(cfg.Tracing, 5*time.Second, log)
	s, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	return s.Wait()
}
