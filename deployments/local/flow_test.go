package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
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
	rcv   *httptest.Server

	mu       sync.Mutex
	calls    map[string][]webhookCall
	handlers map[string]func(webhookCall) (int, string)
}

type webhookCall struct {
	Header http.Header
	Body   struct {
		ID           string         `json:"privacy_request_id"`
		CallbackType string         `json:"callback_type"`
		Identity     event.Identity `json:"identity"`
	}
}

func newFlow(t *testing.T, env map[string]string) *flow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &flow{t: t, ctx: ctx, env: env, dir: t.TempDir(), calls: map[string][]webhookCall{},
		handlers: map[string]func(webhookCall) (int, string){}}
	f.rcv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c webhookCall
		c.Header = r.Header.Clone()
		_ = json.NewDecoder(r.Body).Decode(&c.Body)
		f.mu.Lock()
		f.calls[r.URL.Path] = append(f.calls[r.URL.Path], c)
		h := f.handlers[r.URL.Path]
		f.mu.Unlock()
		status, body := 200, ""
		if h != nil {
			status, body = h(c)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(f.rcv.Close)
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
		ConfigAddr: "127.0.0.1:0", CallbackAddr: "127.0.0.1:0", ExecutorAddr: "127.0.0.1:0",
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

func (f *flow) on(path string, h func(webhookCall) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[path] = h
}

func (f *flow) callsTo(path string) []webhookCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]webhookCall(nil), f.calls[path]...)
}

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
			f.mustAPI(http.MethodPatch, "/api/v1/connection",
				fmt.Sprintf(`[{"name": %q, "key": %q, "connection_type": "https", "access": "read"}]`, conn, conn))
			f.mustAPI(http.MethodPut, "/api/v1/connection/"+conn+"/secret?verify=false",
				fmt.Sprintf(`{"url": %q, "authorization": "Bearer flow-test"}`, f.rcv.URL+h.path))
			items = append(items, fmt.Sprintf(`{"connection_config_key": %q, "direction": %q, "key": %q, "name": %q}`,
				conn, h.direction, h.key, h.key))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	f.mustAPI(http.MethodPut, "/api/v1/policy/"+key+"/webhook/pre_execution", list(pre))
	f.mustAPI(http.MethodPut, "/api/v1/policy/"+key+"/webhook/post_execution", list(post))
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

func (f *flow) waitStatus(id, want string, within time.Duration) requestView {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := f.view(id)
		if v.Status == want {
			return v
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("request %s: status %q (step %q, error %s), want %q", id, v.Status, v.Step, v.Error, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *flow) waitCalls(path string, n int, within time.Duration) []webhookCall {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if c := f.callsTo(path); len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s called %d times, want %d", path, len(f.callsTo(path)), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func email(c webhookCall) string {
	if c.Body.Identity.Email == nil {
		return ""
	}
	return *c.Body.Identity.Email
}

// TestHaltResumeWithDerivedEmail: a two-way pre-webhook halts; the receiver posts its
// reply-to-token to reply-to with a derived email; the next pre-webhook, the data layer and the
// post-webhook see the new email; the same token again is refused with 409 and nothing runs twice.
func TestHaltResumeWithDerivedEmail(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "await"})
	f.on("/halt", func(webhookCall) (int, string) { return 200, `{"halt": true}` })
	f.policy("halting", []hookSpec{{"ask", "two_way", "/halt"}, {"next", "one_way", "/next"}},
		[]hookSpec{{"after", "one_way", "/post"}})

	var mu sync.Mutex
	var executed []string
	sub, err := f.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		var ex event.Execute
		_ = json.Unmarshal(m.Data, &ex)
		mu.Lock()
		if ex.Identity.Email != nil {
			executed = append(executed, *ex.Identity.Email)
		}
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
	next := f.callsTo("/next")
	if len(next) != 1 || email(next[0]) != "new@example.com" {
		t.Fatalf("/next calls %d, email %q; want 1 call with the derived email", len(next), email(next[0]))
	}
	post := f.callsTo("/post")
	if len(post) != 1 || email(post[0]) != "new@example.com" {
		t.Fatalf("/post calls %d; want 1 with the derived email", len(post))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(executed) != 1 || executed[0] != "new@example.com" {
		t.Fatalf("the data layer saw %q, want [new@example.com]", executed)
	}
	if n := len(f.callsTo("/halt")); n != 1 {
		t.Fatalf("/halt called %d times, want 1", n)
	}
}

// TestExpiredTokenThenPauseExpiry: with a short PRIVACY_REQUEST_DELAY_TIMEOUT the token is refused
// as expired and the paused request goes to error when its pause expires.
func TestExpiredTokenThenPauseExpiry(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "PRIVACY_REQUEST_DELAY_TIMEOUT": "2s"})
	f.on("/halt", func(webhookCall) (int, string) { return 200, `{"halt": "true"}` })
	f.policy("short_pause", []hookSpec{{"ask", "two_way", "/halt"}, {"next", "one_way", "/next"}}, nil)
	f.submit("pri_flow_expired", "short_pause", "a@example.com")
	halt := f.waitCalls("/halt", 1, 20*time.Second)[0]
	f.waitStatus("pri_flow_expired", "paused", 10*time.Second)
	time.Sleep(3 * time.Second)
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
	f.on("/lookup", func(webhookCall) (int, string) {
		broken.Lock()
		defer broken.Unlock()
		if failing {
			return 404, "no such user"
		}
		return 200, `{"derived_identity": {"phone_number": "555-0100"}}`
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
	if len(post) != 1 || post[0].Body.Identity.PhoneNumber == nil || *post[0].Body.Identity.PhoneNumber != "555-0100" {
		t.Fatalf("/post calls = %d, want 1 with the derived phone number", len(post))
	}
	status, body = f.api(http.MethodPost, f.stack.CallbackURL+"/api/v1/privacy-request/pri_flow_retry/retry", "")
	if status != 400 || !strings.Contains(string(body), "status = complete") {
		t.Fatalf("retry of a complete request: %d %s, want 400", status, body)
	}
}

// TestPolicyKeyWithDots: a policy key that is valid for the API (^[a-zA-Z0-9_.-]+$) but not as a
// NATS KV key (leading, trailing or doubled dots) is stored under event.KVKey by config, found by
// the executor, and its plan removed when the policy is deleted.
func TestPolicyKeyWithDots(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.policy(".odd..key.", []hookSpec{{"pre", "one_way", "/pre"}}, nil)
	f.submit("pri_flow_dots", ".odd..key.", "a@example.com")
	f.waitStatus("pri_flow_dots", "complete", 20*time.Second)
	if n := len(f.callsTo("/pre")); n != 1 {
		t.Fatalf("/pre called %d times, want 1", n)
	}
	kv, err := f.js.KeyValue(f.ctx, event.BucketPlans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(f.ctx, event.KVKey(".odd..key.")); err != nil {
		t.Fatalf("plan under %q: %v", event.KVKey(".odd..key."), err)
	}
	f.mustAPI(http.MethodDelete, "/api/v1/policy/.odd..key.", "")
	if _, err := kv.Get(f.ctx, event.KVKey(".odd..key.")); err == nil {
		t.Fatal("the plan of the deleted policy is still in policy_webhooks")
	}
}

// TestRestartKeepsConfigurationAndResumes: the local stack keeps its data under its directory, so a
// restart (as of make run) keeps the configuration and the paused request, and the token issued
// before the restart resumes it to completion.
func TestRestartKeepsConfigurationAndResumes(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.on("/halt", func(webhookCall) (int, string) { return 200, `{"halt": true}` })
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
