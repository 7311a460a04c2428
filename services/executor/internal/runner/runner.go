// Package runner performs what the lifecycle (internal/lifecycle) decides: for each message it
// records the message's input on the request's record by compare-and-set, then drives the request
// from its record — merging identities, claiming and making webhook calls, scheduling timers and
// publishing execute and status events — until the request waits, and tells the consumer loop
// whether to acknowledge the message or have it back later. Everything it touches is behind the
// small interfaces below, so tests drive it with fakes as well as with NATS.
package runner

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Records stores request records (store.Records).
type Records interface {
	Load(ctx context.Context, id string) (*lifecycle.Record, uint64, error)
	Create(ctx context.Context, r *lifecycle.Record) (uint64, error)
	Update(ctx context.Context, r *lifecycle.Record, rev uint64) (uint64, error)
}

// Identities stores sealed identities and the derived identities still to merge (store.Identities).
type Identities interface {
	Get(ctx context.Context, id string) (event.Identity, error)
	Create(ctx context.Context, id string, ident event.Identity) (time.Time, bool, error)
	Put(ctx context.Context, id string, ident event.Identity) (time.Time, error)
	Delete(ctx context.Context, id string) error
	PutPatch(ctx context.Context, id, name string, ident event.Identity) error
	Patch(ctx context.Context, id, name string) (event.Identity, error)
	DeletePatch(ctx context.Context, id, name string) error
	// Forget removes a finished request's identity, or keeps it until until when that is later
	// than now (its derived identities were removed as they were merged).
	Forget(ctx context.Context, id string, until time.Time) error
}

// Errors indexes the requests in error for scoped retries (store.Errored).
type Errors interface {
	Put(ctx context.Context, e event.Errored) error
	Delete(ctx context.Context, id string) error
}

// Ack is the pending confirmation of an asynchronous publish (jetstream.PubAckFuture): one of its
// channels delivers, once.
type Ack interface {
	Ok() <-chan *jetstream.PubAck
	Err() <-chan error
}

// Publisher publishes the executor's events.
type Publisher interface {
	// Status publishes a status event asynchronously with Nats-Msg-Id status:<id>:<seq> (and the
	// trace context of ctx).
	Status(ctx context.Context, ev event.StatusChanged) (Ack, error)
	// Execute publishes execute with Nats-Msg-Id = its execution id and waits until it is stored.
	Execute(ctx context.Context, ev event.Execute) error
	// Invalid publishes the status.error of a submission that was not taken (msgID de-duplicates
	// its redeliveries); Rejected the rejection of an event without a usable id.
	Invalid(ctx context.Context, ev event.StatusChanged, msgID string) error
	Rejected(ctx context.Context, ev event.Rejected) error
}

// Timers schedules durable timers (timers.Scheduler).
type Timers interface {
	Schedule(ctx context.Context, id string, t lifecycle.Timer) error
}

// Plans returns a policy's plan, plans.ErrNotFound when it has none (plans.View).
type Plans interface {
	Get(ctx context.Context, policyKey string) (event.Plan, error)
	// Latest returns the plan of policyKey as this replica last saw it, without I/O.
	Latest(policyKey string) (event.Plan, bool)
}

// Caller makes webhook calls (webhook.Sender): call slots per host, then the call.
type Caller interface {
	TryAcquire(url string) *webhook.Slot
	Acquire(ctx context.Context, url string) *webhook.Slot
	Send(ctx context.Context, c webhook.Call) webhook.Result
}

// Secrets opens the connection secrets of a plan webhook: the secrets, or why they cannot be used.
type Secrets interface {
	Open(w event.PlanWebhook) (event.HTTPSSecrets, string)
}

// Health is the connections' circuit breakers (breaker.Store): Held reads its local view, the
// others write connection_health. Nil in Deps: no breaker is ever open.
type Health interface {
	lifecycle.Health
	// Open reports whether the local view shows the connection's breaker open.
	Open(connectionKey string) bool
	// TakeProbe asks to make the probe call of an open breaker; it reports whether owner may call.
	TakeProbe(ctx context.Context, connectionKey, owner string) (bool, error)
	// Observe records the outcome of a call (failed: a retryable failure, with its reason).
	Observe(ctx context.Context, connectionKey, owner string, failed bool, reason string) error
}

// SealFunc seals a reply-to-token (token.Sealer.Seal).
type SealFunc func(c token.Claimer, ttl time.Duration) (string, error)

// Pool is the consumer loops' pool of message slots (consume.Pool): host shares are counted
// against it. Nil: no shares.
type Pool interface {
	Cap() int
	Used() int
}

// Config holds the runner's settings.
type Config struct {
	Lifecycle lifecycle.Config
	// CallbackPublicURL prefixes the reply-to path.
	CallbackPublicURL string
	// RetryBaseDelay and RetryMaxDelay shape the backoff between attempts; RetryMaxDelay also caps
	// Retry-After.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
}

// Hooks let tests stop a run at chosen points, as a crash would: an error abandons the message
// without acknowledging it and without writing anything more. Nil in production.
type Hooks struct {
	// AfterCall runs after a webhook answered and before the answer is written.
	AfterCall func(requestID, webhookKey string) error
	// AfterWrite runs after each write of a record.
	AfterWrite func(requestID string) error
	// BeforePublish runs before a status event is published; an error fails that publish, as a
	// full publish buffer or a lost connection would.
	BeforePublish func(ev event.StatusChanged) error
}

// Deps are what a Runner works with. Records and Identities report their outcomes with the errors
// of package store (store.ErrNotFound, ErrExists, ErrConflict, ErrTooLarge), Plans with
// plans.ErrNotFound, as the real ones do.
type Deps struct {
	Records    Records
	Identities Identities
	Errors     Errors
	Publisher  Publisher
	Timers     Timers
	Plans      Plans
	Caller     Caller
	Secrets    Secrets
	Health     Health
	Seal       SealFunc
	Pool       Pool
	Metrics    *Metrics
	Hooks      Hooks
	Log        zerolog.Logger
	// Tracing starts the spans of messages and calls; nil: tracing off.
	Tracing *tracing.Provider
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Go runs f beside the handler (the identity written with a new record, an outbox cleared
	// after the message is acknowledged) and returns a wait for its end; nil: a goroutine. Tests
	// that explore schedules track it.
	Go func(f func()) (wait func())
	// Jitter returns a random duration in [0, n) for backoffs; nil: math/rand.
	Jitter func(n int64) int64
}

// Runner runs messages through the lifecycle.
type Runner struct {
	cfg    Config
	d      Deps
	shares *shares
	now    func() time.Time
	log    zerolog.Logger
	m      *Metrics
	// clearing bounds the outbox clears under way in the background.
	clearing chan struct{}
}

// New returns a Runner.
func New(cfg Config, d Deps) *Runner {
	if cfg.Lifecycle.MaxInterrupts == 0 {
		cfg.Lifecycle.MaxInterrupts = lifecycle.DefaultMaxInterrupts
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	m := d.Metrics
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	if d.Go == nil {
		d.Go = goroutine
	}
	if d.Jitter == nil {
		d.Jitter = jitter
	}
	return &Runner{cfg: cfg, d: d, shares: newShares(d.Pool), now: now, log: d.Log, m: m, clearing: make(chan struct{}, 64)}
}

// goroutine runs f in a goroutine; the wait returned blocks until it returned.
func goroutine(f func()) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return func() { <-done }
}

// backoff returns the delay before attempt n+1 after n failed attempts: exponential from the base
// delay with jitter (uniform in [d/2, d]), capped; a Retry-After replaces it, capped too.
func (r *Runner) backoff(n int, retryAfter time.Duration, rnd func(int64) int64) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, r.cfg.RetryMaxDelay)
	}
	d := r.cfg.RetryBaseDelay
	for i := 1; i < n && d < r.cfg.RetryMaxDelay; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMaxDelay)
	half := d / 2
	return half + time.Duration(rnd(int64(half)+1))
}

// replyTo returns the public URL of the callback service at path.
func (r *Runner) replyTo(path string) string {
	return strings.TrimRight(r.cfg.CallbackPublicURL, "/") + path
}

// hostOf is the host key of a webhook URL: scheme and host:port, lower case.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
}

// Metrics of the runner.
type Metrics struct {
	transitions *prometheus.CounterVec
	attempts    *prometheus.CounterVec
	rows        *prometheus.CounterVec
	latency     prometheus.Histogram
	// NATSRequests counts the NATS requests (round trips) made for requests, by operation.
	NATSRequests *prometheus.CounterVec
	// InFlight counts messages being handled.
	InFlight prometheus.Gauge
	// connCalls and connLatency are the calls and their latency by connection key (at most
	// MaxConnectionLabels keys, the others as OtherConnections).
	connCalls   *prometheus.CounterVec
	connLatency *prometheus.HistogramVec
	connMu      sync.Mutex
	connKeys    map[string]bool
}

// MaxConnectionLabels bounds the connection keys the per-connection metrics name: a replica names
// the first ones it calls, and counts the calls of any other under OtherConnections, so that the
// series stay bounded however many connections there are.
const MaxConnectionLabels = 500

// OtherConnections is the connection label of the calls of connections beyond MaxConnectionLabels.
const OtherConnections = "~other"

// connection returns the label of connection key.
func (m *Metrics) connection(key string) string {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if !m.connKeys[key] {
		if len(m.connKeys) >= MaxConnectionLabels {
			return OtherConnections
		}
		m.connKeys[key] = true
	}
	return key
}

// observeCall counts a call of connection key with its outcome and latency.
func (m *Metrics) observeCall(key, outcome string, latency time.Duration) {
	label := m.connection(key)
	m.connCalls.WithLabelValues(label, outcome).Inc()
	m.connLatency.WithLabelValues(label).Observe(latency.Seconds())
}

// NewMetrics registers the executor's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_request_transitions_total", Help: "Privacy request status changes, by new status.",
		}, []string{"status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_webhook_attempts_total", Help: "Webhook calls, by outcome.",
		}, []string{"outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_lifecycle_rows_total", Help: "Rows of the lifecycle tables applied, by table and row.",
		}, []string{"table", "row"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "executor_webhook_call_seconds", Help: "Webhook call latency.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		NATSRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_nats_requests_total", Help: "NATS requests (round trips) made, by operation.",
		}, []string{"op"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "executor_messages_in_flight", Help: "Messages being handled.",
		}),
		connCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_connection_calls_total",
			Help: "Webhook calls by connection key (at most 500 keys; ~other beyond) and outcome: done, ignored_status, retry (a failure retried), refused.",
		}, []string{"connection", "outcome"}),
		connLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "executor_connection_call_seconds", Help: "Webhook call latency by connection key (at most 500 keys; ~other beyond).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"connection"}),
		connKeys: map[string]bool{},
	}
	reg.MustRegister(m.transitions, m.attempts, m.rows, m.latency, m.NATSRequests, m.InFlight, m.connCalls, m.connLatency)
	return m
}

// CountNATS counts one NATS request of operation op.
func (m *Metrics) CountNATS(op string) { m.NATSRequests.WithLabelValues(op).Inc() }
