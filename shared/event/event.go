// Package event defines what crosses service boundaries over NATS: the stream, subjects and KV
// buckets, the event payloads of SPEC §5, and the values kept in the policy_webhooks and
// privacy_requests buckets. It holds wire types and their validation only, no behaviour.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Stream is the JetStream stream that holds every privacy.request.> and privacy.connection.>
// subject.
const Stream = "PRIVACY_REQUESTS"

// Subjects of SPEC §5.
const (
	SubjectAll       = "privacy.request.>"
	SubjectSubmitted = "privacy.request.submitted"
	SubjectExecute   = "privacy.request.execute"
	SubjectExecuted  = "privacy.request.executed"
	SubjectResume    = "privacy.request.resume"
	SubjectRetry     = "privacy.request.retry"
	SubjectRejected  = "privacy.request.rejected"
	// SubjectPreApproval carries a pre-approval webhook's reply (PreApprovalReply), published by
	// callback.
	SubjectPreApproval = "privacy.request.pre_approval"
	// SubjectReview carries an operator's approval or denial (Review), published by callback.
	SubjectReview = "privacy.request.review"
	// SubjectStatusPrefix is followed by the new status: privacy.request.status.complete.
	SubjectStatusPrefix = "privacy.request.status."
	// SubjectTimerPrefix is the executor's internal prefix for durable timers (pause expiry,
	// execution timeout, retry backoff): privacy.request.timer.<...>.
	SubjectTimerPrefix = "privacy.request.timer."
	// SubjectConnectionAll holds the events about connections: a circuit breaker opening
	// (SubjectConnectionUnhealthy) and closing (SubjectConnectionHealthy), ConnectionHealthChanged.
	SubjectConnectionAll       = "privacy.connection.>"
	SubjectConnectionUnhealthy = "privacy.connection.unhealthy"
	SubjectConnectionHealthy   = "privacy.connection.healthy"
)

// KV buckets.
const (
	// BucketPlans holds one compiled Plan per policy key, written by config.
	BucketPlans = "policy_webhooks"
	// BucketRequests holds one Request per privacy request id, written by the executor.
	BucketRequests = "privacy_requests"
	// BucketPlanSnapshots holds the plan snapshots of requests, one per distinct plan under
	// PlanSnapshotRef of its JSON, written by the executor before a record refers to it and never
	// changed.
	BucketPlanSnapshots = "plan_snapshots"
	// BucketIdentities holds the current Identity of each request, sealed, written by the executor.
	BucketIdentities = "privacy_identities"
	// BucketResumeTokens records used resume-token ids (jti) until the token's expiry, written by
	// callback: one Create per resume makes a token single-use.
	BucketResumeTokens = "resume_tokens"
	// BucketClients holds one entry per OAuth client id (its scopes), written by config, so that
	// the other services honour a client's deletion at once.
	BucketClients = "oauth_clients"
	// BucketErrored indexes the requests in error (an Errored per request id), written by the
	// executor as a request goes to error, so that callback's scoped retry finds them without
	// reading every record.
	BucketErrored = "errored_requests"
	// BucketHealth holds the circuit breaker of each connection that has one (a ConnectionHealth
	// per connection key), written by the executor as calls fail and succeed, and by config when an
	// operator closes a breaker.
	BucketHealth = "connection_health"
)

// StatusSubject returns the subject a status change is published on.
func StatusSubject(s Status) string { return SubjectStatusPrefix + string(s) }

// Bounds of what an event may carry (SPEC §5): each keeps a request record and its sealed identity
// far inside a NATS message, so that no input can make a write fail for its size.
const (
	// MaxIdentityValue is the longest identity value (a standard field's or a custom identity's),
	// submitted or derived, in characters.
	MaxIdentityValue = 1024
	// MaxIdentityLabel is the longest label of a custom identity, in characters.
	MaxIdentityLabel = 255
	// MaxCustomIdentities is the most custom identities an identity holds.
	MaxCustomIdentities = 20
	// MaxExternalID is the longest external_id, in characters.
	MaxExternalID = 255
	// MaxPolicyKey is the longest policy_key, in characters.
	MaxPolicyKey = 255
	// MaxReason is the longest reason recorded on a request (an attempt's error, the error of a
	// failed request, a data layer's error), in bytes; longer ones are cut (see Reason).
	MaxReason = 512
)

// Reason returns s cut to MaxReason bytes (on a character boundary, with "…" at the cut), the form
// in which reasons are recorded and published.
func Reason(s string) string {
	if len(s) <= MaxReason {
		return s
	}
	const ellipsis = "…"
	cut := MaxReason - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// Submitted is the payload of privacy.request.submitted.
type Submitted struct {
	ID         string   `json:"id"`
	PolicyKey  string   `json:"policy_key"`
	Identity   Identity `json:"identity"`
	ExternalID string   `json:"external_id,omitempty"`
}

var (
	requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)
	policyKeyPattern = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
)

// ErrInvalidEvent reports an event payload that breaks the contract.
var ErrInvalidEvent = errors.New("invalid event")

// ValidRequestID reports whether id is a valid privacy request id (1–255 of A-Za-z0-9_.:-).
func ValidRequestID(id string) bool { return requestIDPattern.MatchString(id) }

// Validate checks the contract of SPEC §5: a valid id, a policy key (a key of SPEC §1, at most
// MaxPolicyKey characters), at least one identity field, and the bounds of the identity values and
// external_id.
func (s Submitted) Validate() error {
	var problems []string
	if !ValidRequestID(s.ID) {
		problems = append(problems, "id must be 1-255 characters of A-Za-z0-9_.:-")
	}
	switch {
	case strings.TrimSpace(s.PolicyKey) == "":
		problems = append(problems, "policy_key is required")
	case len(s.PolicyKey) > MaxPolicyKey || !policyKeyPattern.MatchString(s.PolicyKey):
		problems = append(problems, fmt.Sprintf("policy_key must be 1-%d characters of a-zA-Z0-9_.-", MaxPolicyKey))
	}
	if s.Identity.Empty() {
		problems = append(problems, "identity needs at least one known field")
	} else if err := s.Identity.Validate(); err != nil {
		problems = append(problems, strings.TrimPrefix(err.Error(), ErrInvalidEvent.Error()+": "))
	}
	if utf8.RuneCountInString(s.ExternalID) > MaxExternalID {
		problems = append(problems, fmt.Sprintf("external_id is longer than %d characters", MaxExternalID))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, strings.Join(problems, "; "))
	}
	return nil
}

// Execute is the payload of privacy.request.execute: the data layer runs the request.
// ExecutionID names this execution run of the request: a repeated execute (after a crash, at any
// time) carries the same one, so data layers de-duplicate on it, and a retry of the execution step
// gets a new one.
type Execute struct {
	ID          string   `json:"id"`
	ExecutionID string   `json:"execution_id"`
	PolicyKey   string   `json:"policy_key"`
	Identity    Identity `json:"identity"`
}

// Executed is the payload of privacy.request.executed, published by the data layer. ExecutionID
// echoes the execute it answers; an executed naming an earlier run is ignored. Without it (data
// layers written before it existed) the answer is taken for the current run.
type Executed struct {
	ID          string `json:"id"`
	ExecutionID string `json:"execution_id,omitempty"`
	Succeeded   bool   `json:"succeeded"`
	Error       string `json:"error,omitempty"`
}

// WebhookID derives the Standard Webhooks webhook-id of a call from what identifies it: request id,
// callback type, the plan webhook's id and the run of the step (SPEC §6). Every repeat of one call
// (a retry after a failed attempt, a call made again after an executor stopped during it) carries
// the same id; a retry of the step from error starts a new run and so new ids.
func WebhookID(requestID string, ct CallbackType, planWebhookID string, run int) string {
	sum := sha256.Sum256([]byte(requestID + "\x00" + string(ct) + "\x00" + planWebhookID + "\x00" + strconv.Itoa(run)))
	return "msg_" + hex.EncodeToString(sum[:16])
}

// ExecutionID derives the execution id of run (1, 2, ... as the execution step is retried) of
// request id: the same inputs give the same id.
func ExecutionID(requestID string, run int) string {
	sum := sha256.Sum256([]byte(requestID + "\x00execution\x00" + strconv.Itoa(run)))
	return "exe_" + hex.EncodeToString(sum[:16])
}

// Resume is the payload of privacy.request.resume, published by callback after it validated a
// reply-to-token. TokenID (the token's jti) is also the message's Nats-Msg-Id.
type Resume struct {
	RequestID       string    `json:"request_id"`
	WebhookID       string    `json:"webhook_id"`
	Pause           int       `json:"pause"`
	TokenID         string    `json:"jti"`
	DerivedIdentity *Identity `json:"derived_identity,omitempty"`
}

// Retry is the payload of privacy.request.retry, published by callback: restart a request in
// error from its failed step. FromError is the Request.ErrorCount it was asked for, so that a retry
// of an older failure is ignored.
type Retry struct {
	RequestID string `json:"request_id"`
	FromError int    `json:"from_error"`
}

// PreApprovalReply is the payload of privacy.request.pre_approval, published by callback after it
// validated a pre-approval reply-to-token. WebhookID is the plan webhook the token was issued for and
// Run the run of the pre-approval stage; TokenID (the token's jti) is also the Nats-Msg-Id.
type PreApprovalReply struct {
	RequestID string `json:"request_id"`
	WebhookID string `json:"webhook_id"`
	Run       int    `json:"run"`
	Eligible  bool   `json:"eligible"`
	TokenID   string `json:"jti"`
}

// Review is the payload of privacy.request.review, published by callback: an operator approves or
// denies a request awaiting pre-approval or not eligible for it. Reason is a denial's reason
// (at most MaxReason bytes).
type Review struct {
	RequestID string `json:"request_id"`
	Approved  bool   `json:"approved"`
	Reason    string `json:"reason,omitempty"`
}

// StatusChanged is the payload of privacy.request.status.<status>. Previous is nil (JSON null) for
// a request's first event. Seq numbers a request's events from 1; id and seq identify an event
// (its Nats-Msg-Id is status:<id>:<seq>), so consumers de-duplicate on them.
type StatusChanged struct {
	ID string `json:"id"`
	TimelineEntry
}

// Audit actions (StatusChanged.Action).
const (
	ActionPreApprovalTriggered   = "pre_approval_webhook_triggered"
	ActionPreApprovalEligible    = "pre_approval_eligible"
	ActionPreApprovalNotEligible = "pre_approval_not_eligible"
	ActionApproved               = "approved"
	ActionDenied                 = "denied"
)

// Rejected is the payload of privacy.request.rejected: a submitted event that could not be taken.
type Rejected struct {
	Reason  string    `json:"reason"`
	Payload string    `json:"payload"`
	At      time.Time `json:"at"`
}

// KVKey returns the KV key under which an id is stored: a request id in privacy_requests,
// privacy_identities and resume-related buckets, a policy key in policy_webhooks. Ids may hold ':'
// and '.' (also leading, trailing or doubled), which KV keys cannot, so they are escaped as "=3A" and
// "=2E"; '=' never occurs in a request id or a policy key, so the mapping is one-to-one. Typical ids
// (pri_<uuid>, my_policy) are their own key.
func KVKey(id string) string {
	if !strings.ContainsAny(id, ":.") {
		return id
	}
	return strings.NewReplacer(":", "=3A", ".", "=2E").Replace(id)
}

// KVKeyID is the request id whose KVKey is key (the inverse of KVKey; ids never hold '=').
func KVKeyID(key string) string {
	if !strings.Contains(key, "=") {
		return key
	}
	return strings.NewReplacer("=3A", ":", "=2E", ".").Replace(key)
}

// ValidKVKey reports whether k can be a NATS KV key: letters, digits and -/_=. only, not starting
// or ending with '.', and no empty token (".."). It is the rule nats.go enforces, checked up front so
// that an unusable key is refused as bad input rather than failing as a KV error.
func ValidKVKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '/', c == '_', c == '=', c == '.':
		default:
			return false
		}
	}
	return true
}
