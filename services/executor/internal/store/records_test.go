package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
)

// TestEncodeMatchesPlainJSON checks that the record's JSON with its interned plan is the JSON of the
// record as encoding/json writes it, also after the plan is replaced, and that it decodes back.
func TestEncodeMatchesPlainJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	planA := event.Plan{PolicyKey: "p", Version: 1, PublishedAt: at,
		Pre:  []event.PlanWebhook{{ID: "w1", Key: "a", Direction: event.TwoWay, Secrets: "sealed-a"}},
		Post: []event.PlanWebhook{{ID: "w2", Key: "b", Direction: event.OneWay, Secrets: "sealed-b"}}}
	planB := event.Plan{PolicyKey: "p", Version: 2, PublishedAt: at.Add(time.Hour),
		Pre: []event.PlanWebhook{{ID: "w3", Key: "c", Direction: event.OneWay}}}
	r := &lifecycle.Record{Request: event.Request{ID: "pri_1", PolicyKey: "p", Status: event.StatusInProcessing,
		Step: event.StepPreWebhooks, Run: 1, CreatedAt: at, UpdatedAt: at, Webhooks: []event.WebhookRecord{}}}
	pi := newPlanInterner()
	for _, tc := range []struct {
		name   string
		change func(r *lifecycle.Record)
	}{
		{name: "no plan", change: func(*lifecycle.Record) {}},
		{name: "plan A", change: func(r *lifecycle.Record) { r.Plan = planA }},
		{name: "plan A again, other fields changed", change: func(r *lifecycle.Record) { r.Next = 1; r.EventSeq = 3 }},
		{name: "plan B", change: func(r *lifecycle.Record) { r.Plan = planB }},
		{name: "plan A, fresh slices", change: func(r *lifecycle.Record) {
			p := planA
			p.Pre = append([]event.PlanWebhook(nil), planA.Pre...)
			p.Pre[0].Key = "a2"
			r.Plan = p
		}},
	} {
		tc.change(r)
		got, err := pi.encode(r)
		if err != nil {
			t.Fatalf("%s: encode: %v", tc.name, err)
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("%s: marshal: %v", tc.name, err)
		}
		var gotV, wantV any
		_ = json.Unmarshal(got, &gotV)
		_ = json.Unmarshal(want, &wantV)
		if !reflect.DeepEqual(gotV, wantV) {
			t.Errorf("%s: encode\n got %s\nwant %s", tc.name, got, want)
		}
		back, err := pi.decode(got)
		if err != nil {
			t.Fatalf("%s: decode: %v", tc.name, err)
		}
		again, _ := pi.encode(back)
		var againV any
		_ = json.Unmarshal(again, &againV)
		if !reflect.DeepEqual(againV, wantV) {
			t.Errorf("%s: decode and encode\n got %s\nwant %s", tc.name, again, want)
		}
		if !reflect.DeepEqual(back.Plan, r.Plan) {
			t.Errorf("%s: decoded plan %+v, want %+v", tc.name, back.Plan, r.Plan)
		}
	}
}
