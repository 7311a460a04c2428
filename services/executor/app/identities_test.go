package app_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
)

// TestIdentitiesReachCallsAndExecute: a submitted custom identity and the fides identity a two-way
// pre-webhook derives (SPEC §5, §6) reach the later webhooks' calls and the data layer's execute
// event whole, email and phone_number present even when null.
func TestIdentitiesReachCallsAndExecute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) { c.ExecutionStage = "await" }))
	e.putPlan("idents", []hook{
		{Key: "derive", Direction: event.TwoWay, URL: e.rc.URL("/i/derive")},
		{Key: "after", URL: e.rc.URL("/i/after")},
	}, []hook{{Key: "post", URL: e.rc.URL("/i/post")}})
	e.rc.On("/i/derive", seq(ok(`{"derived_identity": {"ga_client_id": "GA1.2.3", "fides_user_device_id": "dev-9",
		"ljt_readerID": null, "loyalty_id": {"label": "Loyalty ID", "value": "CH-2"},
		"crm_id": {"label": "CRM", "value": "c-7"}}}`)))
	executes := make(chan []byte, 4)
	sub, err := e.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		executes <- m.Data
		var ex event.Execute
		_ = json.Unmarshal(m.Data, &ex)
		b, _ := json.Marshal(event.Executed{ID: ex.ID, ExecutionID: ex.ExecutionID, Succeeded: true})
		_, _ = e.js.Publish(context.Background(), event.SubjectExecuted, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	e.publish(event.SubjectSubmitted, []byte(`{"id": "pri_idents", "policy_key": "idents", "identity": {
		"external_id": "ext-1", "loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}}`), "pri_idents")
	e.waitStatus("pri_idents", 10*time.Second, event.StatusComplete)

	const (
		submitted = `{"email":null,"phone_number":null,"external_id":"ext-1","loyalty_id":{"label":"Loyalty ID","value":"CH-1"}}`
		merged    = `{"email":null,"phone_number":null,"ga_client_id":"GA1.2.3","fides_user_device_id":"dev-9","external_id":"ext-1",` +
			`"crm_id":{"label":"CRM","value":"c-7"},"loyalty_id":{"label":"Loyalty ID","value":"CH-2"}}`
	)
	identityOf := func(raw []byte) string {
		t.Helper()
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return string(m["identity"])
	}
	for _, tc := range []struct{ path, want string }{
		{"/i/derive", submitted}, {"/i/after", merged}, {"/i/post", merged},
	} {
		calls := e.rc.CallsOf("pri_idents", tc.path)
		if len(calls) != 1 {
			t.Fatalf("%s called %d times, want 1", tc.path, len(calls))
		}
		if got := identityOf(calls[0].Body); got != tc.want {
			t.Errorf("%s: identity %s, want %s", tc.path, got, tc.want)
		}
		if id := bodyOf(t, calls[0])["identity"].(map[string]any); id["email"] != nil || id["phone_number"] != nil {
			t.Errorf("%s: identity %v, want email and phone_number null", tc.path, id)
		}
	}
	select {
	case raw := <-executes:
		if got := identityOf(raw); got != merged {
			t.Errorf("execute identity %s, want %s", got, merged)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no execute event")
	}
}
