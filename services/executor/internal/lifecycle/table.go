package lifecycle

import (
	"fmt"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// The lifecycle is three tables, read against SPEC §5.1 and §6:
//
//   - inputs: what each input (an event or a timer) records on the record, in each status;
//   - answers: what a webhook's answer records;
//   - decisions: what the request does next, from its record and the clock (F1 and E0 also from what the deciding run already did: Env.Forgot, Env.Indexed).
//
// A row matches when the record is in one of its statuses and steps and its condition holds; the
// first matching row of a table wins. Every input and every answer is recorded by one
// compare-and-set of the record, and then the request is driven from its record by the decisions,
// whichever message arrived: the lifecycle is level-triggered, so a redelivered, duplicated, late or
// early message can only find a request that needs driving, and drive it.
//
// A message is acknowledged only when the decision is Wait (the request waits for an outside party
// or has finished) and its input asks to keep nothing: as long as a request can make progress on its
// own, the message that drove it stays unacknowledged (redelivered after the ack wait if its worker
// dies, or at the time a Later decision names), so a durable trigger always exists. A request that
// waits for an outside party has its own: the pause timer and the execution timer are scheduled
// before the write that starts the wait, and the resume, retry and executed events are durable.

// Action is what a request does next.
type Action int

// Actions. Wait, Later, Call, MergeIdentity, ForgetIdentity, IndexError and Hold need the runner; the others only change the record
// (and may ask for effects), so Settle applies them in memory and one write records them with what
// came before.
const (
	// Wait: nothing to do until an outside party acts (a resume, the data layer, a retry, or
	// nothing: the request finished). Decision.Reason says what it waits for.
	Wait Action = iota
	// Later: nothing to do until Decision.At (a backoff, or another worker's live claim).
	Later
	// Call: claim the current webhook's call (unless the run holds the claim), make it and record
	// its answer (table answers).
	Call
	// MergeIdentity: merge the recorded identity patches into the identity, in order.
	MergeIdentity
	// ForgetIdentity: remove the finished request's identity (or keep it until
	// Record.IdentityKeptUntil), once the record says it finished.
	ForgetIdentity
	// IndexError: put the request in errored_requests (Record.Errored), once the record says it
	// is in error.
	IndexError
	// Hold: the current webhook's connection is unhealthy (its circuit breaker is open): record
	// what the request waits on (Hold), then nothing until Decision.At.
	Hold
	// Fail: set error with Decision.Reason.
	Fail
	// Skip: the current webhook's connection is disabled; mark it skipped and go to the next.
	Skip
	// TakeOver: the claim expired without an answer; count the interruption and free the call.
	TakeOver
	// Complete: every post-execution webhook is done.
	Complete
	// EnterPost: go to the post-execution webhooks (EXECUTION_STAGE=skip).
	EnterPost
	// StartExecution: schedule the execution timer and publish execute (effects), then record the
	// execution step with its deadline.
	StartExecution
	// FinishExecution: apply the data layer's recorded answer.
	FinishExecution
	// StartProcessing: a pending record (written by an earlier version) goes in_processing.
	StartProcessing
	// StartApproval: set the pre-approval stage's due time and schedule its timer (effect).
	StartApproval
	// Triggered: every pre-approval webhook was called; publish the audit event.
	Triggered
	// ApplyReview: apply the operator's recorded approval (pre-execution webhooks) or denial.
	ApplyReview
	// Approve: every pre-approval webhook replied eligible; go to the pre-execution webhooks.
	Approve
	// NotEligible: a pre-approval webhook replied not eligible, or the replies are overdue; an
	// operator reviews the request.
	NotEligible
)

var actionNames = map[Action]string{
	Wait: "wait", Later: "later", Call: "call", MergeIdentity: "merge identity", ForgetIdentity: "forget the identity", IndexError: "index the error", Hold: "hold", Fail: "fail", Skip: "skip",
	TakeOver: "take over", Complete: "complete", EnterPost: "enter post-webhooks", StartExecution: "start execution",
	FinishExecution: "finish execution", StartProcessing: "start processing", StartApproval: "start pre-approval",
	Triggered: "audit triggered", ApplyReview: "apply the review", Approve: "approve", NotEligible: "not eligible",
}

func (a Action) String() string { return actionNames[a] }

// pure reports whether the action only changes the record.
func (a Action) pure() bool { return a >= Fail }

// Decision is the next action of a request, with the row that chose it.
type Decision struct {
	Action Action
	Row    string
	// At is when a Later or Hold decision is due.
	At time.Time
	// HeldUntil is, for Hold, when the connection's breaker is looked at again: its probe, or the
	// end of the probe in flight (Hold.Until).
	HeldUntil time.Time
	// Reason is the message of a Fail, or what a Wait waits for.
	Reason string
	// WebhookKey is the webhook a Fail names.
	WebhookKey string
}

var (
	webhookSteps   = []event.Step{event.StepPreApproval, event.StepPreWebhooks, event.StepPostWebhooks}
	preStep        = []event.Step{event.StepPreWebhooks}
	execStep       = []event.Step{event.StepExecution}
	approvalStep   = []event.Step{event.StepPreApproval}
	inProcessing   = []event.Status{event.StatusInProcessing}
	awaiting       = []event.Status{event.StatusAwaitingPreApproval}
	calling        = []event.Status{event.StatusInProcessing, event.StatusAwaitingPreApproval}
	inReview       = []event.Status{event.StatusAwaitingPreApproval, event.StatusPreApprovalNotEligible}
	notEligible    = []event.Status{event.StatusPreApprovalNotEligible}
	pendingStatus  = []event.Status{event.StatusPending}
	pausedStatus   = []event.Status{event.StatusPaused}
	finishedStatus = []event.Status{event.StatusComplete, event.StatusDenied} // Record.Finished
)

// decisions: the next action of a request, from its record and the clock (Decide).
var decisions = []decisionRow{
	{"N1", pendingStatus, nil, "the policy had no plan (a record of an earlier version)", Fail, "No Policy found for key <key>.", planMissing, failNoPolicy},
	{"N2", pendingStatus, nil, "otherwise (a record of an earlier version)", StartProcessing, "", always, nil},

	{"PA1", awaiting, approvalStep, "the stage is not started (no due time: a new request, or a retry)", StartApproval, "", approvalNotStarted, nil},
	{"PA2", awaiting, approvalStep, "an operator's review is recorded and no call is claimed", ApplyReview, "pre-execution webhooks, or denied", reviewedUnclaimed, nil},

	{"W1", inProcessing, webhookSteps, "identity patches are recorded", MergeIdentity, "", hasPatches, nil},
	{"W2", inProcessing, []event.Step{event.StepPostWebhooks}, "every post-execution webhook is done", Complete, "", stepDone, nil},
	{"W3", inProcessing, preStep, "every pre-execution webhook is done, EXECUTION_STAGE=await", StartExecution, "", stepDoneAwait, nil},
	{"W4", inProcessing, preStep, "every pre-execution webhook is done, EXECUTION_STAGE=skip", EnterPost, "", stepDone, nil},
	{"W5", calling, webhookSteps, "the current webhook's connection is disabled", Skip, "", connectionDisabled, nil},
	{"W6", calling, webhookSteps, "MaxInterrupts (10) calls of the current webhook were cut off in a row", Fail, "the executor stopped during N calls of it in a row", interruptedTooOften, failInterrupted},
	{"W7", calling, webhookSteps, "this run holds the claim on the call", Call, "make it", claimedByMe, nil},
	{"W8", calling, webhookSteps, "another worker holds a live claim", Later, "when the claim expires", claimLive, laterClaim},
	{"W9", calling, webhookSteps, "the claim expired without an answer", TakeOver, "", claimExpired, nil},
	{"W10", calling, webhookSteps, "the next attempt is due later (backoff)", Later, "at retry_at", retryLater, laterRetry},
	{"W11", calling, webhookSteps, "WEBHOOK_MAX_ATTEMPTS answers are recorded (the setting was lowered)", Fail, "webhook <key> failed after N attempts", attemptsUsed, failAttempts},
	{"WH1", calling, webhookSteps, "the current webhook's connection is unhealthy and the request has waited on it CIRCUIT_BREAKER_MAX_WAIT", Fail, "webhook <key>: its connection was unhealthy for longer than CIRCUIT_BREAKER_MAX_WAIT", heldTooLong, failHeldTooLong},
	{"WH2", calling, webhookSteps, "the current webhook's connection is unhealthy: its circuit breaker is open and its probe is not due, or another request makes it", Hold, "the probe: at its due time (and every few seconds, in case an operator closed the breaker), or soon after the probe in flight answers", connectionHeld, detailHeld},
	{"W12", calling, webhookSteps, "the step has a webhook left to call", Call, "claim it, then make it", hasCurrent, nil},

	{"PA3", awaiting, approvalStep, "the stage has nobody to ask: no webhook, or every one skipped", Wait, "an operator's approve or deny", noApprovalWebhooks, nil},
	{"PA4", awaiting, approvalStep, "every webhook is called, the audit event is not published yet", Triggered, "pre_approval_webhook_triggered", notTriggered, nil},
	{"PA5", awaiting, approvalStep, "a webhook replied not eligible", NotEligible, "pre_approval_not_eligible", repliedNotEligible, detailNotEligible},
	{"PA6", awaiting, approvalStep, "every webhook replied eligible", Approve, "in_processing at the pre-execution webhooks", allEligible, nil},
	{"PA7", awaiting, approvalStep, "the due time passed (the replies' tokens expired, or the identity)", NotEligible, "pre_approval_not_eligible: the webhooks that did not reply are named", approvalDue, detailOverdue},
	{"PA8", awaiting, approvalStep, "otherwise", Wait, "the replies, or the approval timer at the due time", always, nil},

	{"PN1", notEligible, approvalStep, "an operator's review is recorded", ApplyReview, "pre-execution webhooks, or denied", reviewed, nil},
	{"PN2", notEligible, approvalStep, "otherwise", Wait, "an operator's approve or deny", always, nil},

	{"X1", inProcessing, execStep, "the execution run is not started (no deadline: a retry)", StartExecution, "", notStarted, nil},
	{"X2", inProcessing, execStep, "the data layer's answer for this run is recorded", FinishExecution, "post-webhooks, or error", executedRecorded, nil},
	{"X3", inProcessing, execStep, "the execution deadline passed", Fail, "execution did not finish within EXECUTION_TIMEOUT", deadlinePassed, failExecutionTimeout},
	{"X4", inProcessing, execStep, "otherwise", Wait, "the data layer's executed, or the execution timer at the deadline", always, nil},

	{"P1", pausedStatus, preStep, "the pause is due: its token expired, or the identity before it", Fail, "not resumed in time / the identity expired", pauseDue, failPauseDue},
	{"P2", pausedStatus, preStep, "otherwise", Wait, "a resume, or the pause timer at the pause's due time", always, nil},

	{"F1", finishedStatus, nil, "this run has not forgotten the identity (every run that finds the request finished does, before its message is acknowledged)", ForgetIdentity, "remove it, or keep it FINISHED_IDENTITY_RETENTION after the request finished (derived identities were removed as they were merged; the sweep removes any a crash left)", notForgotten, nil},
	{"C1", []event.Status{event.StatusComplete}, nil, "always", Wait, "nothing: the request is complete", always, nil},
	{"D1", []event.Status{event.StatusDenied}, nil, "always", Wait, "nothing: the request was denied", always, nil},
	{"E0", []event.Status{event.StatusError}, nil, "this run has not indexed the error (every run that finds the request in error does, before its message is acknowledged)", IndexError, "put it in errored_requests, what scoped retries filter on", notIndexed, nil},
	{"E1", []event.Status{event.StatusError}, nil, "always", Wait, "a retry", always, nil},
}

// InputKind is an input of the lifecycle.
type InputKind string

// Inputs.
const (
	InSubmitted      InputKind = "submitted"
	InResume         InputKind = "resume"
	InRetry          InputKind = "retry"
	InExecuted       InputKind = "executed"
	InPauseTimer     InputKind = "pause timer"
	InExecutionTimer InputKind = "execution timer"
	InReply          InputKind = "pre-approval reply"
	InReview         InputKind = "review"
	InApprovalTimer  InputKind = "approval timer"
)

// Input is an event or a timer about a request, decoded.
type Input struct {
	Kind InputKind
	// Resume: the pause and the plan webhook the token was issued for, and the name of its derived
	// identity stored beside the identity ("" when none). Pause timer: the pause it guards.
	Pause     int
	WebhookID string
	Patch     string
	// Pre-approval reply: the plan webhook the token was issued for (WebhookID), the run of the
	// stage (Run) and the reply. Review: the operator's decision, and a denial's reason (Reason).
	Eligible bool
	Approved bool
	Reason   string
	// Retry: the error it answers, and the policy's plan when the record has none (nil when the
	// policy still has none).
	FromError int
	Plan      *event.Plan
	// Executed: the execution run it names ("" from data layers that do not send it), and the
	// answer. Execution timer and approval timer: the run they guard.
	ExecutionID string
	Succeeded   bool
	Error       string
	Run         int
}

// InputResult is what ApplyInput did.
type InputResult struct {
	Row string
	// Changed reports that the record changed and must be written.
	Changed bool
	// Keep is when the message of the input must come back (it is its request's trigger then);
	// zero when it may be acknowledged once the request waits.
	Keep time.Time
}

// inputs: what an input records (ApplyInput). A submitted event of a new id creates the record
// (NewRecord); of a known id it records nothing (the runner stores its identity if none is).
var inputs = []inputRow{
	{"I1", InSubmitted, nil, nil, "the id is known", "nothing (the identity is stored if none is: a crash before it was)", always2, nil},
	{"I2", InResume, []event.Status{event.StatusPaused}, preStep, "the pause and its webhook match", "in_processing; its derived identity queued as a patch", resumeMatches, resume},
	{"I3", InResume, []event.Status{event.StatusInProcessing}, preStep, "the token's call is the current one and its answer is not recorded (pause = this pause + 1)", "early resume recorded, applied when the answer halts", resumeEarly, recordEarlyResume},
	{"I4", InRetry, []event.Status{event.StatusError}, nil, "from_error is the current error", "in_processing at the failed step: run + 1, its webhooks pending from the first (pre: pause number + 1, so older tokens are refused), or the execution run restarted", retryMatches, retry},
	{"I5", InExecuted, []event.Status{event.StatusInProcessing}, execStep, "it names this run (or no run), none recorded", "the answer recorded", executedThisRun, recordExecuted},
	{"I6", InExecuted, []event.Status{event.StatusInProcessing}, preStep, "every pre-webhook is done, or the last one to call is in flight (the write of its answer starts execution: execute goes out first), and it names run 1 (or no run), none recorded", "the answer recorded", executedEarly, recordExecuted},
	{"I7", InPauseTimer, []event.Status{event.StatusPaused}, preStep, "it guards this pause, which is not due yet (an early fire)", "nothing; the message is kept until the pause is due", pauseTimerEarly, keepUntilPauseDue},
	{"I8", InExecutionTimer, []event.Status{event.StatusInProcessing}, execStep, "it guards this run, whose deadline is later", "nothing; the message is kept until the deadline", executionTimerEarly, keepUntilDeadline},
	{"I10", InReply, awaiting, approvalStep, "it names a webhook of the stage, in this run, that has not replied", "the reply recorded on its webhook", replyMatches, recordReply},
	{"I11", InReview, inReview, approvalStep, "no review is recorded", "the review recorded", notReviewed, recordReview},
	{"I12", InApprovalTimer, awaiting, approvalStep, "it guards this run, whose due time is later (an early fire)", "nothing; the message is kept until the due time", approvalTimerEarly, keepUntilApprovalDue},
	{"I9", "", nil, nil, "any other input, status or step", "nothing (a stale or duplicate input; the decisions drive the request)", always2, nil},
}

// Verdict classifies a webhook call's outcome (SPEC §6).
type Verdict int

// Verdicts.
const (
	// Done: a 2xx answer accepted (a two-way body parsed).
	Done Verdict = iota
	// Ignored: a one-way webhook answered another 3xx/4xx; the request goes on.
	Ignored
	// Retry: transport error, timeout, 408, 429 or 5xx.
	Retry
	// Refused: an answer or call that fails the request without retry.
	Refused
	// NotMade: the call could not be made (no secrets, secrets that do not open, the identity
	// gone); no attempt is recorded.
	NotMade
	// Interrupted: the call was cut off by a stopping executor; no attempt is recorded.
	Interrupted
)

// Answer is the outcome of one call, as ApplyAnswer records it.
type Answer struct {
	Verdict Verdict
	// Status is the HTTP status, 0 without an answer; Reason explains Retry, Refused, NotMade and
	// an Ignored status.
	Status int
	Reason string
	// Halt is a two-way answer's halt.
	Halt bool
	// At is when the call started, Latency how long it took; RetryIn the backoff before the next attempt (jitter and
	// Retry-After applied by the runner).
	At      time.Time
	Latency time.Duration
	RetryIn time.Duration
	// IdentityExpiresAt is the new expiry of the identity when the answer's derived identity was
	// stored.
	IdentityExpiresAt *time.Time
}

// answers: what a webhook's answer records (ApplyAnswer). Every answer clears the claim; all but
// NotMade and Interrupted record an attempt.
var answers = []answerRow{
	{"A1", "done, the call may halt and halts, and an early resume of this pause is recorded", "paused, then in_processing at once; the resume's derived identity queued", haltsResumed, haltThenResume},
	{"A2", "done, the call may halt and halts", "paused (the pause timer is scheduled before the write)", halts, pause},
	{"A3", "done", "succeeded; next webhook", verdictIs(Done), next(event.OutcomeSucceeded)},
	{"A10", "ignored (3xx/4xx) at the pre-approval step: the webhook refused the call, so it will not reply", "failed; error", ignoredAtApproval, failRefused},
	{"A4", "ignored (one-way 3xx/4xx)", "ignored_status; next webhook", verdictIs(Ignored), next(event.OutcomeIgnoredStatus)},
	{"A5", "retry, with attempts left", "retry_at = now + backoff", retryLeft, backoff},
	{"A6", "retry, WEBHOOK_MAX_ATTEMPTS reached", "failed; error", verdictIs(Retry), failRetriesUsed},
	{"A7", "refused", "failed; error", verdictIs(Refused), failRefused},
	{"A8", "not made", "failed; error (no attempt recorded)", verdictIs(NotMade), failNotMade},
	{"A9", "interrupted (the executor stopped during the call)", "the interruption counted (no attempt); the call is made again with the same webhook-id", verdictIs(Interrupted), interrupted},
}

// Decide returns the next action of r.
func Decide(r *Record, e Env) Decision {
	for _, row := range decisions {
		if !statusIn(r.Status, row.statuses) || !stepIn(r.Step, row.steps) || !row.cond(r, e) {
			continue
		}
		d := Decision{Action: row.do, Row: row.id}
		if row.do == Wait || row.do == Hold {
			d.Reason = row.note
		}
		if row.detail != nil {
			row.detail(r, e, &d)
		}
		return d
	}
	// Unreachable for the statuses the lifecycle writes; a record it cannot place waits.
	return Decision{Action: Wait, Row: "-", Reason: fmt.Sprintf("nothing: status %s at step %s has no row", r.Status, r.Step)}
}

// ApplyInput records in on r (table inputs).
func ApplyInput(r *Record, in Input, e Env) InputResult {
	for _, row := range inputs {
		if row.kind != "" && row.kind != in.Kind {
			continue
		}
		if row.statuses != nil && !statusIn(r.Status, row.statuses) || !stepIn(r.Step, row.steps) || !row.cond(r, in, e) {
			continue
		}
		res := InputResult{Row: row.id}
		if row.apply != nil {
			row.apply(r, in, e, &res)
		}
		return res
	}
	return InputResult{Row: "-"}
}

// ApplyAnswer records the answer of the call r's claim is on (table answers). The caller holds
// the claim (Env.Owner); it returns the effects needed before the record is written.
func ApplyAnswer(r *Record, a Answer, e Env) (string, []Effect) {
	for _, row := range answers {
		if row.cond(r, a, e) {
			return row.id, row.apply(r, a, e)
		}
	}
	return "-", nil
}

// Settle applies to r, in memory, the pure decisions (those that only change the record) one
// after the other, and returns the first decision that needs the runner, with the effects the
// applied ones need before r is written. With startExecution false it stops at StartExecution
// too (a record being created must exist before the data layer can answer).
func Settle(r *Record, e Env, startExecution bool) (Decision, []Effect, bool) {
	var effects []Effect
	changed := false
	for range 4 * (len(r.Webhooks) + 8) { // each pure action moves the record on; bound the loop anyway
		d := Decide(r, e)
		if !d.Action.pure() || d.Action == StartExecution && !startExecution {
			return d, effects, changed
		}
		effects = append(effects, apply(r, d, e)...)
		changed = true
	}
	panic("lifecycle: Settle did not settle")
}

// ---- rows ----

type decisionRow struct {
	id       string
	statuses []event.Status
	steps    []event.Step // nil: any step
	when     string
	do       Action
	note     string // what the action does or waits for, as the docs show it
	cond     func(*Record, Env) bool
	detail   func(*Record, Env, *Decision)
}

type inputRow struct {
	id       string
	kind     InputKind      // "": any input
	statuses []event.Status // nil: any status
	steps    []event.Step   // nil: any step
	when     string
	effect   string
	cond     func(*Record, Input, Env) bool
	apply    func(*Record, Input, Env, *InputResult)
}

type answerRow struct {
	id     string
	when   string
	effect string
	cond   func(*Record, Answer, Env) bool
	apply  func(*Record, Answer, Env) []Effect
}

func stepIn(s event.Step, steps []event.Step) bool {
	if steps == nil {
		return true
	}
	for _, x := range steps {
		if x == s {
			return true
		}
	}
	return false
}

func statusIn(s event.Status, statuses []event.Status) bool {
	for _, x := range statuses {
		if x == s {
			return true
		}
	}
	return false
}

// ---- decision conditions ----

func always(*Record, Env) bool                  { return true }
func always2(*Record, Input, Env) bool          { return true }
func planMissing(r *Record, _ Env) bool         { return r.PlanMissing() }
func hasPatches(r *Record, _ Env) bool          { return len(r.IdentityPatches) > 0 }
func stepDone(r *Record, _ Env) bool            { _, _, ok := r.Current(); return !ok }
func hasCurrent(r *Record, e Env) bool          { return !stepDone(r, e) }
func stepDoneAwait(r *Record, e Env) bool       { return stepDone(r, e) && e.Cfg.AwaitExecution }
func notStarted(r *Record, _ Env) bool          { return r.ExecutionDeadline == nil }
func interruptedTooOften(r *Record, e Env) bool { return r.Interrupts >= maxInterrupts(e) }
func claimedByMe(r *Record, e Env) bool {
	return r.Claim != nil && r.Claim.Owner == e.Owner && r.Claim.WebhookID == r.CallID()
}
func claimLive(r *Record, e Env) bool      { return r.Claim != nil && e.Now.Before(r.Claim.Until) }
func claimExpired(r *Record, _ Env) bool   { return r.Claim != nil }
func retryLater(r *Record, e Env) bool     { return r.RetryAt != nil && e.Now.Before(*r.RetryAt) }
func attemptsUsed(r *Record, e Env) bool   { return r.Attempts() >= e.Cfg.MaxAttempts }
func deadlinePassed(r *Record, e Env) bool { return !e.Now.Before(*r.ExecutionDeadline) }

// connectionHeld reports that the current webhook's connection is unhealthy (Env.Health).
func connectionHeld(r *Record, e Env) bool {
	_, _, held := heldBy(r, e)
	return held
}

func heldBy(r *Record, e Env) (until time.Time, probing, held bool) {
	w, _, ok := r.Current()
	if !ok || e.Health == nil {
		return time.Time{}, false, false
	}
	return e.Health.Held(w.ConnectionKey, e.Now)
}

func heldTooLong(r *Record, e Env) bool {
	w, _, _ := r.Current()
	h := r.Held
	return e.Cfg.BreakerMaxWait > 0 && h != nil && h.ConnectionKey == w.ConnectionKey &&
		!e.Now.Before(h.Since.Add(e.Cfg.BreakerMaxWait)) && connectionHeld(r, e)
}

func connectionDisabled(r *Record, _ Env) bool {
	w, _, ok := r.Current()
	return ok && w.ConnectionDisabled
}

func executedRecorded(r *Record, _ Env) bool {
	return r.Executed != nil && r.Executed.ExecutionID == r.ExecutionID()
}

func pauseDue(r *Record, e Env) bool {
	due, _ := r.PauseDue()
	return r.PauseExpiresAt != nil && !e.Now.Before(due)
}

func maxInterrupts(e Env) int {
	if e.Cfg.MaxInterrupts > 0 {
		return e.Cfg.MaxInterrupts
	}
	return DefaultMaxInterrupts
}

func approvalNotStarted(r *Record, _ Env) bool { return r.ApprovalDue == nil }

// notForgotten and notIndexed report that the deciding run has not yet forgotten the finished
// request's identity (F1), or indexed its error (E0).
func notForgotten(_ *Record, e Env) bool      { return !e.Forgot }
func notIndexed(_ *Record, e Env) bool        { return !e.Indexed }
func reviewed(r *Record, _ Env) bool          { return r.Review != nil }
func reviewedUnclaimed(r *Record, _ Env) bool { return r.Review != nil && r.Claim == nil }

// noApprovalWebhooks reports a stage with nobody to ask: no webhook, or every one skipped (its
// connection is disabled).
func noApprovalWebhooks(r *Record, _ Env) bool {
	for _, wr := range r.approvalRecords() {
		if wr.Outcome != event.OutcomeSkipped {
			return false
		}
	}
	return true
}
func notTriggered(r *Record, _ Env) bool { return !r.Triggered }
func approvalDue(r *Record, e Env) bool  { return !e.Now.Before(*r.ApprovalDue) }

func repliedNotEligible(r *Record, _ Env) bool {
	for _, wr := range r.approvalRecords() {
		if wr.Reply == event.ReplyNotEligible {
			return true
		}
	}
	return false
}

// allEligible reports that every pre-approval webhook replied eligible; skipped ones (their
// connection is disabled) are not asked and do not count.
func allEligible(r *Record, _ Env) bool {
	asked := 0
	for _, wr := range r.approvalRecords() {
		switch {
		case wr.Outcome == event.OutcomeSkipped:
		case wr.Reply != event.ReplyEligible:
			return false
		default:
			asked++
		}
	}
	return asked > 0
}

// ---- decision details ----

func laterClaim(r *Record, _ Env, d *Decision) { d.At = r.Claim.Until }
func laterRetry(r *Record, _ Env, d *Decision) { d.At = *r.RetryAt }

func detailHeld(r *Record, e Env, d *Decision) {
	until, probing, _ := heldBy(r, e)
	d.At, d.HeldUntil = until, until
	look := e.Cfg.BreakerLook
	if probing {
		look = e.Cfg.BreakerRecheck
	}
	if look > 0 {
		d.At = minTime(until, e.Now.Add(look))
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func failHeldTooLong(r *Record, e Env, d *Decision) {
	w, _, _ := r.Current()
	d.WebhookKey = w.Key
	d.Reason = fmt.Sprintf("webhook %s: its connection %s was unhealthy for longer than %s", w.Key, w.ConnectionKey, e.Cfg.BreakerMaxWait)
}

func failNoPolicy(r *Record, _ Env, d *Decision) {
	d.Reason = fmt.Sprintf("No Policy found for key %s.", r.PolicyKey)
}

func failInterrupted(r *Record, _ Env, d *Decision) {
	w, _, _ := r.Current()
	d.WebhookKey = w.Key
	d.Reason = fmt.Sprintf("webhook %s: the executor stopped during %d calls of it in a row", w.Key, r.Interrupts)
}

func failAttempts(r *Record, _ Env, d *Decision) {
	w, wr, _ := r.Current()
	d.WebhookKey = w.Key
	d.Reason = fmt.Sprintf("webhook %s failed after %d attempts: %s", w.Key, r.Attempts(), lastError(wr))
}

func failExecutionTimeout(_ *Record, e Env, d *Decision) {
	d.Reason = "execution did not finish within " + e.Cfg.ExecutionTimeout.String()
}

func detailNotEligible(r *Record, _ Env, d *Decision) {
	for i, wr := range r.approvalRecords() {
		if wr.Reply == event.ReplyNotEligible {
			d.WebhookKey = r.approvalHooks()[i].Key
			d.Reason = fmt.Sprintf("pre-approval webhook %s replied not eligible", d.WebhookKey)
			return
		}
	}
}

func detailOverdue(r *Record, _ Env, d *Decision) {
	var keys []string
	for i, wr := range r.approvalRecords() {
		if wr.Reply == "" && wr.Outcome != event.OutcomeSkipped {
			keys = append(keys, r.approvalHooks()[i].Key)
		}
	}
	msg := MsgNotReplied
	if e := r.IdentityExpiresAt; e != nil && !e.After(*r.ApprovalDue) {
		msg = MsgIdentityExpired
	}
	d.Reason = fmt.Sprintf("%s: %s", msg, strings.Join(keys, ", "))
}

func failPauseDue(r *Record, _ Env, d *Decision) {
	_, d.Reason = r.PauseDue()
	d.WebhookKey = preWebhookKey(r, r.PausedWebhookID)
}

// ---- input conditions ----

func resumeMatches(r *Record, in Input, _ Env) bool {
	return r.Pause == in.Pause && r.PausedWebhookID == in.WebhookID
}

func resumeEarly(r *Record, in Input, _ Env) bool {
	w, _, ok := r.Current()
	return ok && w.ID == in.WebhookID && in.Pause == r.Pause+1 && r.EarlyResume == nil
}

func retryMatches(r *Record, in Input, _ Env) bool { return r.ErrorCount == in.FromError }

func executedThisRun(r *Record, in Input, _ Env) bool {
	return r.Executed == nil && (in.ExecutionID == "" || in.ExecutionID == r.ExecutionID())
}

func executedEarly(r *Record, in Input, e Env) bool {
	return e.Cfg.AwaitExecution && (stepDone(r, e) || lastCallInFlight(r)) && executedThisRun(r, in, e)
}

// lastCallInFlight reports a claimed call of the last pre-execution webhook to be called (those
// after it are skipped): the write of its answer may start the execution.
func lastCallInFlight(r *Record) bool {
	if r.Step != event.StepPreWebhooks || r.Claim == nil || r.Next >= len(r.Plan.Pre) {
		return false
	}
	for _, w := range r.Plan.Pre[r.Next+1:] {
		if !w.ConnectionDisabled {
			return false
		}
	}
	return true
}

func replyMatches(r *Record, in Input, _ Env) bool {
	if in.Run != r.Run {
		return false
	}
	for i, w := range r.approvalHooks() {
		if w.ID == in.WebhookID {
			return r.approvalRecords()[i].Reply == ""
		}
	}
	return false
}

func notReviewed(r *Record, _ Input, _ Env) bool { return r.Review == nil }

func approvalTimerEarly(r *Record, in Input, e Env) bool {
	return r.Run == in.Run && r.ApprovalDue != nil && e.Now.Before(*r.ApprovalDue)
}

func pauseTimerEarly(r *Record, in Input, e Env) bool {
	due, _ := r.PauseDue()
	return r.Pause == in.Pause && r.PauseExpiresAt != nil && e.Now.Before(due)
}

func executionTimerEarly(r *Record, in Input, e Env) bool {
	return r.Run == in.Run && r.ExecutionDeadline != nil && e.Now.Before(*r.ExecutionDeadline)
}

// ---- answer conditions ----

func verdictIs(v Verdict) func(*Record, Answer, Env) bool {
	return func(_ *Record, a Answer, _ Env) bool { return a.Verdict == v }
}

func halts(r *Record, a Answer, _ Env) bool { return a.Verdict == Done && a.Halt && r.Pausing() }

func ignoredAtApproval(r *Record, a Answer, _ Env) bool {
	return a.Verdict == Ignored && r.Step == event.StepPreApproval
}

func haltsResumed(r *Record, a Answer, e Env) bool {
	w, _, _ := r.Current()
	er := r.EarlyResume
	return halts(r, a, e) && er != nil && er.Pause == r.Pause+1 && er.WebhookID == w.ID
}

func retryLeft(r *Record, a Answer, e Env) bool {
	return a.Verdict == Retry && r.Attempts()+1 < e.Cfg.MaxAttempts
}
