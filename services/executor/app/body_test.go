package app_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// TestCallBodyHasFidesFields: every call carries fidesops's fields and fides's beside them —
// privacy_request_status, policy_action from the policy, the attempt's timestamp, and the request's
// summary without personal data, with its due date from the policy's execution timeframe.
func TestCallBodyHasFidesFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	// The plan is built by putPlan under another key, then put once under "fides" with the
	// policy's facts: a second put of one key could reach the executor's plan view after the
	// submission.
	plan := e.putPlan("fides_template", []hook{{Key: "pre", URL: e.rc.URL("/fides/pre")}}, []hook{{Key: "post", URL: e.rc.URL("/fides/post")}})
	plan.PolicyKey, plan.PolicyAction, plan.ExecutionTimeframe = "fides", "erasure", 30
	b, _ := json.Marshal(plan)
	if _, err := e.nats.Bucket(t, event.BucketPlans).Put(context.Background(), event.KVKey("fides"), b); err != nil {
		t.Fatal(err)
	}
	e.publishJSON(event.SubjectSubmitted, event.Submitted{ID: "pri_fides", PolicyKey: "fides", ExternalID: "ext-7",
		Identity: identity("fides@example.com", "")})
	r := e.waitStatus("pri_fides", 10*time.Second, event.StatusComplete)

	for _, path := range []string{"/fides/pre", "/fides/post"} {
		calls := e.rc.CallsOf("pri_fides", path)
		if len(calls) != 1 {
			t.Fatalf("%s called %d times", path, len(calls))
		}
		body := bodyOf(t, calls[0])
		if body["privacy_request_id"] != "pri_fides" || body["policy_key"] != "fides" || body["direction"] != "one_way" {
			t.Errorf("%s: fidesops fields %v", path, body)
		}
		if body["privacy_request_status"] != "in_processing" || body["policy_action"] != "erasure" {
			t.Errorf("%s: privacy_request_status %v, policy_action %v", path, body["privacy_request_status"], body["policy_action"])
		}
		ts, err := time.Parse(time.RFC3339Nano, body["timestamp"].(string))
		if err != nil || ts.Before(r.CreatedAt) || ts.After(time.Now()) {
			t.Errorf("%s: timestamp %v (%v), want the attempt's time", path, body["timestamp"], err)
		}
		summary := body["privacy_request"].(map[string]any)
		due := r.CreatedAt.AddDate(0, 0, 30).UTC().Format(time.RFC3339Nano)
		if summary["id"] != "pri_fides" || summary["status"] != "in_processing" || summary["policy_key"] != "fides" ||
			summary["external_id"] != "ext-7" || summary["created_at"] == nil || summary["started_processing_at"] == nil {
			t.Errorf("%s: privacy_request %v", path, summary)
		}
		if got, _ := time.Parse(time.RFC3339Nano, summary["due_date"].(string)); got.UTC().Format(time.RFC3339Nano) != due {
			t.Errorf("%s: due_date %v, want %s (created + 30 days)", path, summary["due_date"], due)
		}
		if _, ok := summary["identity"]; ok {
			t.Errorf("%s: the summary carries the identity", path)
		}
	}
}
