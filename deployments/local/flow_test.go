package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// flow is a whole local stack (embedded NATS and FerretDB, config, callback and executor) with
// webhook receivers, driven through the public interfaces only: the config and callback REST APIs
// and the NATS subjects of SPEC §5.
type flow struct {
	t     *testing.T
	ctx   context.Context
	env   map[string]string
	dir   string
	stack *Stack
	nc    *nats.Conn
	js    jetstream.JetStream
	token string
	// rcv is the webhook receiver (HTTPS); the executor trusts it through WEBHOOK_CA_FILE.
	rcv *testkit.Receiver
	// consoleAddr is where the stack's console listens; empty (the default): no console.
	consoleAddr string
}

// webhookBody is the part of a webhook call's body the flows check.
type webhookBody struct {
	ID           string         `json:"privacy_request_id"`
	CallbackType string         `json:"callback_type"`
	Identity     event.Identity `json:"identity"`
}

func newFlow(t *testing.T, env map[string]string) *flow {
	t.Helper()
	return startFlow(t, env, "")
}

// startFlow is newFlow with the stack's console listening on consoleAddr (empty: no console).
func startFlow(t *testing.T, env map[string]string, consoleAddr string) *flow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &flow{t: t, ctx: ctx, env: map[string]string{}, dir: t.TempDir(), rcv: testkit.NewReceiver(t), consoleAddr: consoleAddr}
	for k, v := range env {
		f.env[k] = v
	}
	f.env["WEBHOOK_CA_FILE"] = f.rcv.CAFile()
	f.startStack()
	return f
}

// startStack starts a stack on the flow's data directory (again, after a stop: as a restart of
// make run would) and connects to it.
func (f *flow) startStack() {
	t := f.t
	t.Helper()
	stack, err := Start(f.ctx, Options{
		DataDir: f.dir, NATSAddr: "127.0.0.1:0", StoreAddr: "127.0.0.1:0",
		ConfigAddr: "127.0.0.1:0", CallbackAddr: "127.0.0.1:0", ExecutorAddr: "127.0.0.1:0", ConsoleAddr: f.consoleAddr,
		Log: &syncBuffer{b: &bytes.Buffer{}},
	}, func(k string) string { return f.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stack.Wait(); err != nil {
			t.Errorf("stack shutdown: %v", err)
		}
	})
	f.stack = stack
	if f.nc, err = nats.Connect(stack.NATSURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.nc.Close)
	f.js, _ = jetstream.New(f.nc)
	f.token = accessToken(t, f.ctx, stack)
}

// answer scripts path to answer every call with status 200 and body.
func (f *flow) answer(path, body string) {
	f.rcv.On(path, func(int, testkit.Call) testkit.Answer { return testkit.Answer{Body: body} })
}

// callsTo returns the calls to path of every request, in order.
func (f *flow) callsTo(path string) []testkit.Call { return f.rcv.CallsOf("", path) }

// api calls a REST endpoint with the root client's token and returns the status and body.
func (f *flow) api(method, url, body string) (int, []byte) {
	f.t.Helper()
	return f.call(method, url, body, "Bearer "+f.token)
}

func (f *flow) call(method, url, body, auth string) (int, []byte) {
	f.t.Helper()
	req, _ := http.NewRequestWithContext(f.ctx, method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *flow) mustAPI(method, path, body string) []byte {
	f.t.Helper()
	status, b := f.api(method, f.stack.ConfigURL+path, body)
	if status != 200 && status != 204 {
		f.t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	return b
}

type hookSpec struct{ key, direction, path string }

// policy creates one https connection per webhook through the config API and a policy with the
// given pre- and post-execution webhooks.
func (f *flow) policy(key string, pre, post []hookSpec) {
	f.t.Helper()
	f.mustAPI(http.MethodPatch, "/api/v1/policy", fmt.Sprintf(`[{"name": %q, "key": %q}]`, key, key))
	list := func(hs []hookSpec) string {
		var items []string
		for _, h := range hs {
			conn := key + "_" + h.key
			f.connection(conn, f.rcv.URL(h.path))
			items = append(items, fmt.Sprintf(`{"connection_config_key": %q, "direction": %q, "key": %q, "name": %q}`,
				conn, h.direction, h.key, h.key))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	f.mustAPI(http.MethodPut, "/api/v1/policy/"+key+"/webhook/pre_execution", list(pre))
	f.mustAPI(http.MethodPut, "/api/v1/policy/"+key+"/webhook/post_execution", list(post))
}

// connection creates or updates the https connection key, its secrets a URL and a bearer token
// (saved without verification).
func (f *flow) connection(key, url string) {
	f.t.Helper()
	f.mustAPI(http.MethodPatch, "/api/v1/connection",
		fmt.Sprintf(`[{"name": %q, "key": %q, "connection_type": "https", "access": "read"}]`, key, key))
	f.mustAPI(http.MethodPut, "/api/v1/connection/"+key+"/secret?verify=false",
		fmt.Sprintf(`{"url": %q, "authorization": "Bearer flow-test"}`, url))
}

func (f *flow) submit(id, policy, email string) {
	f.t.Helper()
	b, _ := json.Marshal(event.Submitted{ID: id, PolicyKey: policy, Identity: event.Identity{Email: &email}})
	if _, err := f.js.Publish(f.ctx, event.SubjectSubmitted, b, jetstream.WithMsgID(id)); err != nil {
		f.t.Fatal(err)
	}
}

type requestView struct {
	Status         string          `json:"status"`
	Step           string          `json:"step"`
	ResumeEndpoint *string         `json:"resume_endpoint"`
	Error          json.RawMessage `json:"error"`
}

func (f *flow) view(id string) requestView {
	f.t.Helper()
	status, b := f.api(http.MethodGet, f.stack.CallbackURL+"/api/v1/privacy-request/"+id, "")
	var v requestView
	if status == 200 {
		_ = json.Unmarshal(b, &v)
	}
	return v
}

func (v requestView) String() string {
	return fmt.Sprintf("status %q (step %q, error %s)", v.Status, v.Step, v.Error)
}

func (f *flow) waitStatus(id, want string, within time.Duration) requestView {
	f.t.Helper()
	return testkit.WaitFor(f.t, within, fmt.Sprintf("request %s to be %s", id, want), func() (requestView, bool) {
		v := f.view(id)
		return v, v.Status == want
	})
}

func (f *flow) waitCalls(path string, n int, within time.Duration) []testkit.Call {
	f.t.Helper()
	return testkit.WaitFor(f.t, within, fmt.Sprintf("%d calls to %s", n, path), func() ([]testkit.Call, bool) {
		c := f.callsTo(path)
		return c, len(c) >= n
	})
}

func (f *flow) body(c testkit.Call) webhookBody {
	f.t.Helper()
	var b webhookBody
	c.Decode(f.t, &b)
	return b
}

// emails returns the identity email of each call ("" when it has none).
func (f *flow) emails(calls []testkit.Call) []string {
	f.t.Helper()
	out := []string{}
	for _, c := range calls {
		e := ""
		if b := f.body(c); b.Identity.Email != nil {
			e = *b.Identity.Email
		}
		out = append(out, e)
	}
	return out
}

// TestHaltResumeWithDerivedEmail: a two-way pre-webhook halts; the receiver posts its
// reply-to-token to reply-to with a derived email; the next pre-webhook, the data layer and the
// post-webhook see the new email; the same token again is refused with 409 and nothing runs twice.
func TestHaltResumeWithDerivedEmail(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "await"})
	f.answer("/halt", `{"halt": true}`)
	f.policy("halting", []hookSpec{{"ask", "two_way", "/halt"}, {"next", "one_way", "/next"}},
		[]hookSpec{{"after", "one_way", "/post"}})

	// The data layer de-duplicates on execution_id, as SPEC §5 asks of data layers: a core
	// subscription sees every publish of execute, and the executor may publish one run's execute
	// again (a write that lost a race with the executed answer is redone, its effects with it).
	var mu sync.Mutex
	executed := map[string][]string{}
	sub, err := f.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		var ex event.Execute
		_ = json.Unmarshal(m.Data, &ex)
		email := ""
		if ex.Identity.Email != nil {
			email = *ex.Identity.Email
		}
		mu.Lock()
		executed[ex.ExecutionID] = append(executed[ex.ExecutionID], email)
		mu.Unlock()
		b, _ := json.Marshal(event.Executed{ID: ex.ID, Succeeded: true})
		_, _ = f.js.Publish(f.ctx, event.SubjectExecuted, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	f.submit("pri_flow_1", "halting", "old@example.com")
	halt := f.waitCalls("/halt", 1, 20*time.Second)[0]
	v := f.waitStatus("pri_flow_1", "paused", 10*time.Second)
	if v.ResumeEndpoint == nil || *v.ResumeEndpoint != "/api/v1/privacy-request/pri_flow_1/resume" {
		t.Fatalf("resume_endpoint = %v", v.ResumeEndpoint)
	}
	replyTo, tok := halt.Header.Get("reply-to"), halt.Header.Get("reply-to-token")
	if replyTo != f.stack.CallbackURL+"/api/v1/privacy-request/pri_flow_1/resume" || tok == "" {
		t.Fatalf("reply-to = %q (token %d bytes), want the callback service's resume URL", replyTo, len(tok))
	}
	if n := len(f.callsTo("/next")); n != 0 {
		t.Fatalf("the next webhook ran while paused (%d calls)", n)
	}

	status, body := f.call(http.MethodPost, replyTo, `{"derived_identity": {"email": "new@example.com"}}`, "Bearer "+tok)
	if status != 200 || !strings.Contains(string(body), `"in_processing"`) {
		t.Fatalf("resume: %d %s, want 200 in_processing", status, body)
	}
	status, body = f.call(http.MethodPost, replyTo, `{}`, "Bearer "+tok)
	if status != 409 {
		t.Fatalf("second resume with the same token: %d %s, want 409", status, body)
	}

	f.waitStatus("pri_flow_1", "complete", 20*time.Second)
	if got := f.emails(f.callsTo("/next")); len(got) != 1 || got[0] != "new@example.com" {
		t.Fatalf("/next calls with emails %q; want 1 call with the derived email", got)
	}
	if got := f.emails(f.callsTo("/post")); len(got) != 1 || got[0] != "new@example.com" {
		t.Fatalf("/post calls with emails %q; want 1 with the derived email", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(executed) != 1 {
		t.Fatalf("the data layer saw %d execution runs (%q), want 1", len(executed), executed)
	}
	for run, emails := range executed {
		for _, e := range emails {
			if e != "new@example.com" {
				t.Fatalf("execute of run %s carried %q, want new@example.com (every copy: %q)", run, e, emails)
			}
		}
	}
	if n := len(f.callsTo("/halt")); n != 1 {
		t.Fatalf("/halt called %d times, want 1", n)
	}
}

// TestExpiredTokenThenPauseExpiry: with a short PRIVACY_REQUEST_DELAY_TIMEOUT the token is refused
// as expired and the paused request goes to error when its pause expires.
func TestExpiredTokenThenPauseExpiry(t *testing.T) {
	const delay = 2 * time.Second
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "PRIVACY_REQUEST_DELAY_TIMEOUT": delay.String()})
	f.answer("/halt", `{"halt": "true"}`)
	f.policy("short_pause", []hookSpec{{"ask", "two_way", "/halt"}, {"next", "one_way", "/next"}}, nil)
	f.submit("pri_flow_expired", "short_pause", "a@example.com")
	halt := f.waitCalls("/halt", 1, 20*time.Second)[0]
	f.waitStatus("pri_flow_expired", "paused", 10*time.Second)
	// Letting the token's lifetime pass is the thing under test, and no event marks its end: the
	// token was sealed to live PRIVACY_REQUEST_DELAY_TIMEOUT before the halt call carried it, so it
	// has expired delay after that call; the margin covers the whole-second expiry check.
	time.Sleep(time.Until(halt.At.Add(delay + 250*time.Millisecond)))
	status, body := f.call(http.MethodPost, halt.Header.Get("reply-to"), `{}`, "Bearer "+halt.Header.Get("reply-to-token"))
	if status != 403 || !strings.Contains(string(body), "Webhook token expired") {
		t.Fatalf("resume with an expired token: %d %s, want 403 Webhook token expired", status, body)
	}
	v := f.waitStatus("pri_flow_expired", "error", 20*time.Second)
	if v.Step != "pre_webhooks" {
		t.Fatalf("step = %q, want pre_webhooks", v.Step)
	}
	if n := len(f.callsTo("/next")); n != 0 {
		t.Fatalf("/next ran %d times after the pause expired", n)
	}
}

// TestRetryAfterWebhookFailure: a two-way webhook answering 404 sets error; after the receiver is
// fixed, POST /retry re-runs that step from its first webhook and the request completes.
func TestRetryAfterWebhookFailure(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	var broken sync.Mutex
	failing := true
	f.rcv.On("/lookup", func(int, testkit.Call) testkit.Answer {
		broken.Lock()
		defer broken.Unlock()
		if failing {
			return testkit.Answer{Status: 404, Body: "no such user"}
		}
		return testkit.Answer{Body: `{"derived_identity": {"phone_number": "555-0100"}}`}
	})
	f.policy("flaky", []hookSpec{{"first", "one_way", "/first"}, {"lookup", "two_way", "/lookup"}},
		[]hookSpec{{"after", "one_way", "/post"}})
	f.submit("pri_flow_retry", "flaky", "a@example.com")
	v := f.waitStatus("pri_flow_retry", "error", 20*time.Second)
	if !strings.Contains(string(v.Error), `"webhook_key":"lookup"`) && !strings.Contains(string(v.Error), `"webhook_key": "lookup"`) {
		t.Fatalf("error = %s, want it to name the lookup webhook", v.Error)
	}
	broken.Lock()
	failing = false
	broken.Unlock()
	status, body := f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_flow_retry/retry", "")
	if status != 200 {
		t.Fatalf("retry from error: %d %s, want 200", status, body)
	}
	f.waitStatus("pri_flow_retry", "complete", 20*time.Second)
	if n := len(f.callsTo("/first")); n != 2 {
		t.Fatalf("/first called %d times, want 2 (the step restarts from its first webhook)", n)
	}
	post := f.callsTo("/post")
	if len(post) != 1 || f.body(post[0]).Identity.PhoneNumber == nil || *f.body(post[0]).Identity.PhoneNumber != "555-0100" {
		t.Fatalf("/post calls = %v, want 1 with the derived phone number", post)
	}
	status, body = f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_flow_retry/retry", "")
	if status != 400 || !strings.Contains(string(body), "status = complete") {
		t.Fatalf("retry of a complete request: %d %s, want 400", status, body)
	}
}

// TestSubmitRightAfterAPolicyChange: a request submitted as soon as config answered a change of its
// policy's webhooks runs on the changed plan (SPEC §5.1, step 1), not on the one an executor's
// watch of policy_webhooks may still hold. Each round replaces the policy's list with a webhook of
// its own and submits at once; each request must call its round's webhook, and only that one.
func TestSubmitRightAfterAPolicyChange(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	const rounds = 10
	f.policy("changing", nil, nil)
	for i := range rounds {
		f.connection(fmt.Sprintf("changing_r%d", i), f.rcv.URL(fmt.Sprintf("/r%d", i)))
	}
	for i := range rounds {
		f.mustAPI(http.MethodPut, "/api/v1/policy/changing/webhook/pre_execution",
			fmt.Sprintf(`[{"connection_config_key": "changing_r%d", "direction": "one_way", "key": "r%d", "name": "r%d"}]`, i, i, i))
		f.submit(fmt.Sprintf("pri_changing_%d", i), "changing", "a@example.com")
	}
	for i := range rounds {
		f.waitStatus(fmt.Sprintf("pri_changing_%d", i), "complete", 20*time.Second)
	}
	for i := range rounds {
		calls := f.callsTo(fmt.Sprintf("/r%d", i))
		if len(calls) != 1 {
			t.Errorf("/r%d called %d times, want once (by pri_changing_%d)", i, len(calls), i)
			continue
		}
		if got := f.body(calls[0]).ID; got != fmt.Sprintf("pri_changing_%d", i) {
			t.Errorf("/r%d called for %s, want pri_changing_%d", i, got, i)
		}
	}
}

// TestPolicyKeyWithDots: a policy key with dots, valid for the API but not as a NATS KV key as it
// is, is stored under event.KVKey by config, found by the executor, and its plan removed when the
// policy is deleted. A key with a path meaning (leading, trailing or doubled dots) is refused at
// creation (D17).
func TestPolicyKeyWithDots(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	const key = "odd.key.v1"
	f.policy(key, []hookSpec{{"pre", "one_way", "/pre"}}, nil)
	f.submit("pri_flow_dots", key, "a@example.com")
	f.waitStatus("pri_flow_dots", "complete", 20*time.Second)
	if n := len(f.callsTo("/pre")); n != 1 {
		t.Fatalf("/pre called %d times, want 1", n)
	}
	kv, err := f.js.KeyValue(f.ctx, event.BucketPlans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(f.ctx, event.KVKey(key)); err != nil {
		t.Fatalf("plan under %q: %v", event.KVKey(key), err)
	}
	f.mustAPI(http.MethodDelete, "/api/v1/policy/"+key, "")
	if _, err := kv.Get(f.ctx, event.KVKey(key)); err == nil {
		t.Fatal("the plan of the deleted policy is still in policy_webhooks")
	}
	status, body := f.api(http.MethodPatch, f.stack.ConfigURL+"/api/v1/policy", `[{"name": "Odd", "key": ".odd..key."}]`)
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("a key with a path meaning: %d %s, want 422", status, body)
	}
}

// TestRestartKeepsConfigurationAndResumes: the local stack keeps its data under its directory, so a
// restart (as of make run) keeps the configuration and the paused request, and the token issued
// before the restart resumes it to completion.
func TestRestartKeepsConfigurationAndResumes(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.answer("/halt", `{"halt": true}`)
	f.policy("durable", []hookSpec{{"ask", "two_way", "/halt"}, {"next", "one_way", "/next"}},
		[]hookSpec{{"after", "one_way", "/post"}})
	f.submit("pri_restart", "durable", "a@example.com")
	halt := f.waitCalls("/halt", 1, 20*time.Second)[0]
	f.waitStatus("pri_restart", "paused", 10*time.Second)
	firstCallback := f.stack.CallbackURL

	if err := f.stack.Wait(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	f.nc.Close()
	f.startStack()

	hooks := string(f.mustAPI(http.MethodGet, "/api/v1/policy/durable/webhook/pre_execution", ""))
	if !strings.Contains(hooks, `"key":"ask"`) || !strings.Contains(hooks, `"key":"next"`) {
		t.Fatalf("after the restart the webhooks are %s", hooks)
	}
	if v := f.view("pri_restart"); v.Status != "paused" {
		t.Fatalf("after the restart the request is %q, want paused", v.Status)
	}
	// The receiver posts to reply-to; the stack came back on other ports in this test, so the
	// same path is posted to the new callback address.
	resumePath := strings.TrimPrefix(halt.Header.Get("reply-to"), firstCallback)
	status, body := f.call(http.MethodPost, f.stack.CallbackURL+resumePath, `{}`, "Bearer "+halt.Header.Get("reply-to-token"))
	if status != 200 {
		t.Fatalf("resume after restart: %d %s", status, body)
	}
	f.waitStatus("pri_restart", "complete", 20*time.Second)
	if n, m := len(f.callsTo("/halt")), len(f.callsTo("/next")); n != 1 || m != 1 {
		t.Fatalf("/halt called %d times, /next %d times; want 1 each", n, m)
	}
}
