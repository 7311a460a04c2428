package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/testkit"
)

// preApprovalView is the part of a request's view the pre-approval flow checks.
type preApprovalView struct {
	Status     string  `json:"status"`
	DenyReason *string `json:"deny_reason"`
	WaitingFor *struct {
		Reason      string   `json:"reason"`
		WebhookKeys []string `json:"webhook_keys"`
		Until       *string  `json:"until"`
	} `json:"waiting_for"`
	Webhooks []struct {
		Key          string  `json:"key"`
		CallbackType string  `json:"callback_type"`
		Reply        *string `json:"reply"`
	} `json:"webhooks"`
}

// TestPreApprovalFlow is fides's pre-approval flow through the whole stack, over the public
// interfaces only (SPEC §4.1, §5.2, §7): with PRE_APPROVAL=true and two pre-approval webhooks
// configured through the config API, every request first calls both with fides's reply-to headers;
// a request both reply eligible to runs on; one that one replies not eligible to waits for an
// operator, who approves it (it runs on) or denies it (denied, nothing else called). A replayed
// token and a token of another request are refused and change nothing.
func TestPreApprovalFlow(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "PRE_APPROVAL": "true"})
	f.policy("reviewed", []hookSpec{{"pre", "one_way", "/pre"}}, []hookSpec{{"post", "one_way", "/post"}})
	for _, k := range []string{"q", "r"} {
		f.mustAPI(http.MethodPatch, "/api/v1/connection",
			fmt.Sprintf(`[{"name": "approver %s", "key": "approver_%s", "connection_type": "https", "access": "read"}]`, k, k))
		f.mustAPI(http.MethodPut, "/api/v1/connection/approver_"+k+"/secret?verify=false",
			fmt.Sprintf(`{"url": %q, "authorization": "Bearer approver"}`, f.rcv.URL("/approve_"+k)))
	}
	f.mustAPI(http.MethodPut, "/api/v1/dsr/webhook/pre_approval",
		`[{"key": "q", "name": "q", "connection_config_key": "approver_q"}, {"key": "r", "name": "r", "connection_config_key": "approver_r"}]`)

	view := func(id string) preApprovalView {
		t.Helper()
		status, b := f.api(http.MethodGet, f.stack.CallbackURL+"/api/v1/privacy-request/"+id, "")
		var v preApprovalView
		if status != 200 || json.Unmarshal(b, &v) != nil {
			t.Fatalf("GET %s: %d %s", id, status, b)
		}
		return v
	}
	waitView := func(id, status string) preApprovalView {
		t.Helper()
		return testkit.WaitFor(t, 20*time.Second, id+" to be "+status, func() (preApprovalView, bool) {
			v := view(id)
			return v, v.Status == status
		})
	}
	// call returns request id's call to pre-approval webhook k, once both were called.
	call := func(id, k string) testkit.Call {
		t.Helper()
		return testkit.WaitFor(t, 20*time.Second, id+"'s pre-approval calls", func() (testkit.Call, bool) {
			q, r := f.rcv.CallsOf(id, "/approve_q"), f.rcv.CallsOf(id, "/approve_r")
			if len(q) == 0 || len(r) == 0 {
				return testkit.Call{}, false
			}
			if k == "q" {
				return q[0], true
			}
			return r[0], true
		})
	}
	reply := func(c testkit.Call, header string) (int, string) {
		t.Helper()
		status, b := f.call(http.MethodPost, c.Header.Get(header), "", "Bearer "+c.Header.Get("reply-to-token"))
		return status, string(b)
	}
	mustReply := func(id, k, header string) {
		t.Helper()
		if status, b := reply(call(id, k), header); status != 200 {
			t.Fatalf("%s: %s of %s: %d %s", id, header, k, status, b)
		}
	}

	for _, id := range []string{"pri_pa_all", "pri_pa_approved", "pri_pa_denied"} {
		f.submit(id, "reviewed", id+"@example.com")
	}

	// Every request calls both webhooks, with fides's headers, and waits for their replies.
	for _, id := range []string{"pri_pa_all", "pri_pa_approved", "pri_pa_denied"} {
		c := call(id, "q")
		base := f.stack.CallbackURL + "/api/v1/privacy-request/" + id + "/pre-approve/"
		if c.Header.Get("reply-to-eligible") != base+"eligible" || c.Header.Get("reply-to-not-eligible") != base+"not-eligible" ||
			c.Header.Get("reply-to-approve") != base+"eligible" || c.Header.Get("reply-to-deny") != base+"not-eligible" ||
			c.Header.Get("reply-to-token") == "" {
			t.Fatalf("%s: reply-to headers %v", id, c.Header)
		}
		var body map[string]any
		c.Decode(t, &body)
		if body["callback_type"] != "pre_approval" || body["privacy_request_status"] != "awaiting_pre_approval" {
			t.Errorf("%s: call body %v", id, body)
		}
		v := view(id)
		if v.Status != "awaiting_pre_approval" || v.WaitingFor == nil || v.WaitingFor.Reason != "pre_approval" ||
			!slices.Equal(v.WaitingFor.WebhookKeys, []string{"q", "r"}) || v.WaitingFor.Until == nil {
			t.Fatalf("%s: view %+v, want awaiting the replies of q and r", id, v)
		}
	}
	if n := len(f.callsTo("/pre")); n != 0 {
		t.Fatalf("the pre-execution webhook ran %d times before any approval", n)
	}

	// All eligible: the request runs on.
	mustReply("pri_pa_all", "q", "reply-to-eligible")
	testkit.WaitFor(t, 10*time.Second, "the view to wait for r only", func() (preApprovalView, bool) {
		v := view("pri_pa_all")
		return v, v.WaitingFor != nil && slices.Equal(v.WaitingFor.WebhookKeys, []string{"r"})
	})
	mustReply("pri_pa_all", "r", "reply-to-approve") // the deprecated name of reply-to-eligible
	waitView("pri_pa_all", "complete")

	// A replayed token is refused at either URL, and changes nothing.
	for _, h := range []string{"reply-to-eligible", "reply-to-not-eligible"} {
		if status, b := reply(call("pri_pa_all", "q"), h); status != http.StatusConflict {
			t.Errorf("replayed token at %s: %d %s, want 409", h, status, b)
		}
	}

	// One not eligible: an operator reviews the request.
	mustReply("pri_pa_approved", "q", "reply-to-eligible")
	mustReply("pri_pa_approved", "r", "reply-to-not-eligible")
	mustReply("pri_pa_denied", "r", "reply-to-deny")
	for _, id := range []string{"pri_pa_approved", "pri_pa_denied"} {
		v := waitView(id, "pre_approval_not_eligible")
		if v.WaitingFor == nil || v.WaitingFor.Reason != "review" {
			t.Errorf("%s: waiting for %+v, want review", id, v.WaitingFor)
		}
	}
	// A token of another request is refused, and changes nothing.
	other := call("pri_pa_approved", "q")
	status, b := f.call(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_pa_denied/pre-approve/eligible", "",
		"Bearer "+other.Header.Get("reply-to-token"))
	if status != http.StatusBadRequest {
		t.Errorf("a token of another request: %d %s, want 400", status, b)
	}
	// A reply after the request left awaiting_pre_approval is refused.
	if status, b := reply(call("pri_pa_denied", "q"), "reply-to-eligible"); status != http.StatusBadRequest {
		t.Errorf("q's reply after r's not-eligible: %d %s, want 400", status, b)
	}
	// Approving and denying need privacy-request:review: a pre-approval reply-to-token is no
	// operator's token.
	if status, b := f.call(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_pa_approved/approve", "",
		"Bearer "+other.Header.Get("reply-to-token")); status != http.StatusForbidden {
		t.Errorf("approve with a reply-to-token: %d %s, want 403", status, b)
	}

	if status, b := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_pa_approved/approve", ""); status != 200 {
		t.Fatalf("approve: %d %s", status, b)
	}
	if status, b := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_pa_denied/deny",
		`{"reason": "not a customer"}`); status != 200 {
		t.Fatalf("deny: %d %s", status, b)
	}
	waitView("pri_pa_approved", "complete")
	denied := waitView("pri_pa_denied", "denied")
	if denied.DenyReason == nil || *denied.DenyReason != "not a customer" || denied.WaitingFor != nil {
		t.Errorf("denied view %+v", denied)
	}
	if status, b := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_pa_denied/approve", ""); status != http.StatusBadRequest {
		t.Errorf("approve a denied request: %d %s, want 400", status, b)
	}

	// What ran: both approved requests, once each; nothing of the denied one.
	for _, path := range []string{"/pre", "/post"} {
		var ids []string
		for _, c := range f.callsTo(path) {
			ids = append(ids, f.body(c).ID)
		}
		slices.Sort(ids)
		if want := []string{"pri_pa_all", "pri_pa_approved"}; !slices.Equal(ids, want) {
			t.Errorf("%s called for %v, want %v", path, ids, want)
		}
	}
	for _, id := range []string{"pri_pa_all", "pri_pa_approved", "pri_pa_denied"} {
		for _, k := range []string{"q", "r"} {
			if n := len(f.rcv.CallsOf(id, "/approve_"+k)); n != 1 {
				t.Errorf("%s: pre-approval webhook %s called %d times, want 1", id, k, n)
			}
		}
	}
	replies := map[string]string{}
	for _, w := range view("pri_pa_approved").Webhooks {
		if w.CallbackType == "pre_approval" && w.Reply != nil {
			replies[w.Key] = *w.Reply
		}
	}
	if replies["q"] != "eligible" || replies["r"] != "not_eligible" {
		t.Errorf("replies in the view %v", replies)
	}
}
