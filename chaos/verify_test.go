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
// called once and answered 200, the halting one resumed, the data layer run once, one complete
// event.
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
	for i, h := range Hooks {
		if !h.Pre && len(e.Deliveries) == 0 {
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
		c := Call{Hook: h.Key, At: at(ms), AnsweredAt: at(ms + 1), WebhookID: "msg_" + h.Key, Identity: id, Status: 200, Halt: h.Behaviour == Halt}
		e.Calls = append(e.Calls, c)
		if h.Behaviour == Halt {
			e.Resumes = append(e.Resumes, ResumePost{At: at(ms + 2), Status: 200})
		}
		status := 200
		rec := recordWebhook(h.Key, at(ms), "msg_"+h.Key, &status)
		e.Record.Webhooks = append(e.Record.Webhooks, rec)
		ms += 10
	}
	e.Events = []StatusEvent{
		{Event: event.StatusChanged{ID: spec.ID, Seq: 1, Status: event.StatusPending}},
		{Event: event.StatusChanged{ID: spec.ID, Seq: 2, Status: event.StatusInProcessing}},
		{Event: event.StatusChanged{ID: spec.ID, Seq: 3, Status: event.StatusComplete}},
	}
	return e
}

func recordWebhook(key string, at time.Time, webhookID string, status *int) RecordWebhook {
	return RecordWebhook{Key: key, Outcome: "succeeded", Attempts: []RecordAttempt{{At: at, WebhookID: webhookID, Status: status}}}
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
			w := &e.Record.Webhooks[HookIndex("slow_post")]
			w.Attempts = append(w.Attempts, w.Attempts[0])
			w.Attempts[1].Status = nil
		}},
		{"status the receiver never answered", 5, "recorded status 503", func(e *Evidence) {
			s := 503
			e.Record.Webhooks[HookIndex("wake")].Attempts[0].Status = &s
		}},
		{"two complete events", 6, "2 complete status events", func(e *Evidence) { e.Events = append(e.Events, e.Events[2]) }},
		{"run twice (D12)", 7, "ran the request 2 times", func(e *Evidence) {
			d := e.Deliveries[0]
			d.ExecutionID, d.Key = "exe_2", "exe_2"
			e.Deliveries = append(e.Deliveries, d)
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
