package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestScopedRetry: requests of two policies fail at their webhooks (one answering 400 for every
// request, one answering 503 until its attempts run out); once the receivers are mended, a scoped
// retry by policy and status restarts only the requests it names, which complete, while the
// others stay in error; the same retry again queues nothing; a retry filtered by connection picks
// up the rest. Every request ends complete, and errored_requests holds none of them (SPEC §7).
func TestScopedRetry(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "WEBHOOK_MAX_ATTEMPTS": "2",
		"WEBHOOK_RETRY_BASE_DELAY": "100ms", "WEBHOOK_RETRY_MAX_DELAY": "200ms"})
	var mu sync.Mutex
	mended := map[string]bool{}
	failing := func(path string, status int) {
		f.rcv.On(path, func(int, testkit.Call) testkit.Answer {
			mu.Lock()
			defer mu.Unlock()
			if mended[path] {
				return testkit.Answer{Body: `{}`}
			}
			return testkit.Answer{Status: status}
		})
	}
	failing("/crm", 400)
	failing("/mail", 503)
	f.policy("crm_policy", []hookSpec{{"lookup", "two_way", "/crm"}}, nil)
	f.policy("mail_policy", nil, []hookSpec{{"notify", "one_way", "/mail"}})
	crm := []string{"pri_replay_c1", "pri_replay_c2", "pri_replay_c3"}
	mail := []string{"pri_replay_m1", "pri_replay_m2"}
	for _, id := range crm {
		f.submit(id, "crm_policy", id+"@example.com")
	}
	for _, id := range mail {
		f.submit(id, "mail_policy", id+"@example.com")
	}
	for _, id := range append(append([]string(nil), crm...), mail...) {
		f.waitStatus(id, "error", 30*time.Second)
	}
	retry := func(body string) string {
		t.Helper()
		status, b := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/retry", body)
		if status != 200 {
			t.Fatalf("scoped retry %s: %d %s, want 200", body, status, b)
		}
		return strings.Join(strings.Fields(string(b)), "")
	}
	// Nothing matches yet: another status, another webhook.
	if got := retry(`{"policy_key": "crm_policy", "status": 503}`); got != `{"queued":0,"more":false}` {
		t.Fatalf("crm requests failed with 400, a filter on 503 queued %s", got)
	}
	mu.Lock()
	mended["/crm"], mended["/mail"] = true, true
	mu.Unlock()
	if got := retry(`{"policy_key": "crm_policy", "webhook_key": "lookup", "status": 400}`); got != `{"queued":3,"more":false}` {
		t.Fatalf("retry of the crm requests queued %s, want 3", got)
	}
	if got := retry(`{"policy_key": "crm_policy", "status": 400}`); got != `{"queued":0,"more":false}` {
		t.Fatalf("the same retry again queued %s, want 0", got)
	}
	for _, id := range crm {
		f.waitStatus(id, "complete", 30*time.Second)
	}
	for _, id := range mail {
		if v := f.view(id); v.Status != "error" {
			t.Fatalf("%s is %s, want still in error (not selected)", id, v)
		}
	}
	if got := retry(`{"connection_key": "mail_policy_notify", "errored_until": "` + time.Now().Add(time.Minute).UTC().Format(time.RFC3339) + `"}`); got != `{"queued":2,"more":false}` {
		t.Fatalf("retry by connection queued %s, want 2", got)
	}
	for _, id := range mail {
		f.waitStatus(id, "complete", 30*time.Second)
	}
	if got := retry(``); got != `{"queued":0,"more":false}` {
		t.Fatalf("with every request complete, a retry of all queued %s", got)
	}
	kv, err := f.js.KeyValue(f.ctx, "errored_requests")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "errored_requests to be empty", func() bool {
		lister, err := kv.ListKeys(f.ctx)
		if err != nil {
			return false
		}
		n := 0
		for range lister.Keys() {
			n++
		}
		return n == 0
	})
}
