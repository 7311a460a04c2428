package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Assertions of the suite, by number (issue 9).
var Assertions = map[int]string{
	1:  "every request ends complete",
	2:  "webhooks are called in plan order with their list's callback_type, each only after the previous one answered successfully (the pre-approval webhook first, the data layer in between)",
	3:  "the submitted identity reaches every call and the data layer, each derived identity the later ones",
	4:  "every call carries a valid Standard Webhooks signature, and repeats of a call the same webhook-id",
	5:  "no attempt is recorded for a call the receiver never saw",
	6:  "exactly one complete status event per request",
	7:  "the data layer runs each request once per execution run, and repeats carry the same execution id",
	8:  "exactly one in_processing status event with action pre_approval_eligible per request",
	9:  "a complete request's identity and derived identities are gone from privacy_identities",
	10: "the request list shows the request in its record's status, and the record's timeline is its status events",
}

// StatusEvent is one privacy.request.status.<status> message of the stream.
type StatusEvent struct {
	Subject string
	Seq     uint64 // stream sequence
	Event   event.StatusChanged
}

// Evidence is everything known about one request at the end.
type Evidence struct {
	Spec       Spec
	Record     *Record // nil when callback had none
	RecordErr  string
	Calls      []Call
	Resumes    []TokenPost
	Replies    []TokenPost // eligible replies of the pre-approval webhook
	Deliveries []Delivery
	Events     []StatusEvent
	Submission Submission
	Submitted  bool
	// StoredIdentities is how many entries privacy_identities holds of the request at the end.
	StoredIdentities int
	// Listed is the request's status in callback's request list at the end ("" when not listed).
	Listed string
}

// Failure is one request breaking one assertion.
type Failure struct {
	Assertion int
	Problems  []string
}

// Check runs every assertion on one request.
func Check(e *Evidence) []Failure {
	var out []Failure
	for n, check := range []func(*Evidence) []string{nil, checkComplete, checkOrder, checkIdentity, checkWebhookIDs, checkAttempts, checkCompleteEvents, checkExecutions, checkEligibleEvents, checkIdentityGone, checkListed} {
		if check == nil {
			continue
		}
		if problems := check(e); len(problems) > 0 {
			out = append(out, Failure{Assertion: n, Problems: problems})
		}
	}
	return out
}

func (e *Evidence) complete() bool { return e.Record != nil && e.Record.Status == "complete" }

// 1. Every request ends complete.
func checkComplete(e *Evidence) []string {
	switch {
	case e.Record == nil:
		return []string{fmt.Sprintf("no record on callback (%s)", e.RecordErr)}
	case e.Record.Status != "complete":
		s := fmt.Sprintf("status %s at step %s, want complete", e.Record.Status, e.Record.Step)
		if e.Record.Error != nil {
			s += fmt.Sprintf(" (error: %s)", e.Record.Error.Message)
		}
		return []string{s}
	}
	return nil
}

// stage is one element of a request's sequence: a webhook, or the data layer between the pre- and
// post-execution webhooks.
type stage struct {
	name string
	// first is the first time it was reached (a call arrived, an execute was delivered).
	first time.Time
	// done is the first time it answered successfully (a 2xx answer written; for the halting
	// webhook the first post of its token; for the pre-approval webhook the first eligible reply
	// that may have been accepted; for the data layer its first executed answer); the next stage
	// may only be reached after it.
	done    time.Time
	reached bool
	calls   []Call // webhooks only
}

func (e *Evidence) stages() []stage {
	var out []stage
	add := func(h Hook) {
		st := stage{name: h.Key}
		for _, c := range e.Calls {
			if c.Hook != h.Key {
				continue
			}
			st.calls = append(st.calls, c)
			if !st.reached || c.At.Before(st.first) {
				st.first, st.reached = c.At, true
			}
			if c.Status >= 200 && c.Status < 300 && h.Behaviour != Halt && h.Behaviour != Eligible && (st.done.IsZero() || c.AnsweredAt.Before(st.done)) {
				st.done = c.AnsweredAt
			}
		}
		switch h.Behaviour {
		case Halt:
			for _, p := range e.Resumes {
				if st.done.IsZero() || p.At.Before(st.done) {
					st.done = p.At
				}
			}
		case Eligible:
			for _, p := range e.Replies {
				if mayBeAccepted(p) && (st.done.IsZero() || p.At.Before(st.done)) {
					st.done = p.At
				}
			}
		}
		out = append(out, st)
	}
	for _, h := range Hooks {
		if h.Type != event.Post {
			add(h)
		}
	}
	exec := stage{name: "data layer"}
	for _, d := range e.Deliveries {
		if !exec.reached || d.At.Before(exec.first) {
			exec.first, exec.reached = d.At, true
		}
		if d.AnswerErr == "" && (exec.done.IsZero() || d.AnsweredAt.Before(exec.done)) {
			exec.done = d.AnsweredAt
		}
	}
	out = append(out, exec)
	for _, h := range Hooks {
		if h.Type == event.Post {
			add(h)
		}
	}
	return out
}

// mayBeAccepted reports whether callback may have accepted the eligible reply p: it answered 200,
// or its answer was lost (a connection error: callback killed after publishing the reply) or was
// a 5xx (the publish timed out, yet the stream kept it). A 4xx refused that post; a 409 (already
// used), or a 400 once the request went on, follows an earlier post that was accepted.
func mayBeAccepted(p TokenPost) bool { return p.Status == 200 || p.Status == 0 || p.Status >= 500 }

// 2. Webhooks in order: the pre-approval webhook, pre-execution in plan order, the data layer, then
// post-execution; a stage is first reached only after the previous one answered successfully (so
// no pre-execution webhook before an eligible reply that may have been accepted), and no webhook is
// called again once a later stage was reached. Every call carries the callback_type of the list
// its webhook is in. A complete request went through every stage.
func checkOrder(e *Evidence) []string {
	var problems []string
	off := func(t time.Time) string { return fmt.Sprintf("+%.3fs", t.Sub(e.Spec0()).Seconds()) }
	for _, c := range e.Calls {
		if want := Hooks[HookIndex(c.Hook)].Type; c.CallbackType != string(want) {
			problems = append(problems, fmt.Sprintf("call of %s at %s carried callback_type %q, want %q", c.Hook, off(c.At), c.CallbackType, want))
		}
	}
	st := e.stages()
	for i := range st {
		if e.complete() && (!st[i].reached || st[i].done.IsZero()) {
			problems = append(problems, fmt.Sprintf("request is complete but %s was never %s", st[i].name, map[bool]string{true: "answered successfully", false: "reached"}[st[i].reached]))
		}
		if i == 0 || !st[i].reached {
			continue
		}
		prev := st[i-1]
		switch {
		case prev.done.IsZero():
			problems = append(problems, fmt.Sprintf("%s reached at %s but %s never answered successfully", st[i].name, off(st[i].first), prev.name))
		case st[i].first.Before(prev.done):
			problems = append(problems, fmt.Sprintf("%s reached at %s, before %s answered successfully at %s", st[i].name, off(st[i].first), prev.name, off(prev.done)))
		}
		for j := range i {
			for _, c := range st[j].calls {
				if c.At.After(st[i].first) {
					problems = append(problems, fmt.Sprintf("%s called again at %s after %s was reached at %s", st[j].name, off(c.At), st[i].name, off(st[i].first)))
				}
			}
		}
	}
	return problems
}

// Spec0 is the time offsets in a request's report count from: its first submission attempt.
func (e *Evidence) Spec0() time.Time { return e.Submission.FirstAt }

// 3. Identities in fides's shape: the submitted fides_user_device_id and custom loyalty_id are in
// the body of every call (the pre-approval webhook's included) and in every execute; the phone number and custom crm_id derived by the
// halting webhook and the email derived by the derive webhook are in every later call, and in every
// execute.
func checkIdentity(e *Evidence) []string {
	var problems []string
	haltAt, deriveAt := HookIndex("halt"), HookIndex("derive")
	check := func(what string, id event.Identity, wantPhone, wantEmail bool) {
		if id.FidesUserDeviceID == nil || *id.FidesUserDeviceID != e.Spec.DeviceID {
			problems = append(problems, fmt.Sprintf("%s carried fides_user_device_id %s, want %q (submitted)", what, str(id.FidesUserDeviceID), e.Spec.DeviceID))
		}
		if got, ok := id.Custom["loyalty_id"]; !ok || got.Value != e.Spec.Loyalty {
			problems = append(problems, fmt.Sprintf("%s carried loyalty_id %+v, want %q (submitted)", what, got, e.Spec.Loyalty))
		}
		if wantPhone && (id.PhoneNumber == nil || *id.PhoneNumber != e.Spec.DerivedPhone) {
			problems = append(problems, fmt.Sprintf("%s carried phone_number %s, want %q (derived by halt)", what, str(id.PhoneNumber), e.Spec.DerivedPhone))
		}
		if got, ok := id.Custom["crm_id"]; wantPhone && (!ok || got.Value != e.Spec.DerivedCRM) {
			problems = append(problems, fmt.Sprintf("%s carried crm_id %+v, want %q (derived by halt)", what, got, e.Spec.DerivedCRM))
		}
		if wantEmail && (id.Email == nil || *id.Email != e.Spec.DerivedEmail) {
			problems = append(problems, fmt.Sprintf("%s carried email %s, want %q (derived by derive)", what, str(id.Email), e.Spec.DerivedEmail))
		}
	}
	for _, c := range e.Calls {
		i := HookIndex(c.Hook)
		check(fmt.Sprintf("call of %s at +%.3fs", c.Hook, c.At.Sub(e.Spec0()).Seconds()), c.Identity, i > haltAt, i > deriveAt)
	}
	for _, d := range e.Deliveries {
		check(fmt.Sprintf("execute at +%.3fs", d.At.Sub(e.Spec0()).Seconds()), d.Identity, true, true)
	}
	return problems
}

func str(p *string) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprintf("%q", *p)
}

// 4. Every call is signed, and all calls of one webhook within a request (repeats after errors,
// timeouts and crashes: the suite never retries a request's step) carry one webhook-id.
func checkWebhookIDs(e *Evidence) []string {
	var problems []string
	ids := map[string][]string{}
	for _, c := range e.Calls {
		if c.SignatureErr != "" {
			problems = append(problems, fmt.Sprintf("call of %s at +%.3fs: %s", c.Hook, c.At.Sub(e.Spec0()).Seconds(), c.SignatureErr))
		}
		if !slices.Contains(ids[c.Hook], c.WebhookID) {
			ids[c.Hook] = append(ids[c.Hook], c.WebhookID)
		}
	}
	for _, h := range Hooks {
		if len(ids[h.Key]) > 1 {
			problems = append(problems, fmt.Sprintf("%s was called with %d different webhook-ids: %s", h.Key, len(ids[h.Key]), strings.Join(ids[h.Key], ", ")))
		}
	}
	return problems
}

// 5. Every attempt the record holds matches a call the receiver saw: per webhook and webhook-id,
// no more attempts than calls, and every recorded HTTP status was answered by the receiver.
func checkAttempts(e *Evidence) []string {
	if e.Record == nil {
		return nil
	}
	var problems []string
	for _, w := range e.Record.Webhooks {
		byID := map[string][]Call{}
		for _, c := range e.Calls {
			if c.Hook == w.Key {
				byID[c.WebhookID] = append(byID[c.WebhookID], c)
			}
		}
		attempts := map[string]int{}
		for _, a := range w.Attempts {
			attempts[a.WebhookID]++
		}
		for id, n := range attempts {
			if seen := len(byID[id]); n > seen {
				problems = append(problems, fmt.Sprintf("%s: %d attempts recorded with webhook-id %s, the receiver saw %d such calls", w.Key, n, id, seen))
			}
		}
		// Recorded statuses, matched one to one with the statuses the receiver answered.
		answered := map[string][]int{}
		for id, calls := range byID {
			for _, c := range calls {
				answered[id] = append(answered[id], c.Status)
			}
		}
		for _, a := range w.Attempts {
			if a.Status == nil || *a.Status == 0 {
				continue
			}
			k := slices.Index(answered[a.WebhookID], *a.Status)
			if k < 0 {
				problems = append(problems, fmt.Sprintf("%s: attempt at %s recorded status %d with webhook-id %s, the receiver answered no such call with it",
					w.Key, a.At.Format("15:04:05.000"), *a.Status, a.WebhookID))
				continue
			}
			answered[a.WebhookID] = slices.Delete(answered[a.WebhookID], k, k+1)
		}
	}
	return problems
}

// 6. Exactly one complete status event for a complete request, none for another.
func checkCompleteEvents(e *Evidence) []string {
	n := 0
	for _, ev := range e.Events {
		if ev.Event.Status == event.StatusComplete {
			n++
		}
	}
	switch {
	case e.complete() && n != 1:
		return []string{fmt.Sprintf("%d complete status events, want 1", n)}
	case !e.complete() && n > 0:
		return []string{fmt.Sprintf("%d complete status events, but the record is not complete", n)}
	}
	return nil
}

// 7. The data layer ran the request once: one execution run (the suite never retries the
// execution step), and every repeat of the execute carried that run's execution id.
func checkExecutions(e *Evidence) []string {
	var problems []string
	runs, ids := 0, []string{}
	for _, d := range e.Deliveries {
		if d.Ran {
			runs++
		}
		if !slices.Contains(ids, d.ExecutionID) {
			ids = append(ids, d.ExecutionID)
		}
	}
	if runs > 1 {
		problems = append(problems, fmt.Sprintf("the data layer ran the request %d times", runs))
	}
	if len(ids) > 1 {
		problems = append(problems, fmt.Sprintf("executes carried %d execution ids: %q", len(ids), ids))
	}
	if e.complete() && runs == 0 {
		problems = append(problems, "complete, but the data layer never ran it")
	}
	return problems
}

// 8. The pre-approval stage ended once, by the eligible reply: a complete request has exactly one
// status event with action pre_approval_eligible, no request more than one; it is an in_processing
// event, and only pending and awaiting_pre_approval events come before it.
func checkEligibleEvents(e *Evidence) []string {
	var problems []string
	var eligible []StatusEvent
	for _, ev := range e.Events {
		if ev.Event.Action == event.ActionPreApprovalEligible {
			eligible = append(eligible, ev)
		}
	}
	if n := len(eligible); (e.complete() && n != 1) || n > 1 {
		problems = append(problems, fmt.Sprintf("%d status events with action %s, want 1", n, event.ActionPreApprovalEligible))
	}
	for _, el := range eligible {
		if el.Event.Status != event.StatusInProcessing {
			problems = append(problems, fmt.Sprintf("the %s event (seq %d) has status %s, want %s", el.Event.Action, el.Event.Seq, el.Event.Status, event.StatusInProcessing))
		}
		for _, ev := range e.Events {
			if st := ev.Event.Status; ev.Event.Seq < el.Event.Seq && st != event.StatusPending && st != event.StatusAwaitingPreApproval {
				problems = append(problems, fmt.Sprintf("status event %s (seq %d) comes before the %s one (seq %d)", st, ev.Event.Seq, el.Event.Action, el.Event.Seq))
			}
		}
	}
	return problems
}

// 9. A complete request keeps no personal data: its identity and derived identities are gone
// (FINISHED_IDENTITY_RETENTION is 0 in the suite).
func checkIdentityGone(e *Evidence) []string {
	if e.complete() && e.StoredIdentities > 0 {
		return []string{fmt.Sprintf("complete, yet privacy_identities holds %d entries of it", e.StoredIdentities)}
	}
	return nil
}

// Describe tells what one request saw: its record, its calls, token posts, executes and status
// events, with times from its submission.
// 10. The request list (callback's index of the records, rebuilt by every callback that was
// killed) agrees with the record, and the record's timeline holds every status event of the
// stream (each once, however often it was published) in order.
func checkListed(e *Evidence) []string {
	if e.Record == nil {
		return nil
	}
	var p []string
	if e.Listed != e.Record.Status {
		p = append(p, fmt.Sprintf("listed as %q, the record is %s", e.Listed, e.Record.Status))
	}
	var events []event.TimelineEntry
	seen := map[int]bool{}
	for _, ev := range e.Events {
		if !seen[ev.Event.Seq] {
			seen[ev.Event.Seq] = true
			events = append(events, ev.Event.TimelineEntry)
		}
	}
	slices.SortFunc(events, func(a, b event.TimelineEntry) int { return a.Seq - b.Seq })
	if len(e.Record.Timeline) != len(events) {
		return append(p, fmt.Sprintf("the timeline has %d entries, the stream %d status events", len(e.Record.Timeline), len(events)))
	}
	for i, got := range e.Record.Timeline {
		want := events[i]
		if got.Seq != want.Seq || got.Status != want.Status || !got.At.Equal(want.At) || got.Action != want.Action || got.WebhookKey != want.WebhookKey {
			p = append(p, fmt.Sprintf("timeline entry %d is %+v, the event %+v", i, got, want))
			break
		}
	}
	return p
}

func Describe(e *Evidence) string {
	var b strings.Builder
	t0 := e.Spec0()
	off := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("+%.3fs", t.Sub(t0).Seconds())
	}
	fmt.Fprintf(&b, "  request %s (resume %s, eligible reply %s):\n", e.Spec.ID, delayMode(e.Spec.ResumeDelay), delayMode(e.Spec.ReplyDelay))
	if e.Submitted {
		fmt.Fprintf(&b, "    submitted: %d attempt(s), acked %s, duplicate %v %s\n", e.Submission.Attempts, off(e.Submission.AckedAt), e.Submission.Duplicate, e.Submission.LastErr)
	} else {
		b.WriteString("    submitted: never attempted\n")
	}
	if e.Record == nil {
		fmt.Fprintf(&b, "    record: none (%s)\n", e.RecordErr)
	} else {
		fmt.Fprintf(&b, "    record: status %s, step %s", e.Record.Status, e.Record.Step)
		if e.Record.Error != nil {
			fmt.Fprintf(&b, ", error %q", e.Record.Error.Message)
		}
		b.WriteString("\n")
		for _, w := range e.Record.Webhooks {
			fmt.Fprintf(&b, "      %-12s %-9s outcome %-10s", w.CallbackType, w.Key, w.Outcome)
			if w.Reply != "" {
				fmt.Fprintf(&b, " reply %s", w.Reply)
			}
			b.WriteString(" attempts:")
			for _, a := range w.Attempts {
				st := "-"
				if a.Status != nil {
					st = fmt.Sprint(*a.Status)
				}
				fmt.Fprintf(&b, " [%s %s %s", off(a.At), short(a.WebhookID), st)
				if a.Error != nil {
					fmt.Fprintf(&b, " %.80q", *a.Error)
				}
				b.WriteString("]")
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "      raw: %.1500s\n", e.Record.Raw)
	}
	b.WriteString("    calls seen by the receivers:\n")
	for _, c := range e.Calls {
		ans := "no answer (caller left)"
		if c.Status != 0 {
			ans = fmt.Sprintf("answered %d at %s", c.Status, off(c.AnsweredAt))
			if c.Halt {
				ans += " halt"
			}
		}
		fmt.Fprintf(&b, "      %s %-9s webhook-id %s identity{email %s, phone %s} %s", off(c.At), c.Hook, short(c.WebhookID), str(c.Identity.Email), str(c.Identity.PhoneNumber), ans)
		if c.SignatureErr != "" {
			fmt.Fprintf(&b, " SIGNATURE: %s", c.SignatureErr)
		}
		b.WriteString("\n")
	}
	for _, p := range e.Replies {
		fmt.Fprintf(&b, "    eligible reply %s: %d %.160s\n", off(p.At), p.Status, p.Detail)
	}
	for _, p := range e.Resumes {
		fmt.Fprintf(&b, "    resume post %s: %d %.160s\n", off(p.At), p.Status, p.Detail)
	}
	for _, d := range e.Deliveries {
		fmt.Fprintf(&b, "    execute delivered %s execution_id %q ran %v, answered %s %s\n", off(d.At), d.ExecutionID, d.Ran, off(d.AnsweredAt), d.AnswerErr)
	}
	var evs []string
	for _, ev := range e.Events {
		s := string(ev.Event.Status)
		if ev.Event.Action != "" {
			s += "[" + ev.Event.Action + "]"
		}
		evs = append(evs, fmt.Sprintf("%s(seq %d)", s, ev.Event.Seq))
	}
	fmt.Fprintf(&b, "    status events: %s\n", strings.Join(evs, " → "))
	return b.String()
}

func delayMode(d time.Duration) string {
	if d == 0 {
		return "right after answering"
	}
	return fmt.Sprintf("%.1fs after answering", d.Seconds())
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	if id == "" {
		return `""`
	}
	return id
}

// Report is the outcome of every assertion over every request.
type Report struct {
	Requests int
	// Failed maps an assertion to the requests that broke it, in id order.
	Failed map[int][]string
	// Problems maps a request to its failures.
	Problems map[string][]Failure
}

// Evaluate checks every request.
func Evaluate(all []*Evidence) Report {
	r := Report{Requests: len(all), Failed: map[int][]string{}, Problems: map[string][]Failure{}}
	for _, e := range all {
		fs := Check(e)
		if len(fs) == 0 {
			continue
		}
		r.Problems[e.Spec.ID] = fs
		for _, f := range fs {
			r.Failed[f.Assertion] = append(r.Failed[f.Assertion], e.Spec.ID)
		}
	}
	for _, ids := range r.Failed {
		sort.Strings(ids)
	}
	return r
}

// Summary is one line per assertion: how many requests broke it, and which.
func (r Report) Summary() string {
	var b strings.Builder
	for n := 1; n <= len(Assertions); n++ {
		ids := r.Failed[n]
		mark := "ok  "
		if len(ids) > 0 {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %d. %s: %d of %d requests failed", mark, n, Assertions[n], len(ids), r.Requests)
		if len(ids) > 0 {
			shown := ids
			if len(shown) > 40 {
				shown = shown[:40]
			}
			fmt.Fprintf(&b, " (%s", strings.Join(shown, ", "))
			if len(ids) > len(shown) {
				fmt.Fprintf(&b, ", and %d more", len(ids)-len(shown))
			}
			b.WriteString(")")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Details describes up to max failing requests (all when max <= 0): the assertions each broke, what
// was wrong, and what it saw.
func (r Report) Details(all []*Evidence, max int) string {
	var b strings.Builder
	n := 0
	for _, e := range all {
		fs := r.Problems[e.Spec.ID]
		if len(fs) == 0 {
			continue
		}
		if max > 0 && n == max {
			fmt.Fprintf(&b, "  ... and %d more failing requests (see the full report)\n", len(r.Problems)-n)
			break
		}
		n++
		for _, f := range fs {
			for _, p := range f.Problems {
				fmt.Fprintf(&b, "  %s breaks %d (%s): %s\n", e.Spec.ID, f.Assertion, Assertions[f.Assertion], p)
			}
		}
		b.WriteString(Describe(e))
	}
	return b.String()
}
