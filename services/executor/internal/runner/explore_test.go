package runner_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/event"
)

// TestExplore walks every schedule of a small request that deviates from the plain one in at most
// a few moves — a thread overtaken by another, a message delivered while another is handled (a
// duplicate or redelivery racing the original), time passing at any point (claims, backoffs and
// pauses expiring mid-flight), a worker crashed between any two of its operations, the submission
// published twice — and checks every schedule end to end: the request completes, nothing is ever
// left without a message that will drive it, webhooks are called in order with the identity they
// should see, repeats of a call carry its webhook-id, every recorded attempt was a call a receiver
// saw, exactly one complete event is published, and the data layer runs each execution once.
//
// EXPLORE_DEVIATIONS sets the bound: 2 by default (1 under the race detector; make test runs the
// explorer again without it), 3 in make chaos.
func TestExplore(t *testing.T) {
	bound := 2
	if raceEnabled {
		bound = 1
	}
	if v, err := strconv.Atoi(os.Getenv("EXPLORE_DEVIATIONS")); err == nil {
		bound = v
	}
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			n, worst := explore(t, sc, bound)
			t.Logf("%d schedules with up to %d deviations; longest %d moves", n, bound, worst)
		})
	}
}

// scenario is a small request: its plan, how receivers answer, and the lifecycle settings.
type scenario struct {
	name   string
	plan   event.Plan
	script receiverScript
	cfg    lifecycle.Config
	lateBy time.Duration // when the receiver posts its token after answering (0: at once)
	// dataDelay is how long the data layer takes to answer execute.
	dataDelay time.Duration
	resumeID  *event.Identity // the resume's derived identity
	// notEligible is the pre-approval webhook that replies not eligible; reviewAfter is when an
	// operator approves a request that went pre_approval_not_eligible.
	notEligible  string
	reviewAfter  time.Duration
	approveEarly bool // an operator approves at once, racing the stage's calls and replies
	deny         bool // the operator denies instead
	// breakers are the circuit breakers' settings (zero: off).
	breakers breaker.Config
	crashes  int // crash budget per schedule
	dups     int // duplicate submissions per schedule
	// check is the end-to-end check of a finished schedule; nil: the request completes with
	// everything world.check asserts.
	check func(w *world) string
}

func strp(s string) *string { return &s }

// deriving answers b with a derived identity and no halt.
func deriving(key string, _ int) (int, string) {
	if key == "b" {
		return 200, `{"derived_identity": {"phone_number": "555"}}`
	}
	return 200, ""
}

func scenarios() []scenario {
	cfg := lifecycle.Config{MaxAttempts: 3, ClaimTTL: 45 * time.Second, PauseTimeout: time.Hour, AwaitExecution: true,
		ExecutionTimeout: time.Hour, IdentityTTL: 24 * time.Hour}
	plan := event.Plan{PolicyKey: "p", Version: 1,
		Pre: []event.PlanWebhook{
			{ID: "wa", Key: "a", Direction: event.OneWay, ConnectionKey: "c"},
			{ID: "wb", Key: "b", Direction: event.TwoWay, ConnectionKey: "c"},
		},
		Post: []event.PlanWebhook{{ID: "wc", Key: "c", Direction: event.OneWay, ConnectionKey: "c"}}}
	halting := func(key string, n int) (int, string) {
		switch {
		case key == "a" && n == 0:
			return 503, ""
		case key == "b":
			return 200, `{"halt": true, "derived_identity": {"phone_number": "555"}}`
		}
		return 200, ""
	}
	skip := cfg
	skip.AwaitExecution = false
	withDisabled := plan
	withDisabled.Pre = append(append([]event.PlanWebhook(nil), plan.Pre...),
		event.PlanWebhook{ID: "wd", Key: "d", Direction: event.OneWay, ConnectionKey: "c", ConnectionDisabled: true})
	shortPause := cfg
	shortPause.PauseTimeout = 2 * time.Second
	approval := plan
	approval.PreApproval = &event.PreApproval{Webhooks: []event.PlanWebhook{
		{ID: "wq", Key: "q", Direction: event.TwoWay, ConnectionKey: "c"},
		{ID: "wr", Key: "r", Direction: event.TwoWay, ConnectionKey: "c"},
	}}
	// breakerPlan is plan with a on a connection of its own (the breaker its failure opens holds
	// only a).
	breakerPlan := plan
	breakerPlan.Pre = append([]event.PlanWebhook(nil), plan.Pre...)
	breakerPlan.Pre[0].ConnectionKey = "ca"
	return []scenario{
		{name: "halt and resume at once, await", plan: plan, script: halting, cfg: cfg, resumeID: &event.Identity{Email: strp("resumed@example.com")}, crashes: 1, dups: 1},
		{name: "halt and resume later, await", plan: plan, script: halting, cfg: cfg, lateBy: 2 * time.Second, crashes: 1},
		{name: "derive without halting, skip", plan: plan, cfg: skip, crashes: 1, dups: 1, script: deriving},
		{name: "derive without halting, then a disabled webhook, await", plan: withDisabled, cfg: cfg, crashes: 1, dups: 1, script: deriving},
		{name: "resume races the pause expiry (D22)", plan: plan, script: halting, cfg: shortPause, lateBy: 2 * time.Second,
			resumeID: &event.Identity{Email: strp("resumed@example.com")}, crashes: 1, check: resumeOrExpiry},
		{name: "pre-approval, every webhook eligible at once, skip", plan: approval, cfg: skip, script: deriving, crashes: 1, dups: 1},
		{name: "pre-approval, r not eligible later, then approved, skip", plan: approval, cfg: skip, script: deriving,
			lateBy: 2 * time.Second, notEligible: "r", reviewAfter: 3 * time.Second, crashes: 1},
		{name: "pre-approval, an operator approves while the calls and replies run, skip", plan: approval, cfg: skip,
			script: deriving, approveEarly: true, crashes: 1, dups: 1},
		{name: "pre-approval, r not eligible, then denied", plan: approval, cfg: cfg, script: deriving,
			notEligible: "r", reviewAfter: time.Second, deny: true, crashes: 1, dups: 1, check: deniedForgotten},
		{name: "complete, the identity kept a while, skip", plan: plan, cfg: func() lifecycle.Config { c := skip; c.FinishedIdentityRetention = time.Hour; return c }(),
			script: deriving, crashes: 1, dups: 1, check: identityKept},
		{name: "a's failure opens its connection's breaker, the request waits for the probe, await", plan: breakerPlan, script: halting,
			cfg: func() lifecycle.Config {
				c := cfg
				c.BreakerRecheck, c.BreakerLook = time.Second, 5*time.Second
				return c
			}(),
			breakers: breaker.Config{Failures: 1, Cooldown: 2 * time.Second, ProbeTTL: 45 * time.Second, Recheck: time.Second},
			resumeID: &event.Identity{Email: strp("resumed@example.com")}, crashes: 1, dups: 1, check: heldThenProbed},
		{name: "pre-approval replies race the due time, skip", plan: approval, cfg: func() lifecycle.Config { c := skip; c.PauseTimeout = 2 * time.Second; return c }(),
			script: deriving, lateBy: 2 * time.Second, reviewAfter: time.Second, crashes: 1},
	}
}

// heldThenProbed checks a request whose first call of a failed and opened a's connection's
// breaker (threshold 1, cool-down 2 s): it completes as world.check asserts, a was called again
// only by the probe, after the cool-down, and the breaker ends closed; unless a crash between the
// failed call and its record kept the failure from being counted.
func heldThenProbed(w *world) string {
	var at []time.Time
	for _, c := range w.calls {
		if c.key == "a" {
			at = append(at, c.at)
		}
	}
	h := w.health["ca"]
	switch {
	case h.Seq == 0 && len(at) >= 2:
		// A crash between the failed call and its record: the failure was not counted (the
		// breaker is advice), and the request went on as without breakers.
	case len(at) < 2:
		return fmt.Sprintf("a called %d times, want the failure and the probe", len(at))
	case at[1].Before(at[0].Add(2 * time.Second)):
		return fmt.Sprintf("a called again %s after the failure that opened its breaker, inside the 2 s cool-down", at[1].Sub(at[0]))
	case h.State != event.BreakerClosed:
		return fmt.Sprintf("the breaker ended %s, want closed by the probe", h.State)
	}
	if rec := w.record(); rec != nil && rec.Held != nil {
		return fmt.Sprintf("the request ended still holding %+v", rec.Held)
	}
	return w.check()
}

// deniedForgotten checks a request that an operator denied after a webhook replied not eligible:
// denied once, no pre- or post-execution webhook called, the data layer never reached, and its
// identity gone.
func deniedForgotten(w *world) string {
	rec := w.record()
	if rec == nil {
		return "no record"
	}
	if rec.Status != event.StatusDenied {
		return fmt.Sprintf("request ended %s, want denied", summary(rec))
	}
	for _, c := range w.calls {
		if c.key == "a" || c.key == "b" || c.key == "c" {
			return fmt.Sprintf("webhook %s called for a denied request: %+v", c.key, w.calls)
		}
	}
	if len(w.executes) > 0 {
		return "execute published for a denied request"
	}
	denied := 0
	for _, ev := range w.events {
		if ev.Status == event.StatusDenied {
			denied++
		}
	}
	if denied != 1 {
		return fmt.Sprintf("%d denied events, want 1", denied)
	}
	if msg := w.indexLeft(); msg != "" {
		return msg
	}
	return w.identityLeft()
}

// identityKept checks a complete request with FINISHED_IDENTITY_RETENTION of an hour: it passes
// world.check but for its identity, which is still stored, expiring an hour after the request
// finished (not IDENTITY_TTL after its last write), as its record says.
func identityKept(w *world) string {
	rec := w.record()
	e, ok := w.idents["pri_x"]
	switch {
	case rec == nil || rec.FinishedProcessingAt == nil:
		return "the request did not finish"
	case !ok:
		return "the identity is gone, want it kept an hour"
	case !e.expires.Equal(rec.FinishedProcessingAt.Add(time.Hour)):
		return fmt.Sprintf("the identity expires at %s, want an hour after the request finished at %s", e.expires, rec.FinishedProcessingAt)
	case rec.IdentityExpiresAt == nil || !rec.IdentityExpiresAt.Equal(e.expires):
		return fmt.Sprintf("the record says the identity expires at %v, the store %s", rec.IdentityExpiresAt, e.expires)
	}
	delete(w.idents, "pri_x")
	return w.check()
}

// resumeOrExpiry checks a request whose resume arrives as its pause expires: either the resume
// won (the request completes, its derived identity reaching later calls) or the expiry did (error),
// and then the identity is the one submitted: a resume that lost never changed it (D22). No
// derived identity is left stored beside it either way.
func resumeOrExpiry(w *world) string {
	rec := w.record()
	if msg := w.identityLeft(); msg != "" {
		return msg
	}
	if msg := w.indexLeft(); msg != "" {
		return msg
	}
	if rec != nil && rec.Status == event.StatusError {
		if rec.Error.Message != lifecycle.MsgNotResumed {
			return fmt.Sprintf("error %q, want %q", rec.Error.Message, lifecycle.MsgNotResumed)
		}
		if e := w.idents["pri_x"].ident.Email; e == nil || *e != "a@example.com" {
			return fmt.Sprintf("the expired request's identity is %v, want the submitted one (D22)", e)
		}
		return ""
	}
	return w.check()
}

// explore runs every schedule within the bound and returns how many ran and the longest.
func explore(t *testing.T, sc scenario, bound int) (int, int) {
	type job struct{ prefix []int }
	stack := []job{{}}
	runs, longest := 0, 0
	for len(stack) > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		alts, ok := runSchedule(t, sc, j.prefix)
		runs++
		longest = max(longest, len(alts))
		if !ok {
			return runs, longest // the failure is reported; one is enough to debug
		}
		used := 0
		for _, c := range j.prefix {
			if c != 0 {
				used++
			}
		}
		if used >= bound {
			continue
		}
		for p := len(j.prefix); p < len(alts); p++ {
			for a := 1; a < alts[p]; a++ {
				next := make([]int, p+1)
				copy(next, j.prefix)
				next[p] = a
				stack = append(stack, job{prefix: next})
			}
		}
	}
	return runs, longest
}

// runSchedule runs one schedule: choices[i] picks the move at step i (0, the default, beyond it).
// It returns the number of possible moves at each step, and false when a check failed.
func runSchedule(t *testing.T, sc scenario, choices []int) ([]int, bool) {
	return runWith(t, sc, func(_ *world, step int, moves []move) int {
		if step < len(choices) && choices[step] < len(moves) {
			return choices[step]
		}
		return 0 // beyond the prefix, or the schedule changed shape before this point: the default
	})
}

// runWith runs one schedule, choose picking each move's index, and checks it.
func runWith(t *testing.T, sc scenario, choose func(w *world, step int, moves []move) int) ([]int, bool) {
	w := newWorld(t, sc.plan, sc.script)
	w.lateBy, w.resumeID, w.dataDelay = sc.lateBy, sc.resumeID, sc.dataDelay
	w.notEligible, w.reviewAfter, w.approveEarly, w.deny = sc.notEligible, sc.reviewAfter, sc.approveEarly, sc.deny
	w.breakers = sc.breakers
	// What the request waits for by design: a's first answer is a 503 (backoff of at most 1 s), the
	// receiver's late post, an operator's review, the data layer, a breaker's cool-down.
	w.inherent = time.Second + sc.lateBy + sc.reviewAfter + sc.dataDelay + sc.breakers.Cooldown
	r := w.newRunner(sc.cfg)
	sub, _ := json.Marshal(event.Submitted{ID: "pri_x", PolicyKey: "p", Identity: event.Identity{Email: strp("a@example.com")}})
	w.enqueue(event.SubjectSubmitted, sub, w.now)
	crashes, dups := sc.crashes, sc.dups
	var alts []int
	var path []string
	fail := func(format string, args ...any) ([]int, bool) {
		t.Errorf("schedule [%s]: "+format+"\ntrace:\n  %s", append([]any{strings.Join(path, ", ")}, append(args, strings.Join(w.trace, "\n  "))...)...)
		return alts, false
	}
	for step := 0; ; step++ {
		if step > 3000 {
			return fail("no end after %d moves", step)
		}
		w.quiet()
		if msg := w.stranded(); msg != "" {
			return fail("%s", msg)
		}
		moves := w.moves(crashes, dups)
		if len(moves) == 0 {
			break
		}
		alts = append(alts, len(moves))
		c := choose(w, step, moves)
		mv := moves[c]
		if c != 0 {
			path = append(path, fmt.Sprintf("step %d: %s", step, mv))
		}
		switch mv.kind {
		case moveStep:
			w.grant(mv.thread, false)
		case moveDeliver:
			w.deliver(r, mv.msg)
		case moveTick:
			w.mu.Lock()
			next, _ := w.nextDue()
			if busy := len(w.dueMsgs()) > 0 || anyStep(moves); busy {
				w.stalled += next.Sub(w.now)
			}
			w.now = next
			w.postDue()
			w.mu.Unlock()
		case moveCrash:
			crashes--
			w.crash(mv.worker)
		case moveDup:
			dups--
			w.mu.Lock()
			w.enqueue(event.SubjectSubmitted, sub, w.now)
			w.logf("the submission is published again")
			w.mu.Unlock()
		}
	}
	check := sc.check
	if check == nil {
		check = (*world).check
	}
	if msg := check(w); msg != "" {
		return fail("%s", msg)
	}
	return alts, true
}

func anyStep(moves []move) bool {
	for _, m := range moves {
		if m.kind == moveStep {
			return true
		}
	}
	return false
}

// crash makes every operation of worker fail from now on, and lets its waiting threads go.
func (w *world) crash(worker int) {
	w.mu.Lock()
	w.crashed[worker] = true
	w.logf("worker %d crashes", worker)
	var waiting []*thread
	for _, th := range w.threads {
		if th.worker == worker && !th.ended && th.op != "" {
			waiting = append(waiting, th)
		}
	}
	w.mu.Unlock()
	for _, th := range waiting {
		w.grant(th, true)
	}
}

// record returns the request's record as stored (decoded once per revision).
func (w *world) record() *lifecycle.Record {
	b, ok := w.records["pri_x"]
	if !ok {
		return nil
	}
	if w.decoded == nil || w.decodedRev != w.revs["pri_x"] {
		w.decoded = &lifecycle.Record{}
		_ = json.Unmarshal(b, w.decoded)
		w.decodedRev = w.revs["pri_x"]
	}
	return w.decoded
}

// stranded checks, with every thread waiting, that a request that is not finished has a message
// that will drive it (delivered to a worker, or due at some time): the lifecycle's promise that a
// durable trigger always exists.
func (w *world) stranded() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	rec := w.record()
	if rec == nil || rec.Finished() || rec.Status == event.StatusError {
		return ""
	}
	for _, m := range w.msgs {
		if !m.done {
			return ""
		}
	}
	if len(w.posts) > 0 {
		return "" // a receiver's post is due
	}
	return fmt.Sprintf("request %s at %s with no message left to drive it: %s", rec.Status, rec.Step, summary(rec))
}

// identityLeft checks that a finished request's identity is gone (FINISHED_IDENTITY_RETENTION is 0
// here), and that no derived identity stays stored, but when an executor crashed between storing
// one for an input that lost and its removal: then it expires with IDENTITY_TTL.
func (w *world) identityLeft() string {
	rec := w.record()
	for key := range w.idents {
		switch {
		case !strings.Contains(key, ".patch."):
			if rec != nil && rec.Finished() {
				return fmt.Sprintf("the identity of the %s request is left stored: %s", rec.Status, key)
			}
		case len(w.crashed) == 0:
			return "a derived identity is left stored: " + key
		}
	}
	return ""
}

// indexLeft checks errored_requests: a request in error is in it, naming its error; a finished one
// is not.
func (w *world) indexLeft() string {
	rec := w.record()
	e, ok := w.errored["pri_x"]
	switch {
	case rec == nil:
	case rec.Status == event.StatusError && (!ok || e.ErrorCount != rec.ErrorCount || e.WebhookKey != rec.Error.WebhookKey || e.Step != rec.Error.Step):
		return fmt.Sprintf("request in error %d (%+v), errored_requests holds %+v (%v)", rec.ErrorCount, rec.Error, e, ok)
	case rec.Finished() && ok:
		return fmt.Sprintf("the %s request is left in errored_requests: %+v", rec.Status, e)
	}
	return ""
}

// checkApprovalEvents checks the audit events of the pre-approval stage: the triggered one once,
// after the calls (at most once when an operator approves early: the approval may end the stage
// before every call); then the approval by the replies (pre_approval_eligible) or, after
// pre_approval_not_eligible or early, by an operator (approved), exactly once.
func (w *world) checkApprovalEvents() string {
	count := map[string]int{}
	for _, ev := range w.events {
		count[ev.Action]++
	}
	approvals := count[event.ActionPreApprovalEligible] + count[event.ActionApproved]
	switch {
	case count[event.ActionPreApprovalTriggered] > 1 || count[event.ActionPreApprovalTriggered] == 0 && !w.approveEarly:
		return fmt.Sprintf("%d pre_approval_webhook_triggered events, want 1", count[event.ActionPreApprovalTriggered])
	case approvals != 1:
		return fmt.Sprintf("%d approvals (eligible %d, approved %d), want 1", approvals, count[event.ActionPreApprovalEligible], count[event.ActionApproved])
	case !w.approveEarly && count[event.ActionApproved] != count[event.ActionPreApprovalNotEligible]:
		return fmt.Sprintf("%d operator approvals after %d not-eligible events", count[event.ActionApproved], count[event.ActionPreApprovalNotEligible])
	case w.notEligible != "" && count[event.ActionPreApprovalNotEligible] != 1:
		return fmt.Sprintf("webhook %s replied not eligible, yet %d not-eligible events", w.notEligible, count[event.ActionPreApprovalNotEligible])
	}
	return ""
}

// check runs the end-to-end assertions on a finished schedule.
func (w *world) check() string {
	rec := w.record()
	if rec == nil {
		return "no record"
	}
	if rec.Status != event.StatusComplete {
		return fmt.Sprintf("request ended %s at %s (%+v), want complete; refused posts: %v", rec.Status, rec.Step, rec.Error, w.refused)
	}
	// Webhooks in order: a webhook is first called after the one before it answered with success.
	order := []string{}
	for _, p := range append(append([]event.PlanWebhook(nil), w.plan.Pre...), w.plan.Post...) {
		if !p.ConnectionDisabled {
			order = append(order, p.Key)
		}
	}
	for i := 1; i < len(order); i++ {
		first := -1
		for j, c := range w.calls {
			if c.key == order[i] {
				first = j
				break
			}
		}
		okBefore := false
		for j := 0; j < first; j++ {
			if w.calls[j].key == order[i-1] && w.calls[j].status < 300 {
				okBefore = true
			}
		}
		if first >= 0 && !okBefore {
			return fmt.Sprintf("webhook %s called before %s answered with success: %+v", order[i], order[i-1], w.calls)
		}
	}
	// Every pre-approval webhook is called, each once per run, before any pre-execution webhook;
	// each call carries the submitted identity.
	if pa := w.plan.PreApproval; pa != nil {
		firstPre := len(w.calls)
		for j, c := range w.calls {
			if c.key == "a" {
				firstPre = j
				break
			}
		}
		for _, h := range pa.Webhooks {
			seen := false
			for j, c := range w.calls {
				if c.key != h.Key {
					continue
				}
				seen = true
				if j > firstPre {
					return fmt.Sprintf("pre-approval webhook %s called after the pre-execution webhooks began: %+v", h.Key, w.calls)
				}
				if c.identity.PhoneNumber != nil {
					return fmt.Sprintf("pre-approval webhook %s called with a derived identity: %+v", h.Key, c.identity)
				}
			}
			if !seen && !w.approveEarly { // an early approval may end the stage before every call
				return fmt.Sprintf("pre-approval webhook %s never called", h.Key)
			}
		}
		if msg := w.checkApprovalEvents(); msg != "" {
			return msg
		}
	}
	// No pre-execution webhook is called once the data layer was reached (its execute published).
	if w.callsAtExecute >= 0 {
		pre := map[string]bool{}
		for _, p := range w.plan.Pre {
			pre[p.Key] = true
		}
		for _, c := range w.calls[w.callsAtExecute:] {
			if pre[c.key] {
				return fmt.Sprintf("pre-execution webhook %s called after the data layer was reached: %+v", c.key, w.calls)
			}
		}
	}
	// Repeats of a call carry its webhook-id (one id per webhook: no retry from error here).
	ids := map[string]string{}
	for _, c := range w.calls {
		if prev, ok := ids[c.key]; ok && prev != c.webhookID {
			return fmt.Sprintf("webhook %s called with webhook-ids %s and %s", c.key, prev, c.webhookID)
		}
		ids[c.key] = c.webhookID
	}
	// Every recorded attempt is a call a receiver saw, with the status it answered.
	for _, wr := range rec.Webhooks {
		seen := map[int]int{}
		for _, c := range w.calls {
			if c.key == wr.Key {
				seen[c.status]++
			}
		}
		for _, a := range wr.Attempts {
			if seen[a.Status] == 0 {
				return fmt.Sprintf("webhook %s: attempt %+v recorded for a call the receiver never saw (calls %v)", wr.Key, a, seen)
			}
			seen[a.Status]--
		}
	}
	// The derived identities reach every later call.
	derived := false
	for _, c := range w.calls {
		if c.key == "c" && (c.identity.PhoneNumber == nil || *c.identity.PhoneNumber != "555") {
			return fmt.Sprintf("post-execution call without the derived phone number: %+v", c.identity)
		}
		if c.key == "c" && w.resumeID != nil && (c.identity.Email == nil || *c.identity.Email != *w.resumeID.Email) {
			return fmt.Sprintf("post-execution call without the resume's derived email: %+v", c.identity)
		}
		derived = derived || c.key == "c"
	}
	if !derived {
		return "webhook c never called"
	}
	// Exactly one complete event; events numbered without gaps, each naming the one before.
	complete := 0
	var prev *event.StatusChanged
	for i := range w.events {
		ev := w.events[i]
		if ev.Status == event.StatusComplete {
			complete++
		}
		if prev != nil && (ev.Seq <= prev.Seq) {
			return fmt.Sprintf("status events out of order: %d after %d", ev.Seq, prev.Seq)
		}
		prev = &ev
	}
	if complete != 1 {
		return fmt.Sprintf("%d complete events, want 1", complete)
	}
	// The record's timeline is the status events published, in order, each as it was published.
	if len(rec.Timeline) != len(w.events) {
		return fmt.Sprintf("the record's timeline has %d entries, %d status events were published", len(rec.Timeline), len(w.events))
	}
	for i, ev := range w.events {
		if !reflect.DeepEqual(rec.Timeline[i], ev.TimelineEntry) {
			return fmt.Sprintf("timeline entry %d is %+v, the event published %+v", i, rec.Timeline[i], ev.TimelineEntry)
		}
	}
	// Without crashes nothing waits for a claim or an ack wait to run out: the request completes
	// within what the receivers, the data layer and the stalls of the schedule took, plus a second.
	if len(w.crashed) == 0 {
		var done time.Time
		for _, ev := range w.events {
			if ev.Status == event.StatusComplete {
				done = ev.At
			}
		}
		took := done.Sub(w.start)
		if allowed := w.inherent + w.stalled + time.Second; took > allowed {
			return fmt.Sprintf("the request took %s to complete with no crash, want at most %s (waits %s, stalls %s)", took, allowed, w.inherent, w.stalled)
		}
	}
	if msg := w.identityLeft(); msg != "" {
		return msg
	}
	if msg := w.indexLeft(); msg != "" {
		return msg
	}
	if w.events[0].Previous != nil {
		return "the first status event has a previous status (D19)"
	}
	// The data layer ran one execution, and every execute of it carried its id.
	if w.plan.Pre != nil && len(w.executes) > 0 {
		for _, ex := range w.executes {
			if ex.ExecutionID != w.executes[0].ExecutionID {
				return fmt.Sprintf("executes with execution ids %s and %s for one execution", w.executes[0].ExecutionID, ex.ExecutionID)
			}
		}
	}
	return ""
}
