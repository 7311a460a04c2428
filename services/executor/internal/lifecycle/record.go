// Package lifecycle is the executor's state machine (SPEC §5.1) as pure functions over a request's
// record: what an input records (ApplyInput), what a webhook answer records (ApplyAnswer), and what
// the request does next (Decide, Settle). The three tables in table.go are the whole lifecycle; this
// package does no I/O. The runner (internal/runner) performs what they decide: it writes the record
// by compare-and-set, calls webhooks, publishes events and schedules timers.
package lifecycle

import (
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Record is the value of a request in privacy_requests: the contract event.Request (which the
// callback service reads) plus fields only the executor uses, beside them in the same JSON object.
// It holds no personal data: identities live sealed in privacy_identities.
type Record struct {
	event.Request
	// Claim is the webhook call being made right now. It is written just before the call (in the
	// write that records the previous answer when nothing comes between), so that one worker calls
	// while others wait, and another takes the call over when it expires.
	Claim *Claim `json:"claim,omitempty"`
	// Interrupts counts the calls of the current webhook whose answer was never recorded (an
	// executor stopped during them) since its last recorded answer.
	Interrupts int `json:"interrupts,omitempty"`
	// IdentityExpiresAt is when the stored identity expires (its last write plus IDENTITY_TTL).
	IdentityExpiresAt *time.Time `json:"identity_expires_at,omitempty"`
	// IdentityPatches names, in order, derived identities stored beside the identity (by the
	// runner's identity store) that the request merges into it before it calls anything.
	IdentityPatches []string `json:"identity_patches,omitempty"`
	// EarlyResume is a resume that arrived for the pause the current call may start, before its
	// answer was recorded; it is applied when the answer halts and dropped otherwise.
	EarlyResume *EarlyResume `json:"early_resume,omitempty"`
	// Review is an operator's approval or denial of a request in the pre-approval stage, recorded
	// when it arrives and applied by the lifecycle (at once, or once a call in flight answered).
	Review *Review `json:"review,omitempty"`
	// Triggered reports that the audit event pre_approval_webhook_triggered of the stage's current
	// run was put in the outbox (every pre-approval webhook was called).
	Triggered bool `json:"triggered,omitempty"`
	// Executed is the data layer's answer for the execution run it names, recorded when it arrives
	// and applied by the lifecycle (it may arrive before the execution step is recorded).
	Executed *Executed `json:"executed,omitempty"`
	// Outbox holds the status events written with the transitions that caused them and not yet
	// known to be stored in the stream; EventSeq numbers a request's events (their Nats-Msg-Id).
	Outbox   []Pending `json:"outbox,omitempty"`
	EventSeq int       `json:"event_seq"`
}

// Claim is a lease on one webhook call.
type Claim struct {
	// Owner is the run (one message being handled) that makes the call.
	Owner string    `json:"owner"`
	At    time.Time `json:"at"`
	// Until is when another worker may take the call over: the webhook timeout plus a margin.
	Until time.Time `json:"until"`
	// WebhookID is the call's Standard Webhooks webhook-id (event.WebhookID).
	WebhookID string `json:"webhook_id"`
}

// EarlyResume is a validated resume of a pause that is not recorded yet.
type EarlyResume struct {
	Pause     int    `json:"pause"`
	WebhookID string `json:"webhook_id"`
	// Patch names the resume's derived identity, stored beside the identity; empty when none.
	Patch string `json:"patch,omitempty"`
}

// Review is a recorded review of an operator.
type Review struct {
	Approved bool   `json:"approved"`
	Reason   string `json:"reason,omitempty"`
}

// Executed is a recorded answer of the data layer.
type Executed struct {
	// ExecutionID is the run it answers (event.ExecutionID).
	ExecutionID string `json:"execution_id"`
	Succeeded   bool   `json:"succeeded"`
	Error       string `json:"error,omitempty"`
}

// Pending is a status event in the outbox.
type Pending struct {
	Seq   int                 `json:"seq"`
	Event event.StatusChanged `json:"event"`
	// By tags the message whose handling wrote it (the runner's msgTag).
	By string `json:"by,omitempty"`
}

// Config holds the settings the lifecycle decides with.
type Config struct {
	// MaxAttempts is WEBHOOK_MAX_ATTEMPTS: recorded answers of one call before the request fails.
	MaxAttempts int
	// MaxInterrupts bounds the calls of one webhook cut off by a stopping executor in a row, so
	// that an answer that crashes every executor cannot loop forever.
	MaxInterrupts int
	// ClaimTTL is how long a claim lasts: WEBHOOK_TIMEOUT plus a margin.
	ClaimTTL time.Duration
	// PauseTimeout is PRIVACY_REQUEST_DELAY_TIMEOUT: the life of a pause and its resume token.
	PauseTimeout time.Duration
	// AwaitExecution is EXECUTION_STAGE=await; ExecutionTimeout bounds the wait for the data layer.
	AwaitExecution   bool
	ExecutionTimeout time.Duration
	// IdentityTTL is IDENTITY_TTL.
	IdentityTTL time.Duration
	// FinishedIdentityRetention is FINISHED_IDENTITY_RETENTION: how long a finished request's
	// identity is kept (zero: it is removed when the request finishes).
	FinishedIdentityRetention time.Duration
	// BreakerMaxWait is CIRCUIT_BREAKER_MAX_WAIT: how long a request waits on an unhealthy
	// connection before it fails (zero: no bound). A held request looks at the breaker again at
	// its probe time and at least every BreakerLook (so that a breaker an operator closed lets it
	// go within seconds), and every BreakerRecheck while another request makes the probe.
	BreakerMaxWait time.Duration
	BreakerLook    time.Duration
	BreakerRecheck time.Duration
}

// Health tells a decision about the circuit breakers of connections (breaker.Store, from its
// local view, without I/O).
type Health interface {
	// Held reports whether a call to the connection waits at now, until when, and whether another
	// request is making its probe.
	Held(connectionKey string, now time.Time) (until time.Time, probing, held bool)
}

// DefaultMaxInterrupts is Config.MaxInterrupts unless set.
const DefaultMaxInterrupts = 10

// maxKeptAttempts bounds the attempts kept per webhook (the oldest go first), so that retries from
// error cannot grow a record without bound. WEBHOOK_MAX_ATTEMPTS is at most 100.
const maxKeptAttempts = 100

// Env is what a decision depends on besides the record: the clock, and the run deciding (a claim
// owned by it is its own call).
type Env struct {
	Now   time.Time
	Owner string
	Cfg   Config
	// Forgot reports that the run deciding forgot the identity of the finished request (row F1),
	// Indexed that it put the request in error in errored_requests (row E0).
	Forgot, Indexed bool
	// Health is the connections' circuit breakers; nil: none is ever open.
	Health Health
}

// SetStatus changes the status and puts the status event in the outbox; a request's first event
// has no previous status.
func (r *Record) SetStatus(s event.Status, now time.Time, webhookKey, message string) {
	r.emit(s, now, webhookKey, message, "")
}

// emit changes the status (or keeps it: an audit event) and puts the status event, with its audit
// action ("" for none), in the outbox.
func (r *Record) emit(s event.Status, now time.Time, webhookKey, message, action string) {
	var prev *event.Status
	if r.EventSeq > 0 {
		p := r.Status
		prev = &p
	}
	r.Status = s
	r.UpdatedAt = now
	r.EventSeq++
	e := event.TimelineEntry{Seq: r.EventSeq, Status: s, Previous: prev, At: now, Step: r.Step,
		WebhookKey: webhookKey, Error: event.Reason(message), Action: action}
	r.Outbox = append(r.Outbox, Pending{Seq: r.EventSeq, Event: event.StatusChanged{ID: r.ID, TimelineEntry: e}})
	r.AddToTimeline(e)
}

// hooks returns the webhooks of the current step, the offset of their records in Webhooks and
// their callback type. The records of the pre-approval webhooks come after those of the pre- and
// post-execution ones, so that records written before the stage existed keep their layout.
func (r *Record) hooks() ([]event.PlanWebhook, int, event.CallbackType) {
	switch r.Step {
	case event.StepPostWebhooks:
		return r.Plan.Post, len(r.Plan.Pre), event.Post
	case event.StepPreApproval:
		return r.approvalHooks(), len(r.Plan.Pre) + len(r.Plan.Post), event.PreApprovalCallback
	}
	return r.Plan.Pre, 0, event.Pre
}

// approvalHooks returns the plan's pre-approval webhooks (none without the stage).
func (r *Record) approvalHooks() []event.PlanWebhook {
	if r.Plan.PreApproval == nil {
		return nil
	}
	return r.Plan.PreApproval.Webhooks
}

// approvalRecords returns the records of the pre-approval webhooks, in the plan's order.
func (r *Record) approvalRecords() []event.WebhookRecord {
	offset := len(r.Plan.Pre) + len(r.Plan.Post)
	if n := len(r.approvalHooks()); n > 0 && offset+n <= len(r.Webhooks) {
		return r.Webhooks[offset : offset+n]
	}
	return nil
}

// Current returns the webhook the request calls next in its step, and its record; false when the
// step has none left (or is not a webhook step).
func (r *Record) Current() (event.PlanWebhook, *event.WebhookRecord, bool) {
	if r.Step != event.StepPreApproval && r.Step != event.StepPreWebhooks && r.Step != event.StepPostWebhooks {
		return event.PlanWebhook{}, nil, false
	}
	hooks, offset, _ := r.hooks()
	if r.Next >= len(hooks) || offset+r.Next >= len(r.Webhooks) {
		return event.PlanWebhook{}, nil, false
	}
	return hooks[r.Next], &r.Webhooks[offset+r.Next], true
}

// CallID returns the webhook-id of the current call (the webhook Current returns, in this run).
func (r *Record) CallID() string {
	w, _, ok := r.Current()
	if !ok {
		return ""
	}
	_, _, ct := r.hooks()
	return event.WebhookID(r.ID, ct, w.ID, r.Run)
}

// CallbackType is the callback type of the current step's webhooks.
func (r *Record) CallbackType() event.CallbackType {
	_, _, ct := r.hooks()
	return ct
}

// Pausing reports whether the current call may halt the request: a pre-execution two-way webhook.
func (r *Record) Pausing() bool {
	w, _, ok := r.Current()
	return ok && r.Step == event.StepPreWebhooks && w.Direction == event.TwoWay
}

// Attempts counts the recorded answers of the current call.
func (r *Record) Attempts() int {
	_, wr, ok := r.Current()
	if !ok {
		return 0
	}
	id, n := r.CallID(), 0
	for _, a := range wr.Attempts {
		if a.WebhookID == id {
			n++
		}
	}
	return n
}

// PlanMissing reports a request whose policy had no plan when it was submitted (or retried).
func (r *Record) PlanMissing() bool { return r.Plan.PolicyKey == "" }

// ExecutionID is the id of the current execution run; at the pre-execution step it is the id of
// the run the request starts next (1: a request reaches execution from pre-webhooks only once
// per pre-webhooks run, and retries of execution happen at the execution step).
func (r *Record) ExecutionID() string {
	if r.Step == event.StepExecution {
		return event.ExecutionID(r.ID, r.Run)
	}
	return event.ExecutionID(r.ID, 1)
}

// PauseDue is when the current pause ends: its token's expiry, or the identity's when earlier,
// with the message its error records.
func (r *Record) PauseDue() (time.Time, string) {
	if r.PauseExpiresAt == nil {
		return time.Time{}, ""
	}
	due, msg := *r.PauseExpiresAt, MsgNotResumed
	if e := r.IdentityExpiresAt; e != nil && e.Before(due) {
		due, msg = *e, MsgIdentityExpired
	}
	return due, msg
}

// Errored is the entry of r, in error, in errored_requests: its policy, where it failed (the
// webhook, its connection and the HTTP status of its last attempt) and when.
func (r *Record) Errored() event.Errored {
	e := event.Errored{ID: r.ID, PolicyKey: r.PolicyKey, Step: r.Step, ErrorCount: r.ErrorCount, At: r.UpdatedAt}
	if r.Error == nil {
		return e
	}
	e.Step, e.WebhookKey = r.Error.Step, r.Error.WebhookKey
	hooks, offset, _ := r.hooks()
	for i, w := range hooks {
		if w.Key != e.WebhookKey || e.WebhookKey == "" {
			continue
		}
		e.ConnectionKey = w.ConnectionKey
		if offset+i < len(r.Webhooks) {
			if a := r.Webhooks[offset+i].Attempts; len(a) > 0 {
				e.Status = a[len(a)-1].Status
			}
		}
		break
	}
	return e
}

// Finished reports a request that has finished for good (complete or denied): nothing will need
// its identity again.
func (r *Record) Finished() bool {
	return r.Status == event.StatusComplete || r.Status == event.StatusDenied
}

// IdentityKeptUntil is when a finished request's identity is gone: FINISHED_IDENTITY_RETENTION
// after the request finished, never later than the identity's own expiry.
func (r *Record) IdentityKeptUntil(c Config) time.Time {
	finished := r.UpdatedAt
	if r.FinishedProcessingAt != nil {
		finished = *r.FinishedProcessingAt
	}
	until := finished.Add(c.FinishedIdentityRetention)
	if e := r.IdentityExpiresAt; e != nil && e.Before(until) {
		until = *e
	}
	return until
}

// Messages recorded on failed requests that several places give.
const (
	MsgIdentityExpired = "the identity of the request has expired"
	MsgNotResumed      = "the request was not resumed before its resume token expired"
	MsgNotReplied      = "pre-approval webhooks did not reply before their reply-to tokens expired"
)
