package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// goodEvidence is a request that went through every stage as the contract says: each webhook
// called once and answered 200, the pre-approval one replied eligible, the halting one resumed,
// the data layer run once, one eligible and one complete event. As in callback's record, the
// pre-approval webhook comes last in the record's webhooks.
func goodEvidence() *Evidence {
	spec := MakeSpecs(1, rand.New(rand.NewPCG(1, 1)))[0]
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	e := &Evidence{Spec: spec, Submitted: true, Submission: Submission{FirstAt: t0, AckedAt: at(1), Attempts: 1}}
	e.Record = &Record{ID: spec.ID, Status: "complete", Step: "post_webhooks"}
	email, phone, derivedEmail, device := spec.Email, spec.DerivedPhone, spec.DerivedEmail, spec.DeviceID
	loyalty := map[string]event.LabeledIdentity{"loyalty_id": {Label: "Loyalty ID", Value: spec.Loyalty}}
	derivedCustom := map[string]event.LabeledIdentity{"loyalty_id": loyalty["loyalty_id"], "crm_id": {Label: "CRM id", Value: spec.DerivedCRM}}
	ms := 10
	var preApproval []RecordWebhook
	for i, h := range Hooks {
		if h.Type == event.Post && len(e.Deliveries) == 0 {
			e.Deliveries = append(e.Deliveries, Delivery{At: at(ms), ExecutionID: "exe_1", Key: "exe_1",
				Identity: event.Identity{Email: &derivedEmail, PhoneNumber: &phone, FidesUserDeviceID: &device, Custom: derivedCustom},
				Ran:      true, AnsweredAt: at(ms + 1)})
			ms += 10
		}
		id := event.Identity{Email: &email, FidesUserDeviceID: &device, Custom: loyalty}
		if i > HookIndex("halt") {
			id.PhoneNumber, id.Custom = &phone, derivedCustom
		}
		if i > HookIndex("derive") {
			id.Email = &derivedEmail
		}
		c := Call{Hook: h.Key, At: at(ms), AnsweredAt: at(ms + 1), WebhookID: "msg_" + h.Key, CallbackType: string(h.Type),
			Identity: id, Status: 200, Halt: h.Behaviour == Halt}
		e.Calls = append(e.Calls, c)
		switch h.Behaviour {
		case Halt:
			e.Resumes = append(e.Resumes, TokenPost{At: at(ms + 2), Status: 200})
		case Eligible:
			e.Replies = append(e.Replies, TokenPost{At: at(ms + 2), Status: 200})
		}
		status := 200
		rec := RecordWebhook{Key: h.Key, CallbackType: string(h.Type), Outcome: "succeeded",
			Attempts: []RecordAttempt{{At: at(ms), WebhookID: "msg_" + h.Key, Status: &status}}}
		if h.Type == event.PreApprovalCallback {
			rec.Reply = "eligible"
			preApproval = append(preApproval, rec)
		} else {
			e.Record.Webhooks = append(e.Record.Webhooks, rec)
		}
		ms += 10
	}
	e.Record.Webhooks = append(e.Record.Webhooks, preApproval...)
	e.Events = []StatusEvent{
		{Event: event.StatusChanged{ID: spec.ID, TimelineEntry: event.TimelineEntry{Seq: 1, Status: event.StatusPending}}},
		{Event: event.StatusChanged{ID: spec.ID, TimelineEntry: event.TimelineEntry{Seq: 2, Status: event.StatusAwaitingPreApproval}}},
		{Event: event.StatusChanged{ID: spec.ID, TimelineEntry: event.TimelineEntry{Seq: 3, Status: event.StatusAwaitingPreApproval, Action: event.ActionPreApprovalTriggered}}},
		{Event: event.StatusChanged{ID: spec.ID, TimelineEntry: event.TimelineEntry{Seq: 4, Status: event.StatusInProcessing, Action: event.ActionPreApprovalEligible}}},
		{Event: event.StatusChanged{ID: spec.ID, TimelineEntry: event.TimelineEntry{Seq: 5, Status: event.StatusComplete}}},
	}
	for _, ev := range e.Events {
		e.Record.Timeline = append(e.Record.Timeline, ev.Event.TimelineEntry)
	}
	e.Listed = "complete"
	return e
}

func recordOf(e *Evidence, key string) *RecordWebhook {
	for i := range e.Record.Webhooks {
		if e.Record.Webhooks[i].Key == key {
			return &e.Record.Webhooks[i]
		}
	}
	panic("no record of " + key)
}

func eventWith(e *Evidence, action string) *StatusEvent {
	for i := range e.Events {
		if e.Events[i].Event.Action == action {
			return &e.Events[i]
		}
	}
	panic("no event with action " + action)
}

func callOf(e *Evidence, hook string) *Call {
	for i := range e.Calls {
		if e.Calls[i].Hook == hook {
			return &e.Calls[i]
		}
	}
	panic("no call of " + hook)
}

// TestChecksCatch shows that each assertion passes a request that kept the contract and fails one
// that broke it, naming what was wrong.
func TestChecksCatch(t *testing.T) {
	if fs := Check(goodEvidence()); len(fs) > 0 {
		t.Fatalf("a good request fails: %+v\n%s", fs, Describe(goodEvidence()))
	}
	for _, tc := range []struct {
		name      string
		assertion int
		want      string
		breakIt   func(e *Evidence)
	}{
		{"stuck paused (D3)", 1, "status paused", func(e *Evidence) {
			e.Record.Status, e.Record.Step = "paused", "pre_webhooks"
		}},
		{"no record", 1, "no record", func(e *Evidence) { e.Record, e.RecordErr = nil, "404" }},
		{"stuck awaiting pre-approval", 1, "status awaiting_pre_approval", func(e *Evidence) {
			e.Record.Status, e.Record.Step = "awaiting_pre_approval", "pre_approval"
		}},
		{"stuck not eligible", 1, "status pre_approval_not_eligible", func(e *Evidence) {
			e.Record.Status, e.Record.Step = "pre_approval_not_eligible", "pre_approval"
		}},
		{"pre-execution webhook before the eligible reply", 2, "wake reached at +0.020s, before approve answered successfully at +0.022s", func(e *Evidence) {
			e.Replies[0].At = callOf(e, "wake").At.Add(2 * time.Millisecond)
		}},
		{"pre-execution webhook after a refused reply only", 2, "wake reached at +0.020s but approve never answered successfully", func(e *Evidence) {
			e.Replies[0].Status = 400
		}},
		{"pre-execution webhook without a pre-approval call", 2, "approve was never reached", func(e *Evidence) {
			e.Calls = slices.DeleteFunc(e.Calls, func(c Call) bool { return c.Hook == "approve" })
		}},
		{"pre-approval webhook called after a pre-execution one", 2, "approve called again", func(e *Evidence) {
			c := *callOf(e, "approve")
			c.At = callOf(e, "halt").At
			e.Calls = append(e.Calls, c)
		}},
		{"pre-approval call with another callback_type", 2, `call of approve at +0.010s carried callback_type "pre", want "pre_approval"`, func(e *Evidence) {
			callOf(e, "approve").CallbackType = "pre"
		}},
		{"next webhook before the resume", 2, "before halt answered", func(e *Evidence) {
			e.Resumes[0].At = callOf(e, "derive").At.Add(time.Millisecond)
		}},
		{"earlier webhook called again", 2, "wake called again", func(e *Evidence) {
			c := *callOf(e, "wake")
			c.At = callOf(e, "slow_post").At.Add(time.Millisecond)
			e.Calls = append(e.Calls, c)
		}},
		{"post webhook before the data layer answered", 2, "notify reached", func(e *Evidence) {
			e.Deliveries[0].AnsweredAt = callOf(e, "notify").At.Add(time.Millisecond)
		}},
		{"complete without a webhook", 2, "slow_post was never reached", func(e *Evidence) {
			e.Calls = slices.DeleteFunc(e.Calls, func(c Call) bool { return c.Hook == "slow_post" })
		}},
		{"derived phone lost", 3, "phone_number null", func(e *Evidence) { callOf(e, "slow_pre").Identity.PhoneNumber = nil }},
		{"derived custom identity lost", 3, "crm_id", func(e *Evidence) {
			callOf(e, "slow_pre").Identity.Custom = map[string]event.LabeledIdentity{"loyalty_id": {Label: "Loyalty ID", Value: e.Spec.Loyalty}}
		}},
		{"submitted custom identity lost", 3, "loyalty_id", func(e *Evidence) { callOf(e, "wake").Identity.Custom = nil }},
		{"pre-approval call without the submitted identity", 3, "call of approve at +0.010s carried fides_user_device_id null", func(e *Evidence) {
			callOf(e, "approve").Identity.FidesUserDeviceID = nil
		}},
		{"submitted fides field lost", 3, "fides_user_device_id null", func(e *Evidence) { e.Deliveries[0].Identity.FidesUserDeviceID = nil }},
		{"derived email not in execute", 3, "execute at", func(e *Evidence) {
			email := e.Spec.Email
			e.Deliveries[0].Identity.Email = &email
		}},
		{"repeat with another webhook-id", 4, "different webhook-ids", func(e *Evidence) {
			c := *callOf(e, "notify")
			c.WebhookID = "msg_other"
			e.Calls = append(e.Calls, c)
		}},
		{"bad signature", 4, "does not match", func(e *Evidence) { callOf(e, "wake").SignatureErr = "webhook-signature does not match" }},
		{"attempt for a call never made (D13)", 5, "receiver saw 1", func(e *Evidence) {
			w := recordOf(e, "slow_post")
			w.Attempts = append(w.Attempts, w.Attempts[0])
			w.Attempts[1].Status = nil
		}},
		{"status the receiver never answered", 5, "recorded status 503", func(e *Evidence) {
			s := 503
			recordOf(e, "wake").Attempts[0].Status = &s
		}},
		{"pre-approval attempt for a call never made", 5, "approve: 2 attempts recorded", func(e *Evidence) {
			w := recordOf(e, "approve")
			w.Attempts = append(w.Attempts, w.Attempts[0])
		}},
		{"two complete events", 6, "2 complete status events", func(e *Evidence) {
			e.Events = append(e.Events, e.Events[len(e.Events)-1])
		}},
		{"run twice (D12)", 7, "ran the request 2 times", func(e *Evidence) {
			d := e.Deliveries[0]
			d.ExecutionID, d.Key = "exe_2", "exe_2"
			e.Deliveries = append(e.Deliveries, d)
		}},
		{"not in the request list", 10, `listed as "", the record is complete`, func(e *Evidence) { e.Listed = "" }},
		{"stale in the request list", 10, `listed as "in_processing"`, func(e *Evidence) { e.Listed = "in_processing" }},
		{"timeline without an event", 10, "the timeline has 4 entries, the stream 5", func(e *Evidence) {
			e.Record.Timeline = slices.Delete(e.Record.Timeline, 2, 3)
		}},
		{"timeline entry unlike its event", 10, "timeline entry 3", func(e *Evidence) { e.Record.Timeline[3].Action = "" }},
		{"identity left after complete", 9, "privacy_identities holds 2 entries", func(e *Evidence) { e.StoredIdentities = 2 }},
		{"no eligible event", 8, "0 status events with action pre_approval_eligible", func(e *Evidence) {
			eventWith(e, event.ActionPreApprovalEligible).Event.Action = ""
		}},
		{"two eligible events", 8, "2 status events with action pre_approval_eligible", func(e *Evidence) {
			e.Events = append(e.Events, *eventWith(e, event.ActionPreApprovalEligible))
		}},
		{"eligible event of another status", 8, "has status awaiting_pre_approval", func(e *Evidence) {
			eventWith(e, event.ActionPreApprovalEligible).Event.Status = event.StatusAwaitingPreApproval
		}},
		{"in_processing before the eligible event", 8, "status event in_processing (seq 2) comes before", func(e *Evidence) {
			e.Events[1].Event.Status = event.StatusInProcessing
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := goodEvidence()
			tc.breakIt(e)
			var got []string
			for _, f := range Check(e) {
				for _, p := range f.Problems {
					got = append(got, fmt.Sprintf("%d: %s", f.Assertion, p))
				}
			}
			want := fmt.Sprintf("%d: ", tc.assertion)
			if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, want) && strings.Contains(p, tc.want) }) {
				t.Errorf("problems = %q, want one of assertion %d containing %q", got, tc.assertion, tc.want)
			}
		})
	}
}

// TestTimelineCountsAnEventPublishedTwiceOnce: an event the stream holds twice (published again
// after an outage longer than the duplicate window) is one entry of the timeline.
func TestTimelineCountsAnEventPublishedTwiceOnce(t *testing.T) {
	e := goodEvidence()
	e.Events = append(e.Events, e.Events[1])
	if p := checkListed(e); len(p) > 0 {
		t.Fatalf("checkListed: %v", p)
	}
}
