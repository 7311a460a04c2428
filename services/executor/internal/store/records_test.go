package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestPlanByReference checks the stored form of a record: the JSON encoding/json writes for it,
// with the plan replaced by plan_ref, the reference of the plan's JSON in plan_snapshots; the
// snapshot stored once per distinct plan before the record names it; and the record read back
// equal, its plan from the snapshot. A record written before references (its plan inline) still
// reads, and a record naming a snapshot that is not there is an error.
func TestPlanByReference(t *testing.T) {
	n := testkit.StartNATS(t)
	kv := n.Bucket(t, event.BucketPlanSnapshots)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	planA := event.Plan{PolicyKey: "p", Version: 1, PublishedAt: at,
		Pre:  []event.PlanWebhook{{ID: "w1", Key: "a", Direction: event.TwoWay, Secrets: "sealed-a"}},
		Post: []event.PlanWebhook{{ID: "w2", Key: "b", Direction: event.OneWay, Secrets: "sealed-b"}}}
	planB := event.Plan{PolicyKey: "p", Version: 2, PublishedAt: at.Add(time.Hour),
		Pre: []event.PlanWebhook{{ID: "w3", Key: "c", Direction: event.OneWay}}}
	r := &lifecycle.Record{Request: event.Request{ID: "pri_1", PolicyKey: "p", Status: event.StatusInProcessing,
		Step: event.StepPreWebhooks, Run: 1, CreatedAt: at, UpdatedAt: at, Webhooks: []event.WebhookRecord{}}}
	pr := newPlanRefs(plansnapshots.New(kv))
	for _, tc := range []struct {
		name   string
		change func(r *lifecycle.Record)
	}{
		{name: "no plan", change: func(*lifecycle.Record) {}},
		{name: "plan A", change: func(r *lifecycle.Record) { r.Plan = planA }},
		{name: "plan A again, other fields changed", change: func(r *lifecycle.Record) { r.Next = 1; r.EventSeq = 3 }},
		{name: "plan B", change: func(r *lifecycle.Record) { r.Plan = planB }},
		{name: "plan A with a pre-approval stage (format 3)", change: func(r *lifecycle.Record) {
			p := planA
			p.PreApproval = &event.PreApproval{Webhooks: []event.PlanWebhook{{ID: "w4", Key: "q", Direction: event.TwoWay}}}
			r.Plan = p
		}},
		{name: "plan A, fresh slices, one key changed", change: func(r *lifecycle.Record) {
			p := planA
			p.Pre = append([]event.PlanWebhook(nil), planA.Pre...)
			p.Pre[0].Key = "a2"
			r.Plan = p
		}},
	} {
		tc.change(r)
		got, err := pr.encode(ctx, r)
		if err != nil {
			t.Fatalf("%s: encode: %v", tc.name, err)
		}
		var gotV, wantV map[string]any
		plain, _ := json.Marshal(r)
		_ = json.Unmarshal(got, &gotV)
		_ = json.Unmarshal(plain, &wantV)
		delete(wantV, "plan")
		wantV["format"] = float64(r.Layout()) // the oldest format that holds the record
		if len(r.Plan.Pre)+len(r.Plan.Post) > 0 {
			planJSON, _ := json.Marshal(r.Plan)
			wantV["plan_ref"] = plansnapshots.Ref(planJSON)
		}
		if !reflect.DeepEqual(gotV, wantV) {
			t.Errorf("%s: stored\n got %s\nwant %v", tc.name, got, wantV)
		}
		back, err := pr.decode(ctx, got)
		if err != nil {
			t.Fatalf("%s: decode: %v", tc.name, err)
		}
		if !reflect.DeepEqual(back.Plan, r.Plan) {
			t.Errorf("%s: decoded plan %+v, want %+v", tc.name, back.Plan, r.Plan)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("%s: decoded %+v, want %+v", tc.name, back, r)
		}
	}
	if st, err := kv.Status(ctx); err != nil || st.Values() != 4 {
		t.Errorf("plan_snapshots holds %v snapshots (%v), want 4: plans A, B, A with a pre-approval stage and A with a changed key", st.Values(), err)
	}

	t.Run("inline plan", func(t *testing.T) {
		old := *r
		old.Plan = planB
		b, _ := json.Marshal(&old) // as written before plan_snapshots: the plan inline
		back, err := pr.decode(ctx, b)
		if err != nil || !reflect.DeepEqual(back.Plan, planB) || back.PlanRef != "" {
			t.Fatalf("decode of an inline plan: %+v, %v", back, err)
		}
	})
	t.Run("newer format", func(t *testing.T) {
		newer := *r
		newer.Format = event.RecordFormat + 1
		b, _ := json.Marshal(&newer)
		if _, err := pr.decode(ctx, b); !errors.Is(err, event.ErrNewerFormat) {
			t.Fatalf("decode of a record in a newer format: %v, want event.ErrNewerFormat", err)
		}
	})
	t.Run("missing snapshot", func(t *testing.T) {
		dangling := *r
		dangling.Plan, dangling.PlanRef = event.Plan{}, plansnapshots.Ref([]byte(`{"policy_key":"gone"}`))
		b, _ := json.Marshal(&dangling)
		if _, err := pr.decode(ctx, b); !errors.Is(err, plansnapshots.ErrNotFound) {
			t.Fatalf("decode of a record naming no snapshot: %v, want plansnapshots.ErrNotFound", err)
		}
	})
}
