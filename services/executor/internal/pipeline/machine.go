// Package pipeline is the executor's state machine (SPEC §5.1): it takes submitted requests, runs
// their pre-execution webhooks, hands them to the data layer, runs the post-execution webhooks and
// completes them, with pauses, resumes, retries, timeouts and errors. Every change of a request is
// one compare-and-set on its KV entry, so that redeliveries, several executors and crashes never
// skip a step or run one twice without the state recording it.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/consume"
	"github.com/policyhooks/policyhooks/services/executor/internal/state"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config holds the settings of the state machine.
type Config struct {
	// MaxAttempts is WEBHOOK_MAX_ATTEMPTS.
	MaxAttempts int
	// RetryBaseDelay and RetryMaxDelay shape the backoff between attempts; RetryMaxDelay also caps
	// Retry-After.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// WebhookTimeout is WEBHOOK_TIMEOUT; a claim on a call lasts WebhookTimeout + LeaseMargin.
	WebhookTimeout time.Duration
	LeaseMargin    time.Duration
	// CallbackPublicURL prefixes the reply-to path.
	CallbackPublicURL string
	// PauseTimeout is PRIVACY_REQUEST_DELAY_TIMEOUT: the life of a resume token and of a pause.
	PauseTimeout time.Duration
	// AwaitExecution is EXECUTION_STAGE=await; ExecutionTimeout bounds the wait.
	AwaitExecution   bool
	ExecutionTimeout time.Duration
}

// Hooks let tests stop the machine at chosen points, as a crash would. They are nil in production.
type Hooks struct {
	// AfterCall runs after a webhook answered and before the answer is written; an error abandons
	// the message without acking it and without writing anything.
	AfterCall func(requestID, webhookKey string) error
	// AfterWrite runs after each state write while driving a request; an error abandons the message.
	AfterWrite func(requestID string) error
}

// PlanSource returns the plan of a policy, plans.ErrNotFound when there is none.
type PlanSource interface {
	Get(ctx context.Context, policyKey string) (event.Plan, error)
}

// Metrics of the state machine.
type Metrics struct {
	transitions *prometheus.CounterVec
	attempts    *prometheus.CounterVec
	latency     prometheus.Histogram
	// InFlight counts messages being handled.
	InFlight prometheus.Gauge
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
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "executor_webhook_call_seconds", Help: "Webhook call latency.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "executor_messages_in_flight", Help: "Messages being handled.",
		}),
	}
	reg.MustRegister(m.transitions, m.attempts, m.latency, m.InFlight)
	return m
}

// Machine drives privacy requests.
type Machine struct {
	cfg     Config
	store   *state.Store
	plans   PlanSource
	js      jetstream.JetStream
	sender  *webhook.Sender
	secrets *secret.Keyring
	tokens  *token.Sealer
	metrics *Metrics
	hooks   Hooks
	log     zerolog.Logger
	now     func() time.Time

	openedMu sync.Mutex
	opened   map[string]openedSecrets
}

// Deps are what a Machine works with.
type Deps struct {
	Store   *state.Store
	Plans   PlanSource
	JS      jetstream.JetStream
	Sender  *webhook.Sender
	Secrets *secret.Keyring // PurposeSecrets
	Tokens  *token.Sealer   // resume tokens
	Metrics *Metrics
	Hooks   Hooks
	Log     zerolog.Logger
}

// New returns a Machine.
func New(cfg Config, d Deps) *Machine {
	return &Machine{cfg: cfg, store: d.Store, plans: d.Plans, js: d.JS, sender: d.Sender, secrets: d.Secrets,
		tokens: d.Tokens, metrics: d.Metrics, hooks: d.Hooks, log: d.Log, now: time.Now,
		opened: map[string]openedSecrets{}}
}

var errClaimed = errors.New("pipeline: another worker is calling this webhook")

// backoff returns the delay before attempt n+1 after n failed attempts.
func (m *Machine) backoff(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, m.cfg.RetryMaxDelay)
	}
	d := m.cfg.RetryBaseDelay
	for i := 1; i < n && d < m.cfg.RetryMaxDelay; i++ {
		d *= 2
	}
	d = min(d, m.cfg.RetryMaxDelay)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func (m *Machine) replyTo(id string) string {
	return strings.TrimRight(m.cfg.CallbackPublicURL, "/") + "/api/v1/privacy-request/" + url.PathEscape(id) + "/resume"
}

// stepWebhooks returns the webhooks of the current step and the offset of their records.
func stepWebhooks(r *state.Record) ([]event.PlanWebhook, int, event.CallbackType) {
	if r.Step == event.StepPostWebhooks {
		return r.Plan.Post, len(r.Plan.Pre), event.Post
	}
	return r.Plan.Pre, 0, event.Pre
}

func planMissing(r *state.Record) bool { return r.Plan.PolicyKey == "" }

// snapshot puts the plan and one pending record per webhook into r.
func snapshot(r *state.Record, p event.Plan) {
	p.PolicyKey = r.PolicyKey
	r.Plan = p
	r.Webhooks = make([]event.WebhookRecord, 0, len(p.Pre)+len(p.Post))
	for _, list := range []struct {
		ws []event.PlanWebhook
		ct event.CallbackType
	}{{p.Pre, event.Pre}, {p.Post, event.Post}} {
		for _, w := range list.ws {
			r.Webhooks = append(r.Webhooks, event.WebhookRecord{
				ID: w.ID, Key: w.Key, CallbackType: list.ct, Direction: w.Direction, Order: w.Order,
				Attempts: []event.Attempt{}, Outcome: event.OutcomePending,
			})
		}
	}
}

// fail sets r to error at its step.
func fail(r *state.Record, now time.Time, webhookKey, message string) {
	r.Claim = nil
	r.RetryAt = nil
	r.Error = &event.RequestError{Step: r.Step, WebhookKey: webhookKey, Message: message}
	r.ErrorCount++
	r.SetStatus(event.StatusError, now, webhookKey, message)
}

func retryLater(d time.Duration, format string, args ...any) error {
	return consume.Retry(d, fmt.Errorf(format, args...))
}
