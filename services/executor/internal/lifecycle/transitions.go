package lifecycle

import (
	"fmt"
	"strconv"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Effect is what must happen before a record that asks for it is written: a crash after the effect
// and before the write repeats the effect (both are idempotent), never loses it.
type Effect struct {
	// Timer is a timer to schedule.
	Timer *Timer
	// Execute is the execution run to publish execute for (its id is event.ExecutionID of the
	// request and run); 0 when none.
	Execute int
}

// TimerKind is a kind of durable timer.
type TimerKind string

// Timer kinds.
const (
	// TimerPause guards a pause: it fires when the pause is due.
	TimerPause TimerKind = "pause"
	// TimerExecution guards an execution run: it fires at its deadline.
	TimerExecution TimerKind = "execution"
	// TimerApproval guards a run of the pre-approval stage: it fires when its replies are due.
	TimerApproval TimerKind = "approval"
)

// Timer is a durable timer of a request. A later timer of the same kind for the same request
// replaces an earlier one.
type Timer struct {
	Kind  TimerKind
	Pause int
	Run   int
	Due   time.Time
}

// NewRecord is the record of a new submission: awaiting_pre_approval at the pre-approval step when
// the plan has that stage, otherwise in_processing, with a snapshot of plan; or error when the
// policy has no plan. Its first events are pending (with no previous status) and the one it goes to.
func NewRecord(sub event.Submitted, plan *event.Plan, e Env) *Record {
	now := e.Now
	r := &Record{Request: event.Request{
		ID: sub.ID, PolicyKey: sub.PolicyKey, ExternalID: sub.ExternalID, Step: event.StepPreWebhooks, Run: 1,
		CreatedAt: now, UpdatedAt: now, Webhooks: []event.WebhookRecord{},
	}}
	exp := now.Add(e.Cfg.IdentityTTL)
	r.IdentityExpiresAt = &exp
	r.SetStatus(event.StatusPending, now, "", "")
	if plan == nil {
		var d Decision
		failNoPolicy(r, e, &d)
		fail(r, now, "", d.Reason)
		return r
	}
	snapshot(r, *plan)
	if plan.PreApproval != nil {
		r.Step = event.StepPreApproval
		r.SetStatus(event.StatusAwaitingPreApproval, now, "", "")
		return r
	}
	r.StartedProcessingAt = &now
	r.SetStatus(event.StatusInProcessing, now, "", "")
	return r
}

// ClaimCall writes the run's claim on the current call into r.
func ClaimCall(r *Record, e Env) {
	r.Claim = &Claim{Owner: e.Owner, At: e.Now, Until: e.Now.Add(e.Cfg.ClaimTTL), WebhookID: r.CallID()}
	r.RetryAt, r.Held = nil, nil
	r.UpdatedAt = e.Now
}

// HoldCall records, for a Hold decision, that the current call waits on its connection's circuit
// breaker until d.HeldUntil (since the first Hold on that connection); it reports whether the record
// changed.
func HoldCall(r *Record, d Decision, e Env) bool {
	w, _, _ := r.Current()
	since := e.Now
	if h := r.Held; h != nil && h.ConnectionKey == w.ConnectionKey {
		if h.Until.Equal(d.HeldUntil) {
			return false
		}
		since = h.Since
	}
	r.Held = &event.Hold{ConnectionKey: w.ConnectionKey, Since: since, Until: d.HeldUntil}
	r.UpdatedAt = e.Now
	return true
}

// ReleaseClaim removes the run's claim on a call it will not make (the executor is stopping); it
// reports whether there was one.
func ReleaseClaim(r *Record, e Env) bool {
	if r.Claim == nil || r.Claim.Owner != e.Owner {
		return false
	}
	r.Claim = nil
	r.UpdatedAt = e.Now
	return true
}

// IdentityMerged records that the identity patches were merged into the identity, which now
// expires at expires.
func IdentityMerged(r *Record, expires time.Time, e Env) {
	r.IdentityPatches = nil
	r.IdentityExpiresAt = &expires
	r.UpdatedAt = e.Now
}

// SetError sets r to error at its step with message, naming webhookKey ("" for none): what the
// runner records when an effect shows the request cannot go on (the identity is gone when execute
// is to be published, a record too large to write).
func SetError(r *Record, e Env, webhookKey, message string) { fail(r, e.Now, webhookKey, message) }

// apply applies a pure decision to r.
func apply(r *Record, d Decision, e Env) []Effect {
	now := e.Now
	r.UpdatedAt = now
	switch d.Action {
	case Fail:
		if w, wr, ok := r.Current(); ok && statusIn(r.Status, calling) && w.Key == d.WebhookKey {
			wr.Outcome = event.OutcomeFailed
		}
		fail(r, now, d.WebhookKey, d.Reason)
	case Skip:
		_, wr, _ := r.Current()
		wr.Outcome = event.OutcomeSkipped
		moveNext(r)
	case TakeOver:
		_, wr, _ := r.Current()
		r.Claim = nil
		r.Interrupts++
		wr.Interrupted++
	case Complete:
		r.FinishedProcessingAt = &now
		r.SetStatus(event.StatusComplete, now, "", "")
		finished(r, e)
	case EnterPost:
		enter(r, event.StepPostWebhooks)
	case StartExecution:
		if r.Step != event.StepExecution {
			enter(r, event.StepExecution)
		}
		deadline := now.Add(e.Cfg.ExecutionTimeout)
		r.ExecutionDeadline = &deadline
		return []Effect{{Timer: &Timer{Kind: TimerExecution, Run: r.Run, Due: deadline}}, {Execute: r.Run}}
	case FinishExecution:
		ex := r.Executed
		r.Executed = nil
		if !ex.Succeeded {
			msg := ex.Error
			if msg == "" {
				msg = "execution failed"
			}
			fail(r, now, "", msg)
			break
		}
		r.ExecutionDeadline = nil
		enter(r, event.StepPostWebhooks)
	case StartProcessing:
		r.StartedProcessingAt = &now
		r.SetStatus(event.StatusInProcessing, now, "", "")
	case StartApproval:
		due := now.Add(e.Cfg.PauseTimeout)
		if x := r.IdentityExpiresAt; x != nil && x.Before(due) {
			due = *x
		}
		r.ApprovalDue, r.Triggered = &due, false
		return []Effect{{Timer: &Timer{Kind: TimerApproval, Run: r.Run, Due: due}}}
	case Triggered:
		r.Triggered = true
		r.emit(r.Status, now, "", "", event.ActionPreApprovalTriggered)
	case Approve:
		approve(r, now, event.ActionPreApprovalEligible)
	case NotEligible:
		r.ApprovalDue = nil
		r.emit(event.StatusPreApprovalNotEligible, now, d.WebhookKey, d.Reason, event.ActionPreApprovalNotEligible)
	case ApplyReview:
		rv := r.Review
		r.Review = nil
		if rv.Approved {
			approve(r, now, event.ActionApproved)
			break
		}
		r.ApprovalDue, r.RetryAt = nil, nil
		r.DenyReason = rv.Reason
		r.FinishedProcessingAt = &now
		r.emit(event.StatusDenied, now, "", rv.Reason, event.ActionDenied)
		finished(r, e)
	}
	return nil
}

// finished records when the identity of a request that just finished is gone: the runner forgets
// it once the record is written (row F1).
func finished(r *Record, e Env) {
	until := r.IdentityKeptUntil(e.Cfg)
	r.IdentityExpiresAt = &until
}

// approve ends the pre-approval stage: the request starts processing at its pre-execution webhooks.
func approve(r *Record, now time.Time, action string) {
	r.ApprovalDue = nil
	enter(r, event.StepPreWebhooks)
	r.StartedProcessingAt = &now
	r.emit(event.StatusInProcessing, now, "", "", action)
}

// enter starts step at its first webhook, in its first run.
func enter(r *Record, step event.Step) {
	r.Step, r.Next, r.Run = step, 0, 1
	r.RetryAt, r.Interrupts, r.EarlyResume, r.Held = nil, 0, nil, nil
}

// moveNext goes to the next webhook of the step.
func moveNext(r *Record) {
	r.Next++
	r.RetryAt, r.Interrupts, r.EarlyResume, r.Held = nil, 0, nil, nil
}

// fail sets r to error at its step.
func fail(r *Record, now time.Time, webhookKey, message string) {
	message = event.Reason(message)
	r.Claim, r.RetryAt, r.EarlyResume, r.Executed, r.Held = nil, nil, nil, nil, nil
	r.ApprovalDue, r.Review = nil, nil
	r.Error = &event.RequestError{Step: r.Step, WebhookKey: webhookKey, Message: message}
	r.ErrorCount++
	r.SetStatus(event.StatusError, now, webhookKey, message)
}

// snapshot puts the plan and one pending record per webhook into r: pre-execution, post-execution,
// then pre-approval webhooks (see hooks).
func snapshot(r *Record, p event.Plan) {
	p.PolicyKey = r.PolicyKey
	r.Plan = p
	r.Webhooks = make([]event.WebhookRecord, 0, len(p.Pre)+len(p.Post)+len(r.approvalHooks()))
	for _, list := range []struct {
		ws []event.PlanWebhook
		ct event.CallbackType
	}{{p.Pre, event.Pre}, {p.Post, event.Post}, {r.approvalHooks(), event.PreApprovalCallback}} {
		for _, w := range list.ws {
			r.Webhooks = append(r.Webhooks, event.WebhookRecord{
				ID: w.ID, Key: w.Key, CallbackType: list.ct, Direction: w.Direction, Order: w.Order,
				Attempts: []event.Attempt{}, Outcome: event.OutcomePending,
			})
		}
	}
}

// ---- inputs ----

func resume(r *Record, in Input, e Env, res *InputResult) {
	r.PausedWebhookID = ""
	r.PauseExpiresAt = nil
	if in.Patch != "" {
		r.IdentityPatches = append(r.IdentityPatches, in.Patch)
	}
	r.SetStatus(event.StatusInProcessing, e.Now, "", "")
	res.Changed = true
}

func recordEarlyResume(r *Record, in Input, e Env, res *InputResult) {
	r.EarlyResume = &EarlyResume{Pause: in.Pause, WebhookID: in.WebhookID, Patch: in.Patch}
	r.UpdatedAt = e.Now
	res.Changed = true
}

func retry(r *Record, in Input, e Env, res *InputResult) {
	now := e.Now
	if r.PlanMissing() && in.Plan != nil {
		snapshot(r, *in.Plan)
		r.Step, r.Run = event.StepPreWebhooks, 0
		if in.Plan.PreApproval != nil {
			r.Step = event.StepPreApproval
		}
	}
	r.Error = nil
	r.Claim, r.RetryAt, r.EarlyResume, r.Executed, r.Held = nil, nil, nil, nil, nil
	r.Interrupts = 0
	r.Run++
	if r.StartedProcessingAt == nil && r.Step != event.StepPreApproval {
		r.StartedProcessingAt = &now
	}
	if r.Step == event.StepExecution {
		r.ExecutionDeadline = nil
	} else {
		r.Next = 0
		hooks, offset, _ := r.hooks()
		for i := range hooks {
			r.Webhooks[offset+i].Outcome = event.OutcomePending
			r.Webhooks[offset+i].Reply = ""
		}
		if r.Step == event.StepPreWebhooks {
			// Tokens issued by the failed run name this pause number; the new run's calls issue the
			// next one, so those tokens are refused as an earlier pause.
			r.Pause++
		}
	}
	status := event.StatusInProcessing
	if r.Step == event.StepPreApproval {
		// The stage starts again: new tokens (the run is in them), a new due time (A1).
		status, r.ApprovalDue, r.Triggered = event.StatusAwaitingPreApproval, nil, false
	}
	r.SetStatus(status, now, "", "")
	if r.PlanMissing() {
		var d Decision
		failNoPolicy(r, e, &d)
		fail(r, now, "", d.Reason)
	}
	res.Changed = true
}

func recordExecuted(r *Record, in Input, e Env, res *InputResult) {
	r.Executed = &Executed{ExecutionID: r.ExecutionID(), Succeeded: in.Succeeded, Error: event.Reason(in.Error)}
	r.UpdatedAt = e.Now
	res.Changed = true
}

func recordReply(r *Record, in Input, e Env, res *InputResult) {
	reply := event.ReplyNotEligible
	if in.Eligible {
		reply = event.ReplyEligible
	}
	offset := len(r.Plan.Pre) + len(r.Plan.Post)
	for i, w := range r.approvalHooks() {
		if w.ID == in.WebhookID {
			r.Webhooks[offset+i].Reply = reply
		}
	}
	r.UpdatedAt = e.Now
	res.Changed = true
}

func recordReview(r *Record, in Input, e Env, res *InputResult) {
	r.Review = &Review{Approved: in.Approved, Reason: event.Reason(in.Reason)}
	r.UpdatedAt = e.Now
	res.Changed = true
}

func keepUntilApprovalDue(r *Record, _ Input, _ Env, res *InputResult) { res.Keep = *r.ApprovalDue }

func keepUntilPauseDue(r *Record, _ Input, _ Env, res *InputResult) { res.Keep, _ = r.PauseDue() }

func keepUntilDeadline(r *Record, _ Input, _ Env, res *InputResult) { res.Keep = *r.ExecutionDeadline }

// ---- answers ----

// record records the answer as an attempt of the current call and clears the claim.
func record(r *Record, a Answer, e Env) {
	_, wr, _ := r.Current()
	att := event.Attempt{At: callStart(a, e), WebhookID: r.CallID(), Status: a.Status,
		LatencyMS: float64(a.Latency.Microseconds()) / 1000}
	if a.Verdict != Done {
		att.Error = event.Reason(a.Reason)
	}
	wr.Attempts = append(wr.Attempts, att)
	if n := len(wr.Attempts) - maxKeptAttempts; n > 0 {
		wr.Attempts = append(wr.Attempts[:0], wr.Attempts[n:]...)
	}
	r.Claim = nil
	r.UpdatedAt = e.Now
	if a.IdentityExpiresAt != nil {
		r.IdentityExpiresAt = a.IdentityExpiresAt
	}
}

// callStart is when the call of a started.
func callStart(a Answer, e Env) time.Time {
	if a.At.IsZero() {
		return e.Now.Add(-a.Latency)
	}
	return a.At
}

// halt records a halting answer: the request pauses after the current webhook.
func halt(r *Record, a Answer, e Env) {
	w, wr, _ := r.Current()
	start := callStart(a, e)
	record(r, a, e)
	wr.Outcome = event.OutcomeHalted
	early := r.EarlyResume
	moveNext(r)
	r.EarlyResume = early
	now := e.Now
	exp := start.Add(e.Cfg.PauseTimeout)
	r.Pause++
	r.PausedWebhookID = w.ID
	r.PausedAt = &now
	r.PauseExpiresAt = &exp
	r.SetStatus(event.StatusPaused, now, w.Key, "")
}

func pause(r *Record, a Answer, e Env) []Effect {
	halt(r, a, e)
	due, _ := r.PauseDue()
	return []Effect{{Timer: &Timer{Kind: TimerPause, Pause: r.Pause, Due: due}}}
}

func haltThenResume(r *Record, a Answer, e Env) []Effect {
	halt(r, a, e)
	er := r.EarlyResume
	r.EarlyResume = nil
	var res InputResult
	resume(r, Input{Kind: InResume, Pause: er.Pause, WebhookID: er.WebhookID, Patch: er.Patch}, e, &res)
	return nil
}

func next(outcome event.Outcome) func(*Record, Answer, Env) []Effect {
	return func(r *Record, a Answer, e Env) []Effect {
		_, wr, _ := r.Current()
		record(r, a, e)
		wr.Outcome = outcome
		moveNext(r)
		return nil
	}
}

func backoff(r *Record, a Answer, e Env) []Effect {
	record(r, a, e)
	at := e.Now.Add(a.RetryIn)
	r.RetryAt = &at
	return nil
}

func failRetriesUsed(r *Record, a Answer, e Env) []Effect {
	w, wr, _ := r.Current()
	record(r, a, e)
	wr.Outcome = event.OutcomeFailed
	fail(r, e.Now, w.Key, fmt.Sprintf("webhook %s failed after %d attempts: %s", w.Key, r.Attempts(), a.Reason))
	return nil
}

func failRefused(r *Record, a Answer, e Env) []Effect {
	w, wr, _ := r.Current()
	record(r, a, e)
	wr.Outcome = event.OutcomeFailed
	fail(r, e.Now, w.Key, fmt.Sprintf("webhook %s: %s", w.Key, a.Reason))
	return nil
}

func failNotMade(r *Record, a Answer, e Env) []Effect {
	w, wr, _ := r.Current()
	r.Claim = nil
	wr.Outcome = event.OutcomeFailed
	fail(r, e.Now, w.Key, a.Reason)
	return nil
}

func interrupted(r *Record, _ Answer, e Env) []Effect {
	_, wr, _ := r.Current()
	r.Claim = nil
	r.Interrupts++
	wr.Interrupted++
	r.UpdatedAt = e.Now
	return nil
}

func lastError(wr *event.WebhookRecord) string {
	if wr == nil || len(wr.Attempts) == 0 {
		return ""
	}
	a := wr.Attempts[len(wr.Attempts)-1]
	if a.Error != "" {
		return a.Error
	}
	return "status " + strconv.Itoa(a.Status)
}

// preWebhookKey returns the key of the pre-execution webhook with plan id id.
func preWebhookKey(r *Record, id string) string {
	for _, w := range r.Plan.Pre {
		if w.ID == id {
			return w.Key
		}
	}
	return ""
}
