package lifecycle

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testEnv() Env {
	return Env{Now: t0, Owner: "me", Cfg: Config{MaxAttempts: 3, MaxInterrupts: 2, ClaimTTL: 45 * time.Second,
		PauseTimeout: time.Hour, AwaitExecution: true, ExecutionTimeout: 10 * time.Minute, IdentityTTL: 24 * time.Hour}}
}

// testPlan has pre-execution webhooks a (one-way) and b (two-way), and post-execution c.
func testPlan() event.Plan {
	return event.Plan{PolicyKey: "p", Version: 1,
		Pre: []event.PlanWebhook{
			{ID: "wa", Key: "a", Direction: event.OneWay, ConnectionKey: "ca", Secrets: "s"},
			{ID: "wb", Key: "b", Direction: event.TwoWay, ConnectionKey: "cb", Secrets: "s"},
		},
		Post: []event.PlanWebhook{{ID: "wc", Key: "c", Direction: event.OneWay, ConnectionKey: "cc", Secrets: "s"}}}
}

// fresh returns a new request, in_processing at its first pre-execution webhook.
func fresh() *Record {
	p := testPlan()
	r := NewRecord(event.Submitted{ID: "pri_1", PolicyKey: "p"}, &p, testEnv())
	r.Outbox = nil
	return r
}

// at returns a fresh request moved to step at webhook next, in status.
func at(status event.Status, step event.Step, next int) *Record {
	r := fresh()
	r.Status, r.Step, r.Next = status, step, next
	return r
}

func ptime(t time.Time) *time.Time { return &t }

// approvalPlan is testPlan with a pre-approval stage of webhooks q (ID wq) and r (ID wr).
func approvalPlan() event.Plan {
	p := testPlan()
	p.PreApproval = &event.PreApproval{Webhooks: []event.PlanWebhook{
		{ID: "wq", Key: "q", Direction: event.TwoWay, ConnectionKey: "cq", Secrets: "s"},
		{ID: "wr", Key: "r", Direction: event.TwoWay, ConnectionKey: "cr", Secrets: "s"},
	}}
	return p
}

// awaitingApproval returns a new request of approvalPlan whose stage started (due in an hour) and
// whose first next webhooks were called.
func awaitingApproval(next int) *Record {
	p := approvalPlan()
	r := NewRecord(event.Submitted{ID: "pri_1", PolicyKey: "p"}, &p, testEnv())
	r.Outbox = nil
	r.ApprovalDue = ptime(t0.Add(time.Hour))
	r.Next = next
	for i := range next {
		r.Webhooks[3+i].Outcome = event.OutcomeSucceeded
	}
	return r
}

// replied sets the replies of the pre-approval webhooks (in order) of r.
func replied(r *Record, replies ...event.Reply) *Record {
	for i, rep := range replies {
		r.Webhooks[3+i].Reply = rep
	}
	return r
}

func paused() *Record {
	r := at(event.StatusPaused, event.StepPreWebhooks, 2)
	r.Pause, r.PausedWebhookID = 1, "wb"
	r.PausedAt, r.PauseExpiresAt = ptime(t0.Add(-time.Minute)), ptime(t0.Add(time.Hour))
	return r
}

func atExecution() *Record {
	r := at(event.StatusInProcessing, event.StepExecution, 0)
	r.ExecutionDeadline = ptime(t0.Add(time.Minute))
	return r
}

// unhealthy is a Health whose breaker of connection key is open until until (another request
// probing when probing).
type unhealthy struct {
	key     string
	until   time.Time
	probing bool
}

func (u unhealthy) Held(key string, _ time.Time) (time.Time, bool, bool) {
	if key != u.key {
		return time.Time{}, false, false
	}
	return u.until, u.probing, true
}

func TestDecisions(t *testing.T) {
	env := testEnv()
	held := env
	held.Cfg.BreakerMaxWait, held.Cfg.BreakerRecheck, held.Cfg.BreakerLook = time.Hour, time.Second, time.Minute
	held.Health = unhealthy{key: "ca", until: t0.Add(30 * time.Second)}
	probing := held
	probing.Health = unhealthy{key: "ca", until: t0.Add(45 * time.Second), probing: true}
	skip := env
	skip.Cfg.AwaitExecution = false
	forgot := env
	forgot.Forgot = true
	indexed := env
	indexed.Indexed = true
	tests := []struct {
		row  string
		rec  func() *Record
		env  Env
		want Decision
	}{
		{"N1", func() *Record {
			r := at(event.StatusPending, event.StepPreWebhooks, 0)
			r.Plan = event.Plan{}
			return r
		}, env,
			Decision{Action: Fail, Reason: "No Policy found for key p."}},
		{"N2", func() *Record { return at(event.StatusPending, event.StepPreWebhooks, 0) }, env, Decision{Action: StartProcessing}},
		{"W1", func() *Record { r := fresh(); r.IdentityPatches = []string{"x"}; return r }, env, Decision{Action: MergeIdentity}},
		{"W2", func() *Record { return at(event.StatusInProcessing, event.StepPostWebhooks, 1) }, env, Decision{Action: Complete}},
		{"W3", func() *Record { return at(event.StatusInProcessing, event.StepPreWebhooks, 2) }, env, Decision{Action: StartExecution}},
		{"W4", func() *Record { return at(event.StatusInProcessing, event.StepPreWebhooks, 2) }, skip, Decision{Action: EnterPost}},
		{"W5", func() *Record {
			r := fresh()
			r.Plan.Pre = append([]event.PlanWebhook(nil), r.Plan.Pre...)
			r.Plan.Pre[0].ConnectionDisabled = true
			return r
		}, env,
			Decision{Action: Skip}},
		{"W6", func() *Record { r := fresh(); r.Interrupts = 2; return r }, env,
			Decision{Action: Fail, WebhookKey: "a", Reason: "webhook a: the executor stopped during 2 calls of it in a row"}},
		{"W7", func() *Record { r := fresh(); ClaimCall(r, env); return r }, env, Decision{Action: Call}},
		{"W8", func() *Record { r := fresh(); o := env; o.Owner = "other"; ClaimCall(r, o); return r }, env,
			Decision{Action: Later, At: t0.Add(45 * time.Second)}},
		{"W9", func() *Record {
			r := fresh()
			o := env
			o.Owner, o.Now = "other", t0.Add(-time.Hour)
			ClaimCall(r, o)
			return r
		}, env,
			Decision{Action: TakeOver}},
		{"W10", func() *Record { r := fresh(); r.RetryAt = ptime(t0.Add(time.Second)); return r }, env,
			Decision{Action: Later, At: t0.Add(time.Second)}},
		{"W11", func() *Record {
			r := fresh()
			for range 3 {
				r.Webhooks[0].Attempts = append(r.Webhooks[0].Attempts, event.Attempt{WebhookID: r.CallID(), Status: 503})
			}
			return r
		}, env, Decision{Action: Fail, WebhookKey: "a", Reason: "webhook a failed after 3 attempts: status 503"}},
		{"W12", fresh, env, Decision{Action: Call}},
		{"WH1", func() *Record {
			r := fresh()
			r.Held = &event.Hold{ConnectionKey: "ca", Since: t0.Add(-time.Hour), Until: t0}
			return r
		}, held, Decision{Action: Fail, WebhookKey: "a", Reason: "webhook a: its connection ca was unhealthy for longer than 1h0m0s"}},
		{"WH2", fresh, held, Decision{Action: Hold, At: t0.Add(30 * time.Second), HeldUntil: t0.Add(30 * time.Second),
			Reason: "the probe: at its due time (and every few seconds, in case an operator closed the breaker), or soon after the probe in flight answers"}},
		{"X1", func() *Record { r := atExecution(); r.ExecutionDeadline = nil; return r }, env, Decision{Action: StartExecution}},
		{"X2", func() *Record {
			r := atExecution()
			r.Executed = &Executed{ExecutionID: r.ExecutionID(), Succeeded: true}
			return r
		}, env, Decision{Action: FinishExecution}},
		{"X3", func() *Record { r := atExecution(); r.ExecutionDeadline = ptime(t0); return r }, env,
			Decision{Action: Fail, Reason: "execution did not finish within 10m0s"}},
		{"X4", atExecution, env, Decision{Action: Wait, Reason: "the data layer's executed, or the execution timer at the deadline"}},
		{"P1", func() *Record { r := paused(); r.PauseExpiresAt = ptime(t0); return r }, env,
			Decision{Action: Fail, WebhookKey: "b", Reason: MsgNotResumed}},
		{"P2", paused, env, Decision{Action: Wait, Reason: "a resume, or the pause timer at the pause's due time"}},
		{"F1", func() *Record { return at(event.StatusComplete, event.StepPostWebhooks, 1) }, env, Decision{Action: ForgetIdentity}},
		{"C1", func() *Record { return at(event.StatusComplete, event.StepPostWebhooks, 1) }, forgot,
			Decision{Action: Wait, Reason: "nothing: the request is complete"}},
		{"E0", func() *Record { return at(event.StatusError, event.StepPreWebhooks, 0) }, env, Decision{Action: IndexError}},
		{"E1", func() *Record { return at(event.StatusError, event.StepPreWebhooks, 0) }, indexed, Decision{Action: Wait, Reason: "a retry"}},
		{"D1", func() *Record { return at(event.StatusDenied, event.StepPreApproval, 0) }, forgot,
			Decision{Action: Wait, Reason: "nothing: the request was denied"}},
		{"PA1", func() *Record { r := awaitingApproval(0); r.ApprovalDue = nil; return r }, env, Decision{Action: StartApproval}},
		{"PA2", func() *Record { r := awaitingApproval(1); r.Review = &Review{Approved: true}; return r }, env,
			Decision{Action: ApplyReview}},
		{"PA3", func() *Record {
			r := awaitingApproval(2)
			r.Webhooks[3].Outcome, r.Webhooks[4].Outcome = event.OutcomeSkipped, event.OutcomeSkipped
			return r
		}, env, Decision{Action: Wait, Reason: "an operator's approve or deny"}},
		{"PA4", func() *Record { return awaitingApproval(2) }, env, Decision{Action: Triggered}},
		{"PA5", func() *Record {
			r := replied(awaitingApproval(2), event.ReplyEligible, event.ReplyNotEligible)
			r.Triggered = true
			return r
		}, env, Decision{Action: NotEligible, WebhookKey: "r", Reason: "pre-approval webhook r replied not eligible"}},
		{"PA6", func() *Record {
			r := replied(awaitingApproval(2), event.ReplyEligible, event.ReplyEligible)
			r.Triggered = true
			return r
		}, env, Decision{Action: Approve}},
		{"PA7", func() *Record {
			r := replied(awaitingApproval(2), event.ReplyEligible)
			r.Triggered, r.ApprovalDue = true, ptime(t0)
			return r
		}, env, Decision{Action: NotEligible, Reason: MsgNotReplied + ": r"}},
		{"PA8", func() *Record {
			r := replied(awaitingApproval(2), event.ReplyEligible)
			r.Triggered = true
			return r
		}, env, Decision{Action: Wait, Reason: "the replies, or the approval timer at the due time"}},
		{"PN1", func() *Record {
			r := awaitingApproval(2)
			r.Status, r.Review = event.StatusPreApprovalNotEligible, &Review{}
			return r
		}, env, Decision{Action: ApplyReview}},
		{"PN2", func() *Record { r := awaitingApproval(2); r.Status = event.StatusPreApprovalNotEligible; return r }, env,
			Decision{Action: Wait, Reason: "an operator's approve or deny"}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.row, func(t *testing.T) {
			tt.want.Row = tt.row
			if got := Decide(tt.rec(), tt.env); got != tt.want {
				t.Errorf("Decide = %+v, want %+v", got, tt.want)
			}
		})
		seen[tt.row] = true
	}
	for _, row := range decisions {
		if !seen[row.id] {
			t.Errorf("decision row %s (%s) has no test", row.id, row.when)
		}
	}
}

// TestIdentityKeptUntil: a request that finishes records when its identity is gone, which is when
// it finished plus FINISHED_IDENTITY_RETENTION, never after the identity's own expiry; then the
// runner forgets it (F1), and a run that did waits (C1).
func TestIdentityKeptUntil(t *testing.T) {
	for _, tt := range []struct {
		name    string
		keep    time.Duration
		expires time.Time
		want    time.Time
	}{
		{"removed at once", 0, t0.Add(time.Hour), t0},
		{"kept a while", 10 * time.Minute, t0.Add(time.Hour), t0.Add(10 * time.Minute)},
		{"never past its expiry", 2 * time.Hour, t0.Add(time.Hour), t0.Add(time.Hour)},
		{"already expired", time.Minute, t0.Add(-time.Minute), t0.Add(-time.Minute)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := testEnv()
			env.Cfg.FinishedIdentityRetention = tt.keep
			r := at(event.StatusInProcessing, event.StepPostWebhooks, 1)
			r.Next = len(r.Plan.Post)
			r.IdentityExpiresAt = ptime(tt.expires)
			d, _, changed := Settle(r, env, true)
			if !changed || r.Status != event.StatusComplete || d.Action != ForgetIdentity || d.Row != "F1" {
				t.Fatalf("Settle: %+v, status %s; want complete, then F1", d, r.Status)
			}
			if got := r.IdentityKeptUntil(env.Cfg); !got.Equal(tt.want) || !r.IdentityExpiresAt.Equal(tt.want) {
				t.Errorf("IdentityKeptUntil %s, record's identity_expires_at %s; want %s", got, r.IdentityExpiresAt, tt.want)
			}
			env.Forgot = true
			if d := Decide(r, env); d.Row != "C1" {
				t.Errorf("after forgetting: %+v, want C1", d)
			}
		})
	}
}

// TestErrored: the entry of a request in errored_requests names its policy, its error count and
// when it failed, and, when a webhook failed it, that webhook, its connection and the HTTP status
// of its last attempt; the lifecycle indexes it once it is in error (E0).
func TestErrored(t *testing.T) {
	env := testEnv()
	r := at(event.StatusInProcessing, event.StepPostWebhooks, 0)
	status := 503
	r.Webhooks[2].Attempts = []event.Attempt{{Status: 500}, {Status: status}}
	ApplyAnswer(r, Answer{Verdict: Refused, Status: 400, Reason: "no"}, env) // the last attempt: 400
	if d, _, _ := Settle(r, env, true); d.Row != "E0" || r.Status != event.StatusError {
		t.Fatalf("after a refused answer: %+v, status %s; want error, then E0", d, r.Status)
	}
	want := event.Errored{ID: "pri_1", PolicyKey: "p", Step: event.StepPostWebhooks, WebhookKey: "c",
		ConnectionKey: r.Plan.Post[0].ConnectionKey, Status: 400, ErrorCount: 1, At: t0}
	if got := r.Errored(); got != want {
		t.Errorf("Errored() = %+v, want %+v", got, want)
	}
	// Failed by no webhook (the execution timed out): the step and the time only.
	x := at(event.StatusInProcessing, event.StepExecution, 0)
	x.ExecutionDeadline = ptime(t0)
	Settle(x, env, true)
	if got := x.Errored(); got.Step != event.StepExecution || got.WebhookKey != "" || got.ConnectionKey != "" || got.Status != 0 || got.ErrorCount != 1 {
		t.Errorf("Errored() of an execution timeout = %+v", got)
	}
}

// TestPauseDueByIdentity: a pause whose identity expires before its token fails with the
// identity's message (P1).
func TestPauseDueByIdentity(t *testing.T) {
	r := paused()
	r.IdentityExpiresAt = ptime(t0.Add(-time.Second))
	d := Decide(r, testEnv())
	if d.Action != Fail || d.Reason != MsgIdentityExpired {
		t.Fatalf("Decide = %+v, want fail: %s", d, MsgIdentityExpired)
	}
}

func TestInputs(t *testing.T) {
	env := testEnv()
	early := func() *Record { r := fresh(); r.Next = 1; return r } // awaiting b, the two-way call
	tests := []struct {
		row   string
		rec   func() *Record
		in    Input
		check func(t *testing.T, r *Record, res InputResult)
	}{
		{"I1", fresh, Input{Kind: InSubmitted}, unchanged},
		{"I2", paused, Input{Kind: InResume, Pause: 1, WebhookID: "wb", Patch: "p1"}, func(t *testing.T, r *Record, res InputResult) {
			if !res.Changed || r.Status != event.StatusInProcessing || r.PausedWebhookID != "" || r.PauseExpiresAt != nil ||
				!reflect.DeepEqual(r.IdentityPatches, []string{"p1"}) {
				t.Errorf("resumed record %+v", r)
			}
		}},
		{"I3", early, Input{Kind: InResume, Pause: 1, WebhookID: "wb", Patch: "p1"}, func(t *testing.T, r *Record, res InputResult) {
			if !res.Changed || r.Status != event.StatusInProcessing || *r.EarlyResume != (EarlyResume{Pause: 1, WebhookID: "wb", Patch: "p1"}) {
				t.Errorf("early resume: %+v", r.EarlyResume)
			}
		}},
		{"I4", func() *Record {
			r := at(event.StatusError, event.StepPreWebhooks, 1)
			r.ErrorCount = 1
			r.Run = 1
			return r
		},
			Input{Kind: InRetry, FromError: 1}, func(t *testing.T, r *Record, res InputResult) {
				if !res.Changed || r.Status != event.StatusInProcessing || r.Run != 2 || r.Next != 0 || r.Pause != 1 || r.Error != nil {
					t.Errorf("retried record: status %s run %d next %d pause %d error %v", r.Status, r.Run, r.Next, r.Pause, r.Error)
				}
			}},
		{"I5", atExecution, Input{Kind: InExecuted, ExecutionID: event.ExecutionID("pri_1", 1), Succeeded: true},
			func(t *testing.T, r *Record, res InputResult) {
				if !res.Changed || r.Executed == nil || !r.Executed.Succeeded {
					t.Errorf("executed not recorded: %+v", r.Executed)
				}
			}},
		{"I6", func() *Record {
			r := at(event.StatusInProcessing, event.StepPreWebhooks, 1)
			ClaimCall(r, env)
			return r
		}, Input{Kind: InExecuted, Succeeded: true},
			func(t *testing.T, r *Record, res InputResult) {
				if !res.Changed || r.Executed == nil || r.Executed.ExecutionID != event.ExecutionID("pri_1", 1) {
					t.Errorf("early executed not recorded for run 1: %+v", r.Executed)
				}
			}},
		{"I7", paused, Input{Kind: InPauseTimer, Pause: 1}, func(t *testing.T, r *Record, res InputResult) {
			if res.Changed || !res.Keep.Equal(t0.Add(time.Hour)) {
				t.Errorf("early pause timer: %+v, want kept until the pause is due", res)
			}
		}},
		{"I8", atExecution, Input{Kind: InExecutionTimer, Run: 1}, func(t *testing.T, r *Record, res InputResult) {
			if res.Changed || !res.Keep.Equal(t0.Add(time.Minute)) {
				t.Errorf("early execution timer: %+v, want kept until the deadline", res)
			}
		}},
		{"I9", paused, Input{Kind: InResume, Pause: 0, WebhookID: "wb"}, unchanged},
		{"I10", func() *Record { return awaitingApproval(1) }, Input{Kind: InReply, WebhookID: "wr", Run: 1, Eligible: true},
			func(t *testing.T, r *Record, res InputResult) {
				if !res.Changed || r.Webhooks[4].Reply != event.ReplyEligible || r.Webhooks[3].Reply != "" {
					t.Errorf("reply not recorded on r alone: q %q r %q", r.Webhooks[3].Reply, r.Webhooks[4].Reply)
				}
			}},
		{"I11", func() *Record { return awaitingApproval(2) }, Input{Kind: InReview, Reason: "no"},
			func(t *testing.T, r *Record, res InputResult) {
				if !res.Changed || r.Review == nil || r.Review.Approved || r.Review.Reason != "no" {
					t.Errorf("review not recorded: %+v", r.Review)
				}
			}},
		{"I12", func() *Record { return awaitingApproval(2) }, Input{Kind: InApprovalTimer, Run: 1},
			func(t *testing.T, r *Record, res InputResult) {
				if res.Changed || !res.Keep.Equal(t0.Add(time.Hour)) {
					t.Errorf("early approval timer: %+v, want kept until the due time", res)
				}
			}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.row, func(t *testing.T) {
			r := tt.rec()
			res := ApplyInput(r, tt.in, env)
			if res.Row != tt.row {
				t.Fatalf("row %s, want %s", res.Row, tt.row)
			}
			tt.check(t, r, res)
		})
		seen[tt.row] = true
	}
	for _, row := range inputs {
		if !seen[row.id] {
			t.Errorf("input row %s (%s) has no test", row.id, row.when)
		}
	}
}

func unchanged(t *testing.T, _ *Record, res InputResult) {
	t.Helper()
	if res.Changed || !res.Keep.IsZero() {
		t.Errorf("result %+v, want nothing recorded and nothing kept", res)
	}
}

func TestAnswers(t *testing.T) {
	env := testEnv()
	claimed := func(next int) func() *Record {
		return func() *Record { r := fresh(); r.Next = next; ClaimCall(r, env); return r }
	}
	tests := []struct {
		row   string
		rec   func() *Record
		a     Answer
		check func(t *testing.T, r *Record, fx []Effect)
	}{
		{"A1", func() *Record {
			r := claimed(1)()
			r.EarlyResume = &EarlyResume{Pause: 1, WebhookID: "wb", Patch: "p9"}
			return r
		}, Answer{Verdict: Done, Halt: true, Status: 200}, func(t *testing.T, r *Record, fx []Effect) {
			if r.Status != event.StatusInProcessing || r.Pause != 1 || r.EarlyResume != nil || len(fx) != 0 ||
				!reflect.DeepEqual(r.IdentityPatches, []string{"p9"}) || events(r) != "paused,in_processing" {
				t.Errorf("halt with early resume: status %s pause %d events %s patches %v effects %v", r.Status, r.Pause, events(r), r.IdentityPatches, fx)
			}
		}},
		{"A2", claimed(1), Answer{Verdict: Done, Halt: true, Status: 200, At: t0}, func(t *testing.T, r *Record, fx []Effect) {
			want := []Effect{{Timer: &Timer{Kind: TimerPause, Pause: 1, Due: t0.Add(time.Hour)}}}
			if r.Status != event.StatusPaused || r.PausedWebhookID != "wb" || r.Next != 2 || !reflect.DeepEqual(fx, want) ||
				r.Webhooks[1].Outcome != event.OutcomeHalted {
				t.Errorf("halt: status %s paused %q next %d effects %+v", r.Status, r.PausedWebhookID, r.Next, fx)
			}
		}},
		{"A3", claimed(0), Answer{Verdict: Done, Status: 200}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Next != 1 || r.Claim != nil || r.Webhooks[0].Outcome != event.OutcomeSucceeded || len(r.Webhooks[0].Attempts) != 1 {
				t.Errorf("done: next %d claim %v outcome %s attempts %d", r.Next, r.Claim, r.Webhooks[0].Outcome, len(r.Webhooks[0].Attempts))
			}
		}},
		{"A4", claimed(0), Answer{Verdict: Ignored, Status: 404, Reason: "webhook answered 404"}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Next != 1 || r.Webhooks[0].Outcome != event.OutcomeIgnoredStatus || r.Webhooks[0].Attempts[0].Error == "" {
				t.Errorf("ignored: next %d outcome %s", r.Next, r.Webhooks[0].Outcome)
			}
		}},
		{"A5", claimed(0), Answer{Verdict: Retry, Status: 503, RetryIn: time.Second}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Next != 0 || r.RetryAt == nil || !r.RetryAt.Equal(t0.Add(time.Second)) || r.Claim != nil {
				t.Errorf("retry: next %d retry_at %v", r.Next, r.RetryAt)
			}
		}},
		{"A6", func() *Record {
			r := claimed(0)()
			for range 2 {
				r.Webhooks[0].Attempts = append(r.Webhooks[0].Attempts, event.Attempt{WebhookID: r.CallID(), Status: 503})
			}
			return r
		}, Answer{Verdict: Retry, Status: 503, Reason: "webhook answered 503"}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Status != event.StatusError || r.Error.Message != "webhook a failed after 3 attempts: webhook answered 503" ||
				r.Webhooks[0].Outcome != event.OutcomeFailed {
				t.Errorf("retries used: status %s error %+v", r.Status, r.Error)
			}
		}},
		{"A7", claimed(1), Answer{Verdict: Refused, Status: 400, Reason: "two-way webhook answered 400"}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Status != event.StatusError || r.Error.WebhookKey != "b" || r.Error.Message != "webhook b: two-way webhook answered 400" {
				t.Errorf("refused: %+v", r.Error)
			}
		}},
		{"A8", claimed(0), Answer{Verdict: NotMade, Reason: MsgIdentityExpired}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Status != event.StatusError || len(r.Webhooks[0].Attempts) != 0 || r.Error.Message != MsgIdentityExpired {
				t.Errorf("not made: status %s attempts %d error %+v", r.Status, len(r.Webhooks[0].Attempts), r.Error)
			}
		}},
		{"A10", func() *Record { r := awaitingApproval(0); ClaimCall(r, env); return r },
			Answer{Verdict: Ignored, Status: 404, Reason: "webhook answered 404"}, func(t *testing.T, r *Record, _ []Effect) {
				if r.Status != event.StatusError || r.Error.Step != event.StepPreApproval || r.Error.WebhookKey != "q" ||
					r.Webhooks[3].Outcome != event.OutcomeFailed || r.ApprovalDue != nil {
					t.Errorf("refused pre-approval call: status %s error %+v outcome %s", r.Status, r.Error, r.Webhooks[3].Outcome)
				}
			}},
		{"A9", claimed(0), Answer{Verdict: Interrupted}, func(t *testing.T, r *Record, _ []Effect) {
			if r.Claim != nil || r.Interrupts != 1 || r.Webhooks[0].Interrupted != 1 || len(r.Webhooks[0].Attempts) != 0 ||
				r.Status != event.StatusInProcessing {
				t.Errorf("interrupted: claim %v interrupts %d attempts %d", r.Claim, r.Interrupts, len(r.Webhooks[0].Attempts))
			}
		}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.row, func(t *testing.T) {
			r := tt.rec()
			r.Outbox = nil
			row, fx := ApplyAnswer(r, tt.a, env)
			if row != tt.row {
				t.Fatalf("row %s, want %s", row, tt.row)
			}
			tt.check(t, r, fx)
		})
		seen[tt.row] = true
	}
	for _, row := range answers {
		if !seen[row.id] {
			t.Errorf("answer row %s (%s) has no test", row.id, row.when)
		}
	}
}

func events(r *Record) string {
	var out []string
	for _, p := range r.Outbox {
		out = append(out, string(p.Event.Status))
	}
	return strings.Join(out, ",")
}

// states returns a record in every status and step the lifecycle writes, in variants: claims
// (mine, another's live, another's expired), backoffs, patches, early resumes and answers.
func states() map[string]*Record {
	env := testEnv()
	other := env
	other.Owner = "other"
	stale := other
	stale.Now = t0.Add(-time.Hour)
	out := map[string]*Record{}
	for _, next := range []int{0, 1, 2} {
		base := func() *Record { r := fresh(); r.Next = next; return r }
		name := "pre" + string(rune('0'+next))
		out[name] = base()
		if next < 2 {
			r := base()
			ClaimCall(r, env)
			out[name+" mine"] = r
			r = base()
			ClaimCall(r, other)
			out[name+" claimed"] = r
			r = base()
			ClaimCall(r, stale)
			out[name+" expired claim"] = r
			r = base()
			r.RetryAt = ptime(t0.Add(time.Second))
			out[name+" backoff"] = r
		}
		r := base()
		r.IdentityPatches = []string{"x"}
		out[name+" patches"] = r
	}
	r := fresh()
	r.Next = 1
	r.EarlyResume = &EarlyResume{Pause: 1, WebhookID: "wb"}
	out["pre1 early resume"] = r
	out["execution"] = atExecution()
	r = atExecution()
	r.ExecutionDeadline = nil
	out["execution not started"] = r
	r = atExecution()
	r.Executed = &Executed{ExecutionID: r.ExecutionID(), Succeeded: true}
	out["execution answered"] = r
	r = atExecution()
	r.ExecutionDeadline = ptime(t0.Add(-time.Second))
	out["execution late"] = r
	r = at(event.StatusInProcessing, event.StepPreWebhooks, 2)
	r.Executed = &Executed{ExecutionID: r.ExecutionID(), Succeeded: false, Error: "boom"}
	out["pre done executed early"] = r
	out["paused"] = paused()
	r = paused()
	r.PauseExpiresAt = ptime(t0)
	out["paused due"] = r
	for _, next := range []int{0, 1} {
		out["post"+string(rune('0'+next))] = at(event.StatusInProcessing, event.StepPostWebhooks, next)
	}
	out["complete"] = at(event.StatusComplete, event.StepPostWebhooks, 1)
	r = awaitingApproval(0)
	r.ApprovalDue = nil
	out["approval not started"] = r
	for _, next := range []int{0, 1, 2} {
		name := "approval" + string(rune('0'+next))
		out[name] = awaitingApproval(next)
		if next < 2 {
			r := awaitingApproval(next)
			ClaimCall(r, other)
			out[name+" claimed"] = r
			r = awaitingApproval(next)
			r.RetryAt = ptime(t0.Add(time.Second))
			out[name+" backoff"] = r
		}
	}
	out["approval one eligible"] = replied(awaitingApproval(2), event.ReplyEligible)
	out["approval one early reply"] = replied(awaitingApproval(1), "", event.ReplyEligible)
	r = replied(awaitingApproval(2), event.ReplyEligible)
	r.Triggered, r.ApprovalDue = true, ptime(t0)
	out["approval due"] = r
	r = awaitingApproval(2)
	r.Status = event.StatusPreApprovalNotEligible
	out["not eligible"] = r
	out["denied"] = at(event.StatusDenied, event.StepPreApproval, 0)
	for _, step := range []event.Step{event.StepPreApproval, event.StepPreWebhooks, event.StepExecution, event.StepPostWebhooks} {
		r := at(event.StatusError, step, 0)
		r.ErrorCount = 1
		out["error at "+string(step)] = r
	}
	return out
}

// allInputs returns every input, with parameters that match some state and some that match none.
func allInputs() map[string]Input {
	p := testPlan()
	out := map[string]Input{
		"submitted": {Kind: InSubmitted},
		"retry 0":   {Kind: InRetry, FromError: 0}, "retry 1": {Kind: InRetry, FromError: 1},
		"retry 1 with plan": {Kind: InRetry, FromError: 1, Plan: &p},
		"executed run 1":    {Kind: InExecuted, ExecutionID: event.ExecutionID("pri_1", 1), Succeeded: true},
		"executed run 2":    {Kind: InExecuted, ExecutionID: event.ExecutionID("pri_1", 2), Succeeded: true},
		"executed no id":    {Kind: InExecuted, Succeeded: false, Error: "failed"},
		"pause timer 1":     {Kind: InPauseTimer, Pause: 1}, "pause timer 2": {Kind: InPauseTimer, Pause: 2},
		"execution timer 1": {Kind: InExecutionTimer, Run: 1}, "execution timer 2": {Kind: InExecutionTimer, Run: 2},
		"approval timer 1": {Kind: InApprovalTimer, Run: 1}, "approval timer 2": {Kind: InApprovalTimer, Run: 2},
		"approve": {Kind: InReview, Approved: true}, "deny": {Kind: InReview, Reason: "no"},
	}
	for _, run := range []int{1, 2} {
		for _, w := range []string{"wq", "wr", "wa"} {
			for _, ok := range []bool{true, false} {
				out[fmt.Sprintf("reply %s run %d eligible %v", w, run, ok)] = Input{Kind: InReply, WebhookID: w, Run: run, Eligible: ok}
			}
		}
	}
	for _, pause := range []int{0, 1, 2} {
		for _, w := range []string{"wa", "wb"} {
			out["resume "+w+" "+string(rune('0'+pause))] = Input{Kind: InResume, Pause: pause, WebhookID: w, Patch: "p"}
		}
	}
	return out
}

// TestEveryInputInEveryState applies every input (matching, stale and duplicated) to every state
// and checks what must hold whatever the order: an input that records nothing changes nothing; the
// same input twice records once; after any input the request's next decision never strands it (it
// waits only where an outside party or a timer is due to act); and settling never loops.
func TestEveryInputInEveryState(t *testing.T) {
	env := testEnv()
	for sname, base := range states() {
		for iname, in := range allInputs() {
			r := clone(t, base)
			before := clone(t, r)
			res := ApplyInput(r, in, env)
			if !res.Changed && !reflect.DeepEqual(r, before) {
				t.Errorf("%s + %s: row %s changed the record but did not say so", sname, iname, res.Row)
			}
			if res.Changed {
				again := ApplyInput(r, in, env)
				if again.Changed {
					t.Errorf("%s + %s twice: the duplicate recorded again (rows %s, %s)", sname, iname, res.Row, again.Row)
				}
			}
			d, _, _ := Settle(r, env, true)
			checkNotStranded(t, sname+" + "+iname, r, d)
		}
	}
}

// TestApprovalStage walks the pre-approval stage through its transitions: the start schedules the
// approval timer at the due time, each webhook is called, the audit event follows the last call,
// the replies approve the request (or one not eligible sends it to review, where a denial ends it),
// and a retry from an error in the stage starts it again in a new run.
func TestApprovalStage(t *testing.T) {
	env := testEnv()
	p := approvalPlan()
	r := NewRecord(event.Submitted{ID: "pri_1", PolicyKey: "p"}, &p, env)
	if r.Status != event.StatusAwaitingPreApproval || r.Step != event.StepPreApproval || len(r.Webhooks) != 5 ||
		r.Webhooks[3].CallbackType != event.PreApprovalCallback || r.StartedProcessingAt != nil {
		t.Fatalf("new record: status %s step %s webhooks %d", r.Status, r.Step, len(r.Webhooks))
	}
	r.IdentityExpiresAt = ptime(t0.Add(30 * time.Minute)) // before PauseTimeout: the due time follows it
	d, fx, _ := Settle(r, env, true)
	want := []Effect{{Timer: &Timer{Kind: TimerApproval, Run: 1, Due: t0.Add(30 * time.Minute)}}}
	if d.Action != Call || d.Row != "W12" || !reflect.DeepEqual(fx, want) || !r.ApprovalDue.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("start: decision %+v effects %+v due %v", d, fx, r.ApprovalDue)
	}
	if id := r.CallID(); id != event.WebhookID("pri_1", event.PreApprovalCallback, "wq", 1) {
		t.Fatalf("call id %s is not the pre-approval webhook-id of q in run 1", id)
	}
	for range 2 {
		ClaimCall(r, env)
		ApplyAnswer(r, Answer{Verdict: Done, Status: 200}, env)
	}
	r.Outbox = nil
	d, _, _ = Settle(r, env, true)
	if d.Row != "PA8" || len(r.Outbox) != 1 || r.Outbox[0].Event.Action != event.ActionPreApprovalTriggered ||
		r.Outbox[0].Event.Status != event.StatusAwaitingPreApproval {
		t.Fatalf("after the calls: decision %+v outbox %+v", d, r.Outbox)
	}

	t.Run("approved by the replies", func(t *testing.T) {
		r := clone(t, r)
		r.Outbox = nil
		ApplyInput(r, Input{Kind: InReply, WebhookID: "wr", Run: 1, Eligible: true}, env)
		ApplyInput(r, Input{Kind: InReply, WebhookID: "wq", Run: 1, Eligible: true}, env)
		d, fx, _ := Settle(r, env, true)
		if d.Action != Call || r.Status != event.StatusInProcessing || r.Step != event.StepPreWebhooks || r.Next != 0 ||
			r.StartedProcessingAt == nil || r.ApprovalDue != nil || len(fx) != 0 ||
			len(r.Outbox) != 1 || r.Outbox[0].Event.Action != event.ActionPreApprovalEligible {
			t.Fatalf("approved: decision %+v status %s step %s outbox %+v", d, r.Status, r.Step, r.Outbox)
		}
	})
	t.Run("not eligible, then denied", func(t *testing.T) {
		r := clone(t, r)
		r.Outbox = nil
		ApplyInput(r, Input{Kind: InReply, WebhookID: "wq", Run: 1, Eligible: false}, env)
		d, _, _ := Settle(r, env, true)
		if d.Row != "PN2" || r.Status != event.StatusPreApprovalNotEligible || r.Outbox[0].Event.WebhookKey != "q" ||
			r.Outbox[0].Event.Action != event.ActionPreApprovalNotEligible {
			t.Fatalf("not eligible: decision %+v status %s outbox %+v", d, r.Status, r.Outbox)
		}
		if res := ApplyInput(r, Input{Kind: InReply, WebhookID: "wr", Run: 1, Eligible: true}, env); res.Changed {
			t.Errorf("a reply after the stage ended was recorded (row %s)", res.Row)
		}
		r.Outbox = nil
		ApplyInput(r, Input{Kind: InReview, Reason: "duplicate request"}, env)
		d, _, _ = Settle(r, env, true)
		if d.Row != "F1" || r.Status != event.StatusDenied || r.DenyReason != "duplicate request" || r.FinishedProcessingAt == nil ||
			r.Outbox[0].Event.Action != event.ActionDenied || !r.IdentityExpiresAt.Equal(*r.FinishedProcessingAt) {
			t.Fatalf("denied: decision %+v status %s reason %q outbox %+v", d, r.Status, r.DenyReason, r.Outbox)
		}
	})
	t.Run("retried after an error in the stage", func(t *testing.T) {
		r := clone(t, r)
		replied(r, event.ReplyEligible)
		fail(r, t0, "r", "boom")
		ApplyInput(r, Input{Kind: InRetry, FromError: 1}, env)
		if r.Status != event.StatusAwaitingPreApproval || r.Run != 2 || r.Next != 0 || r.ApprovalDue != nil ||
			r.Triggered || r.Webhooks[3].Reply != "" || r.StartedProcessingAt != nil {
			t.Fatalf("retried: status %s run %d next %d due %v reply %q", r.Status, r.Run, r.Next, r.ApprovalDue, r.Webhooks[3].Reply)
		}
		if res := ApplyInput(r, Input{Kind: InReply, WebhookID: "wq", Run: 1, Eligible: true}, env); res.Changed {
			t.Errorf("a reply of the first run was recorded in the second (row %s)", res.Row)
		}
		if d, fx, _ := Settle(r, env, true); d.Action != Call || len(fx) != 1 || fx[0].Timer.Run != 2 {
			t.Fatalf("retried stage: decision %+v effects %+v", d, fx)
		}
	})
}

// checkNotStranded fails when a request is left waiting with nobody due to act: Wait is for
// paused (a resume, or its timer), execution (the data layer, or its timer), complete and error
// (a retry) only.
func checkNotStranded(t *testing.T, what string, r *Record, d Decision) {
	t.Helper()
	switch d.Action {
	case Wait:
		ok := r.Status == event.StatusPaused && r.PauseExpiresAt != nil ||
			r.Status == event.StatusInProcessing && r.Step == event.StepExecution && r.ExecutionDeadline != nil ||
			r.Status == event.StatusAwaitingPreApproval && r.ApprovalDue != nil ||
			r.Status == event.StatusPreApprovalNotEligible || // an operator's review
			r.Status == event.StatusComplete || r.Status == event.StatusDenied || r.Status == event.StatusError
		if !ok {
			t.Errorf("%s: waits (row %s) in %s at %s with nothing due to act", what, d.Row, r.Status, r.Step)
		}
	case Later:
		if !d.At.After(testEnv().Now) {
			t.Errorf("%s: later at %s, not after now", what, d.At)
		}
	}
}

func clone(t *testing.T, r *Record) *Record {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var c Record
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

var update = flag.Bool("update", false, "write the lifecycle tables into docs/ARCHITECTURE.md")

// TestArchitectureShowsTheTables keeps docs/ARCHITECTURE.md equal to the code's tables; -update
// writes them there.
func TestArchitectureShowsTheTables(t *testing.T) {
	const path = "../../../../docs/ARCHITECTURE.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- lifecycle tables: begin -->\n", "<!-- lifecycle tables: end -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/ARCHITECTURE.md has no %q ... %q section", strings.TrimSpace(begin), end)
	}
	if *update {
		doc = doc[:i+len(begin)] + Markdown() + doc[j:]
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got, want := doc[i+len(begin):j], Markdown(); got != want {
		t.Errorf("docs/ARCHITECTURE.md shows other lifecycle tables than the code (go test -run TestArchitectureShowsTheTables -update writes them):\n%s", want)
	}
}

// TestHold: a request whose connection's breaker is open holds until the probe (looking again a
// second on while another request probes), records since when it waits on that connection, keeps
// that time while it waits, fails only once CIRCUIT_BREAKER_MAX_WAIT passed, and calls as soon
// as the breaker lets it; a call claimed clears the hold.
func TestHold(t *testing.T) {
	env := testEnv()
	env.Cfg.BreakerMaxWait, env.Cfg.BreakerRecheck = time.Hour, time.Second
	env.Health = unhealthy{key: "ca", until: t0.Add(30 * time.Second)}
	r := fresh()
	d := Decide(r, env)
	if d.Row != "WH2" || !HoldCall(r, d, env) {
		t.Fatalf("Decide = %+v, want WH2 recording a hold", d)
	}
	if h := r.Held; h == nil || h.ConnectionKey != "ca" || !h.Since.Equal(t0) || !h.Until.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("held %+v", r.Held)
	}
	if HoldCall(r, d, env) {
		t.Fatal("the same hold again changed the record (one write per probe time, not per look)")
	}

	later := env
	later.Now = t0.Add(59 * time.Minute)
	later.Health = unhealthy{key: "ca", until: t0.Add(61 * time.Minute), probing: true}
	d = Decide(r, later)
	if d.Row != "WH2" || !d.At.Equal(later.Now.Add(time.Second)) || !d.HeldUntil.Equal(t0.Add(61*time.Minute)) {
		t.Fatalf("while another request probes: %+v, want WH2 looking again in 1s", d)
	}
	if !HoldCall(r, d, later) || !r.Held.Since.Equal(t0) {
		t.Fatalf("a later hold on the same connection lost its start: %+v", r.Held)
	}

	later.Now = t0.Add(time.Hour)
	if d = Decide(r, later); d.Row != "WH1" {
		t.Fatalf("after CIRCUIT_BREAKER_MAX_WAIT: %+v, want WH1", d)
	}
	healthy := env
	healthy.Health = unhealthy{key: "other"}
	if d = Decide(r, healthy); d.Row != "W12" {
		t.Fatalf("breaker closed: %+v, want W12", d)
	}
	ClaimCall(r, healthy)
	if r.Held != nil {
		t.Fatalf("a claimed call left the hold %+v", r.Held)
	}
	off := env
	off.Cfg.BreakerMaxWait = 0
	r.Claim = nil
	r.Held = &event.Hold{ConnectionKey: "ca", Since: t0.Add(-1000 * time.Hour)}
	if d = Decide(r, off); d.Row != "WH2" {
		t.Fatalf("no CIRCUIT_BREAKER_MAX_WAIT: %+v, want WH2 (no bound)", d)
	}
}

// TestHoldLooksAgain: a request held until a probe far ahead still looks at the breaker every
// BreakerLook (an operator may close it), and every BreakerRecheck while another request probes.
func TestHoldLooksAgain(t *testing.T) {
	env := testEnv()
	env.Cfg.BreakerRecheck, env.Cfg.BreakerLook = time.Second, 5*time.Second
	env.Health = unhealthy{key: "ca", until: t0.Add(time.Hour)}
	if d := Decide(fresh(), env); d.Row != "WH2" || !d.At.Equal(t0.Add(5*time.Second)) || !d.HeldUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("far probe: %+v, want a look in 5s, held until the probe", d)
	}
	env.Health = unhealthy{key: "ca", until: t0.Add(2 * time.Second)}
	if d := Decide(fresh(), env); !d.At.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("near probe: %+v, want a look at the probe", d)
	}
	env.Health = unhealthy{key: "ca", until: t0.Add(time.Minute), probing: true}
	if d := Decide(fresh(), env); !d.At.Equal(t0.Add(time.Second)) {
		t.Fatalf("probe in flight: %+v, want a look in 1s", d)
	}
}
