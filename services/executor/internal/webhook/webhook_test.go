package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

func TestParseTwoWay(t *testing.T) {
	for _, tc := range []struct {
		body      string
		wantEmail string
		wantHalt  bool
		wantErr   bool
		// derived is the JSON of the derived identity when set; errText a part of the error.
		derived, errText string
	}{
		{body: ""},
		{body: "  "},
		{body: "{}"},
		{body: `{"halt": true}`, wantHalt: true},
		{body: `{"halt": "true"}`, wantHalt: true},
		{body: `{"halt": "false"}`},
		{body: `{"halt": null}`},
		{body: `{"derived_identity": {"email": "a@b"}, "other": 1}`, wantEmail: "a@b"},
		{body: `{"derived_identity": null}`},
		{body: `{"derived_identity": {"email": 5}}`, wantErr: true},
		{body: `{"derived_identity": {"name": "x"}}`, wantErr: true},
		{body: `{"derived_identity": "a@b"}`, wantErr: true},
		{body: `{"halt": 1}`, wantErr: true},
		{body: `{"halt": "yes"}`, wantErr: true},
		{body: `[]`, wantErr: true},
		{body: `"halt"`, wantErr: true},
		{body: `<html>`, wantErr: true},
		// D15: bounded derived values and reasons.
		{body: `{"derived_identity": {"email": "` + strings.Repeat("é", event.MaxIdentityValue) + `"}}`, wantEmail: strings.Repeat("é", event.MaxIdentityValue)},
		{body: `{"derived_identity": {"phone_number": "` + strings.Repeat("5", event.MaxIdentityValue+1) + `"}}`, wantErr: true},
		{body: `{"halt": "` + strings.Repeat("x", 400<<10) + `"}`, wantErr: true},
		// fides's identity shape.
		{body: `{"derived_identity": {"ga_client_id": "g", "ljt_readerID": "r", "fides_user_device_id": "d", "external_id": "x"}, "halt": true}`, wantHalt: true,
			derived: `{"email":null,"phone_number":null,"ga_client_id":"g","ljt_readerID":"r","fides_user_device_id":"d","external_id":"x"}`},
		{body: `{"derived_identity": {"email": "a@b", "loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}}`, wantEmail: "a@b",
			derived: `{"email":"a@b","phone_number":null,"loyalty_id":{"label":"Loyalty ID","value":"CH-1"}}`},
		{body: `{"derived_identity": {"loyalty_id": null}}`, derived: `{"email":null,"phone_number":null}`},
		{body: `{"derived_identity": {}}`, derived: `{"email":null,"phone_number":null}`},
		{body: `{"derived_identity": {"name": "x"}}`, wantErr: true, errText: `derived_identity has an unknown field "name" (a custom identity is an object {"label", "value"})`},
		{body: `{"derived_identity": {"Loyalty ID": {"label": "L", "value": "v"}}}`, wantErr: true, errText: `derived_identity has an unknown field "Loyalty ID"`},
		{body: `{"derived_identity": {"email": "a", "email": "b"}}`, wantErr: true, errText: `derived_identity.email is repeated`},
		{body: `{"derived_identity": {"k": {"label": "L", "value": "v"}, "k": {"label": "L", "value": "w"}}}`, wantErr: true, errText: `derived_identity.k is repeated`},
		{body: `{"derived_identity": {"ga_client_id": 1}}`, wantErr: true, errText: `derived_identity.ga_client_id is not a string`},
		{body: `{"derived_identity": {"k": {"label": "L", "value": 1}}}`, wantErr: true, errText: `derived_identity.k.value is not a string`},
		{body: `{"derived_identity": {"k": {"label": "L", "value": "v", "extra": "s"}}}`, wantErr: true, errText: `derived_identity.k has an unknown field "extra"`},
		{body: `{"derived_identity": {"k": {"label": "", "value": "v"}}}`, wantErr: true, errText: `derived identity.k.label is required`},
		{body: `{"derived_identity": {"k": {"label": "L", "value": "` + strings.Repeat("v", event.MaxIdentityValue+1) + `"}}}`, wantErr: true, errText: `derived identity.k.value is longer than 1024`},
		{body: `{"derived_identity": {"external_id": "` + strings.Repeat("v", event.MaxIdentityValue+1) + `"}}`, wantErr: true, errText: `derived identity.external_id is longer`},
		{body: `{"derived_identity": {` + manyCustom(event.MaxCustomIdentities+1) + `}}`, wantErr: true, errText: `derived identity has 21 custom identities`},
		{body: `null`, wantErr: true, errText: "not a JSON object"},
	} {
		d, halt, err := ParseTwoWay([]byte(tc.body))
		if err != nil && len(err.Error()) > event.MaxReason+64 {
			t.Errorf("error of %d bytes, want it bounded near %d: %.80s…", len(err.Error()), event.MaxReason, err)
		}
		if (err != nil) != tc.wantErr || halt != tc.wantHalt {
			t.Errorf("%q: halt %v err %v, want halt %v err %v", tc.body, halt, err, tc.wantHalt, tc.wantErr)
			continue
		}
		email := ""
		if d != nil && d.Email != nil {
			email = *d.Email
		}
		if email != tc.wantEmail {
			t.Errorf("%q: email %q, want %q", tc.body, email, tc.wantEmail)
		}
		if tc.errText != "" && (err == nil || !strings.Contains(err.Error(), tc.errText)) {
			t.Errorf("%q: err %v, want it to contain %q", tc.body, err, tc.errText)
		}
		if tc.derived != "" {
			got, _ := json.Marshal(d)
			if string(got) != tc.derived {
				t.Errorf("%q: derived %s, want %s", tc.body, got, tc.derived)
			}
		}
	}
}

// manyCustom returns n custom identities as members of a JSON object.
func manyCustom(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"k%d": {"label": "L", "value": "v"}`, i)
	}
	return b.String()
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		dir    event.Direction
		status int
		want   Verdict
	}{
		{event.OneWay, 200, Done}, {event.TwoWay, 204, Done},
		{event.OneWay, 301, Ignored}, {event.OneWay, 404, Ignored}, {event.TwoWay, 404, Refused}, {event.TwoWay, 302, Refused},
		{event.OneWay, 408, Retry}, {event.TwoWay, 429, Retry}, {event.OneWay, 500, Retry}, {event.TwoWay, 503, Retry},
	} {
		if got := Classify(tc.dir, Result{Status: tc.status}).Verdict; got != tc.want {
			t.Errorf("%s %d: verdict %d, want %d", tc.dir, tc.status, got, tc.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {"-1", 0}, {"soon", 0},
		{now.Add(10 * time.Second).Format("Mon, 02 Jan 2006 15:04:05 GMT"), 10 * time.Second},
		{now.Add(-time.Hour).Format("Mon, 02 Jan 2006 15:04:05 GMT"), 0},
	} {
		if got := retryAfter(tc.v, now); got != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.v, got, tc.want)
		}
	}
}

// TestNewBodyWithoutPolicyFacts: a policy without drp_action or execution_timeframe gives a call
// with policy_action and due_date null, and a request without external_id a null external_id; the
// fidesops fields are there as before.
func TestNewBodyWithoutPolicyFacts(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	req := &event.Request{ID: "pri_1", PolicyKey: "p", Status: event.StatusInProcessing, CreatedAt: created}
	b, err := json.Marshal(NewBody(req, event.TwoWay, event.Pre, event.Identity{}, created.Add(time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"privacy_request_id":"pri_1","policy_key":"p","direction":"two_way","callback_type":"pre",` +
		`"identity":{"email":null,"phone_number":null},"privacy_request_status":"in_processing","policy_action":null,` +
		`"timestamp":"2026-01-02T03:04:06Z","privacy_request":{"id":"pri_1","status":"in_processing","policy_key":"p",` +
		`"external_id":null,"created_at":"2026-01-02T03:04:05Z","started_processing_at":null,"due_date":null}}`
	if string(b) != want {
		t.Errorf("body\n got %s\nwant %s", b, want)
	}
}
