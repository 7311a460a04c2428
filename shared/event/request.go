package event

import (
	"errors"
	"fmt"
	"time"
)

// Status of a privacy request.
type Status string

// Statuses (SPEC §5.1).
const (
	StatusPending      Status = "pending"
	StatusInProcessing Status = "in_processing"
	StatusPaused       Status = "paused"
	StatusComplete     Status = "complete"
	StatusError        Status = "error"
	// StatusAwaitingPreApproval: the pre-approval webhooks are being called, or their replies are
	// awaited (SPEC §5.2).
	StatusAwaitingPreApproval Status = "awaiting_pre_approval"
	// StatusPreApprovalNotEligible: a pre-approval webhook replied not eligible, or not every one
	// replied in time; an operator approves or denies the request.
	StatusPreApprovalNotEligible Status = "pre_approval_not_eligible"
	// StatusDenied: an operator denied the request; it is finished.
	StatusDenied Status = "denied"
)

// Statuses are every status a request can have, in the order of its lifecycle.
var Statuses = []Status{StatusPending, StatusAwaitingPreApproval, StatusPreApprovalNotEligible,
	StatusInProcessing, StatusPaused, StatusComplete, StatusDenied, StatusError}

// Step of a privacy request.
type Step string

// Steps, in the order they run.
const (
	// StepPreApproval runs only when the request's plan has a pre-approval stage (Plan.PreApproval).
	StepPreApproval  Step = "pre_approval"
	StepPreWebhooks  Step = "pre_webhooks"
	StepExecution    Step = "execution"
	StepPostWebhooks Step = "post_webhooks"
)

// Outcome of one webhook in a request.
type Outcome string

// Outcomes.
const (
	OutcomePending Outcome = "pending"
	// OutcomeSucceeded: a 2xx answer.
	OutcomeSucceeded Outcome = "succeeded"
	// OutcomeHalted: a pre two-way webhook asked to halt; the request paused after it.
	OutcomeHalted Outcome = "halted"
	// OutcomeIgnoredStatus: a one-way webhook answered 3xx/4xx; the status is recorded and the
	// request goes on (SPEC §6).
	OutcomeIgnoredStatus Outcome = "ignored_status"
	// OutcomeFailed: the webhook set the request to error.
	OutcomeFailed Outcome = "failed"
	// OutcomeSkipped: its connection is disabled.
	OutcomeSkipped Outcome = "skipped"
)

// RecordFormat is the newest layout of the records this code reads and writes: 3, a record with a
// pre-approval stage (its plan has PreApproval). Format 2 is a record with its plan by reference
// in plan_snapshots (PlanRef) and no pre-approval stage; records without a format hold their plan
// inline. A record is written in the oldest format that holds it (Layout), so that a version that
// knows no pre-approval stage still reads every record that has none.
const RecordFormat = 3

// Layout returns the format r is written in: 3 when its plan has a pre-approval stage, 2 otherwise.
func (r *Request) Layout() int {
	if r.Plan.PreApproval != nil {
		return 3
	}
	return 2
}

// ErrNewerFormat reports a record written in a layout newer than RecordFormat, by a newer version
// of the executor.
var ErrNewerFormat = errors.New("record written in a newer format than this version reads")

// CheckFormat returns ErrNewerFormat (wrapped, naming both) when r's layout is newer than this code's.
func (r *Request) CheckFormat() error {
	if r.Format > RecordFormat {
		return fmt.Errorf("%w: format %d, this version reads up to %d", ErrNewerFormat, r.Format, RecordFormat)
	}
	return nil
}

// Request is the state of one privacy request: the value of its id in privacy_requests. It holds
// no personal data; the identity lives sealed in privacy_identities. Every change is one
// compare-and-set on the entry's revision, by the executor only.
type Request struct {
	// Format is the version of this record's layout (RecordFormat when written by this code; 0 in
	// records written before formats were numbered, which hold their plan inline). A reader that
	// finds a higher one than it knows refuses the record (ErrNewerFormat) rather than misread it:
	// during a rolling upgrade an older executor hands such a request back to a newer one.
	Format     int    `json:"format,omitempty"`
	ID         string `json:"id"`
	PolicyKey  string `json:"policy_key"`
	ExternalID string `json:"external_id,omitempty"`
	Status     Status `json:"status"`
	Step       Step   `json:"step"`
	// Plan is the snapshot taken when the request started; later edits of the policy do not
	// change it. It is stored once per distinct plan in plan_snapshots, under PlanRef, and left
	// out of the stored record; records written before plan_snapshots existed hold it inline.
	Plan Plan `json:"plan,omitzero"`
	// PlanRef is the key of the request's plan in plan_snapshots (PlanSnapshotRef of its JSON);
	// empty in a record that holds its plan inline.
	PlanRef string `json:"plan_ref,omitempty"`
	// Next is the index, within the current step's webhooks, of the next webhook to call.
	Next int `json:"next"`
	// Run counts the times the current step was (re)started, so that a retry's calls get new
	// webhook-ids while repeats of one call keep theirs.
	Run int `json:"run"`
	// Pause is the number of the current or last pause (0 before the first); a resume token
	// names the pause it was issued for.
	Pause int `json:"pause"`
	// PausedWebhookID is the id of the webhook that halted the request, while paused.
	PausedWebhookID string `json:"paused_webhook_id,omitempty"`
	// PauseExpiresAt is when the current pause's token expires.
	PauseExpiresAt *time.Time `json:"pause_expires_at,omitempty"`
	// ExecutionDeadline is when waiting for the data layer gives up.
	ExecutionDeadline *time.Time `json:"execution_deadline,omitempty"`
	// RetryAt is when the next attempt of the current call is due after a retryable failure (the
	// executor's backoff).
	RetryAt *time.Time `json:"retry_at,omitempty"`
	// ErrorCount counts the times the request went to error; a retry names the one it answers.
	ErrorCount int `json:"error_count"`
	// ApprovalDue is when the replies of the pre-approval webhooks are due (the stage's start plus
	// PRIVACY_REQUEST_DELAY_TIMEOUT, or the identity's expiry when earlier); their reply-to-tokens
	// expire then. Set while the request is awaiting_pre_approval.
	ApprovalDue *time.Time `json:"approval_due,omitempty"`
	// DenyReason is the reason an operator gave when denying the request.
	DenyReason string `json:"deny_reason,omitempty"`
	// Held is set while the current webhook's call waits for its connection's circuit breaker to
	// close (SPEC §6.3). A version that does not know it calls the webhook, which is safe.
	Held *Hold `json:"held,omitempty"`

	CreatedAt            time.Time  `json:"created_at"`
	UpdatedAt            time.Time  `json:"updated_at"`
	StartedProcessingAt  *time.Time `json:"started_processing_at"`
	PausedAt             *time.Time `json:"paused_at"`
	FinishedProcessingAt *time.Time `json:"finished_processing_at"`

	Error    *RequestError   `json:"error"`
	Webhooks []WebhookRecord `json:"webhooks"`
	// Timeline is the request's status events in order (at most MaxTimeline: the first and the
	// latest), written with each change; records written before it existed have none.
	Timeline []TimelineEntry `json:"timeline,omitempty"`

	// Trace is the W3C traceparent of the span that took the request's submission (tracing on;
	// empty otherwise): the parent of the spans of its later runs that no traced message leads to
	// (a resume, a retry, an executed without trace context), so that a request is one trace. No
	// decision reads it, and a version that does not know it ignores it, so it needs no format.
	Trace string `json:"trace,omitempty"`
}

// MaxTimeline bounds Request.Timeline: a request that goes round error and retry keeps its first
// event and its latest MaxTimeline-1.
const MaxTimeline = 100

// TimelineEntry is one status event of a request without the request's id: an entry of its
// record's Timeline, and the body of StatusChanged.
type TimelineEntry struct {
	Seq        int       `json:"seq"`
	Status     Status    `json:"status"`
	Previous   *Status   `json:"previous"`
	At         time.Time `json:"at"`
	Step       Step      `json:"step"`
	WebhookKey string    `json:"webhook_key,omitempty"`
	Error      string    `json:"error,omitempty"`
	// Action names an audit event of fides's (AuditLogAction) carried by this status event:
	// pre_approval_webhook_triggered (every pre-approval webhook was called; the status is
	// unchanged), pre_approval_eligible, pre_approval_not_eligible, approved or denied.
	Action string `json:"action,omitempty"`
}

// AddToTimeline appends e to the timeline, keeping it within MaxTimeline entries.
func (r *Request) AddToTimeline(e TimelineEntry) {
	r.Timeline = append(r.Timeline, e)
	if n := len(r.Timeline); n > MaxTimeline {
		r.Timeline = append(r.Timeline[:1], r.Timeline[n-MaxTimeline+1:]...)
	}
}

// Errored is the entry of a request in error in errored_requests: what a scoped retry filters on
// (SPEC §7). An entry may outlive the error it names (the request was retried since); the record
// is the truth, and a retry checks it.
type Errored struct {
	ID         string `json:"id"`
	PolicyKey  string `json:"policy_key"`
	Step       Step   `json:"step"`
	WebhookKey string `json:"webhook_key,omitempty"`
	// ConnectionKey is the connection of the webhook that failed ("" when none did).
	ConnectionKey string `json:"connection_key,omitempty"`
	// Status is the HTTP status of that webhook's last attempt, 0 without an answer.
	Status int `json:"status,omitempty"`
	// ErrorCount is the request's ErrorCount when it went to error, At when it did.
	ErrorCount int       `json:"error_count"`
	At         time.Time `json:"at"`
}

// Current reports whether e still names req's error: req is in error, the error e was written for.
func (e Errored) Current(req Request) bool {
	return req.Status == StatusError && req.ErrorCount == e.ErrorCount
}

// Hold is what a request waits on while its connection's circuit breaker is open.
type Hold struct {
	ConnectionKey string `json:"connection_key"`
	// Since is when the request started waiting on the connection; Until when it looks again (the
	// breaker's next probe, or the end of the probe in flight).
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
}

// RequestError says where and why a request failed.
type RequestError struct {
	Step       Step   `json:"step"`
	WebhookKey string `json:"webhook_key,omitempty"`
	Message    string `json:"message"`
}

// WebhookRecord is the history of one webhook of the plan within a request.
type WebhookRecord struct {
	ID           string       `json:"id"`
	Key          string       `json:"key"`
	CallbackType CallbackType `json:"callback_type"`
	Direction    Direction    `json:"direction"`
	Order        int          `json:"order"`
	Attempts     []Attempt    `json:"attempts"`
	// Interrupted counts the calls of this webhook whose answer was never recorded because the
	// executor making them stopped (crash, or a shutdown past its grace period); they are not
	// attempts, and each is repeated with the same webhook-id.
	Interrupted int     `json:"interrupted,omitempty"`
	Outcome     Outcome `json:"outcome"`
	// Reply is a pre-approval webhook's reply in the current run of the stage; empty until it
	// replies, and for other webhooks.
	Reply Reply `json:"reply,omitempty"`
}

// Reply is what a pre-approval webhook answered at its reply-to URLs.
type Reply string

// Replies.
const (
	ReplyEligible    Reply = "eligible"
	ReplyNotEligible Reply = "not_eligible"
)

// Attempt is one call of a webhook.
type Attempt struct {
	At time.Time `json:"at"`
	// WebhookID is the Standard Webhooks webhook-id of the call: the same on every retry.
	WebhookID string `json:"webhook_id"`
	// Status is the HTTP status answered, 0 when there was no answer.
	Status int `json:"status,omitempty"`
	// Error is the transport error or the reason the answer was refused.
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
}
