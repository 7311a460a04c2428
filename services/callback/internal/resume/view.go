package resume

import (
	"slices"
	"time"

	"github.com/policyhooks/policyhooks/shared/callbackapi"
	"github.com/policyhooks/policyhooks/shared/event"
)

// View is the public form of a privacy request (SPEC §7): its state and webhook history, never its
// identity nor its plan's sealed secrets.
type View struct {
	ID                   string       `json:"id"`
	PolicyKey            string       `json:"policy_key"`
	ExternalID           *string      `json:"external_id"`
	Status               event.Status `json:"status"`
	Step                 event.Step   `json:"step"`
	CreatedAt            time.Time    `json:"created_at"`
	StartedProcessingAt  *time.Time   `json:"started_processing_at"`
	PausedAt             *time.Time   `json:"paused_at"`
	FinishedProcessingAt *time.Time   `json:"finished_processing_at"`
	Error                *ErrorView   `json:"error"`
	ResumeEndpoint       *string      `json:"resume_endpoint"`
	// DenyReason is the reason an operator gave when denying the request; null unless denied.
	DenyReason *string `json:"deny_reason"`
	// WaitingFor says what the request waits for and until when; null while it runs and once it
	// is complete or in error.
	WaitingFor *WaitingView  `json:"waiting_for"`
	Webhooks   []WebhookView `json:"webhooks"`
	// Timeline is the request's status events in order, as its record keeps them (the first and
	// the latest, at most event.MaxTimeline); empty for a record written before timelines existed.
	Timeline []event.TimelineEntry `json:"timeline"`
}

// Reasons a request waits (WaitingView.Reason).
const (
	// WaitResume: paused by a halting pre-execution webhook until its receiver posts the
	// reply-to-token; Until is when the token expires and the request goes to error.
	WaitResume = "resume"
	// WaitDataLayer: execute was published; Until is EXECUTION_TIMEOUT's deadline.
	WaitDataLayer = "data_layer"
	// WaitRetry: the current webhook's last attempt failed and the next is due at Until.
	WaitRetry = "retry"
	// WaitPreApproval: awaiting_pre_approval, the replies of the pre-approval webhooks named by
	// WebhookKeys (those that have not replied yet) are due at Until, when their reply-to-tokens
	// expire.
	WaitPreApproval = "pre_approval"
	// WaitReview: pre_approval_not_eligible, an operator's approval or denial; no Until.
	WaitReview = "review"
	// WaitConnection: the connection of the current webhook (WebhookKey) is unhealthy, its circuit
	// breaker open; Until is when the request looks again (the breaker's probe). The view names no
	// connection, as it shows no plan: the policy says which connection the webhook uses.
	WaitConnection = "connection"
)

// WaitingView is what a request waits for: a reason, the webhook concerned (for resume and
// retry) or the webhooks (for pre_approval, otherwise null), and until when.
type WaitingView struct {
	Reason      string     `json:"reason"`
	WebhookKey  *string    `json:"webhook_key"`
	WebhookKeys []string   `json:"webhook_keys"`
	Until       *time.Time `json:"until"`
}

// ErrorView says where and why a request failed.
type ErrorView struct {
	Step       event.Step `json:"step"`
	WebhookKey *string    `json:"webhook_key"`
	Message    string     `json:"message"`
}

// WebhookView is the history of one webhook within a request.
type WebhookView struct {
	Key          string             `json:"key"`
	CallbackType event.CallbackType `json:"callback_type"`
	Direction    event.Direction    `json:"direction"`
	Order        int                `json:"order"`
	Attempts     []AttemptView      `json:"attempts"`
	// Interrupted counts the calls whose answer was never recorded (the executor stopped during
	// them); they are not attempts.
	Interrupted int           `json:"interrupted"`
	Outcome     event.Outcome `json:"outcome"`
	// Reply is a pre-approval webhook's reply in the current run of the stage: null until it
	// replies, and for the other webhooks.
	Reply *event.Reply `json:"reply"`
}

// AttemptView is one call of a webhook: when, its webhook-id, the HTTP status (null when there was
// no answer), the error if any, and how long it took.
type AttemptView struct {
	At        time.Time `json:"at"`
	WebhookID string    `json:"webhook_id"`
	Status    *int      `json:"status"`
	Error     *string   `json:"error"`
	LatencyMS float64   `json:"latency_ms"`
}

// NewView returns the view of req.
func NewView(req event.Request) View {
	v := View{
		ID:                   req.ID,
		PolicyKey:            req.PolicyKey,
		ExternalID:           optional(req.ExternalID),
		Status:               req.Status,
		Step:                 req.Step,
		CreatedAt:            req.CreatedAt,
		StartedProcessingAt:  req.StartedProcessingAt,
		PausedAt:             req.PausedAt,
		FinishedProcessingAt: req.FinishedProcessingAt,
		DenyReason:           optional(req.DenyReason),
		Webhooks:             make([]WebhookView, 0, len(req.Webhooks)),
		Timeline:             req.Timeline,
	}
	if v.Timeline == nil {
		v.Timeline = []event.TimelineEntry{}
	}
	if req.Error != nil {
		v.Error = &ErrorView{Step: req.Error.Step, WebhookKey: optional(req.Error.WebhookKey), Message: req.Error.Message}
	}
	if req.Status == event.StatusPaused {
		p := callbackapi.ResumePath(req.ID)
		v.ResumeEndpoint = &p
	}
	v.WaitingFor = waitingFor(req)
	for _, w := range req.Webhooks {
		wv := WebhookView{
			Key: w.Key, CallbackType: w.CallbackType, Direction: w.Direction, Order: w.Order,
			Attempts: make([]AttemptView, 0, len(w.Attempts)), Interrupted: w.Interrupted, Outcome: w.Outcome,
		}
		if w.Reply != "" {
			reply := w.Reply
			wv.Reply = &reply
		}
		for _, a := range w.Attempts {
			av := AttemptView{At: a.At, WebhookID: a.WebhookID, Error: optional(a.Error), LatencyMS: a.LatencyMS}
			if a.Status != 0 {
				status := a.Status
				av.Status = &status
			}
			wv.Attempts = append(wv.Attempts, av)
		}
		v.Webhooks = append(v.Webhooks, wv)
	}
	return v
}

// waitingFor returns what req waits for, or nil when it does not wait on anything outside the
// executor (it runs, or it is finished).
func waitingFor(req event.Request) *WaitingView {
	switch {
	case req.Held != nil && (req.Status == event.StatusInProcessing || req.Status == event.StatusAwaitingPreApproval):
		until := req.Held.Until
		return &WaitingView{Reason: WaitConnection, WebhookKey: optional(currentKey(req)), Until: &until}
	case req.Status == event.StatusPaused:
		return &WaitingView{Reason: WaitResume, WebhookKey: optional(planKey(req.Plan.Pre, req.PausedWebhookID)),
			Until: req.PauseExpiresAt}
	case req.Status == event.StatusAwaitingPreApproval:
		keys, asked := awaitedReplies(req)
		if !asked {
			// Nobody to ask (no pre-approval webhook, or every one's connection is disabled): the
			// executor waits for an operator (lifecycle row PA3).
			return &WaitingView{Reason: WaitReview}
		}
		return &WaitingView{Reason: WaitPreApproval, WebhookKeys: keys, Until: req.ApprovalDue}
	case req.Status == event.StatusPreApprovalNotEligible:
		return &WaitingView{Reason: WaitReview}
	case req.Status != event.StatusInProcessing:
		return nil
	case req.Step == event.StepExecution:
		return &WaitingView{Reason: WaitDataLayer, Until: req.ExecutionDeadline}
	case req.RetryAt != nil:
		return &WaitingView{Reason: WaitRetry, WebhookKey: optional(currentKey(req)), Until: req.RetryAt}
	}
	return nil
}

// currentKey returns the key of the webhook req calls next in its step, or "".
func currentKey(req event.Request) string {
	var hooks []event.PlanWebhook
	switch req.Step {
	case event.StepPreWebhooks:
		hooks = req.Plan.Pre
	case event.StepPostWebhooks:
		hooks = req.Plan.Post
	case event.StepPreApproval:
		hooks = preApprovalWebhooks(req.Plan)
	}
	if req.Next >= 0 && req.Next < len(hooks) {
		return hooks[req.Next].Key
	}
	return ""
}

// awaitedReplies returns the keys of req's pre-approval webhooks, in the plan's order, that have
// not replied in the current run: their record has no reply yet, or there is no record (the
// webhook has not been called yet). Webhooks skipped for a disabled connection are not asked;
// asked reports whether any webhook is.
func awaitedReplies(req event.Request) (keys []string, asked bool) {
	keys = []string{}
	for _, h := range preApprovalWebhooks(req.Plan) {
		i := slices.IndexFunc(req.Webhooks, func(w event.WebhookRecord) bool {
			return w.CallbackType == event.PreApprovalCallback && w.ID == h.ID
		})
		if i >= 0 && req.Webhooks[i].Outcome == event.OutcomeSkipped {
			continue
		}
		asked = true
		if i < 0 || req.Webhooks[i].Reply == "" {
			keys = append(keys, h.Key)
		}
	}
	return keys, asked
}

// planKey returns the key of the webhook of hooks whose id is id, or "".
func planKey(hooks []event.PlanWebhook, id string) string {
	for _, h := range hooks {
		if h.ID == id {
			return h.Key
		}
	}
	return ""
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
