package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/testkit"
)

// haltThenResume is a two-way webhook receiver that answers {"halt": true}, flushes the whole
// answer to the executor, and then, with no delay, posts its reply-to-token to reply-to with an
// empty body, as an automated receiver that decides at once would. A 503 is retried after its
// Retry-After, as the callback asks; every answer of the callback is kept.
type haltThenResume struct {
	srv    *httptest.Server
	caFile string

	mu      sync.Mutex
	resumes []resumeAnswer
}

// resumeAnswer is what the callback answered one resume post.
type resumeAnswer struct {
	RequestID string
	Status    int
	Body      string
}

func newHaltThenResume(t *testing.T) *haltThenResume {
	t.Helper()
	h := &haltThenResume{}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	h.caFile = filepath.Join(t.TempDir(), "halt-then-resume-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw})
	if err := os.WriteFile(h.caFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *haltThenResume) serve(w http.ResponseWriter, r *http.Request) {
	var call struct {
		ID string `json:"privacy_request_id"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &call)
	const answer = `{"halt": true}`
	// The length lets the executor read the whole answer at the flush, while this handler goes on.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, answer)
	w.(http.Flusher).Flush()

	replyTo, tok := r.Header.Get("reply-to"), r.Header.Get("reply-to-token")
	for attempt := 0; attempt < 20; attempt++ {
		status, body, retryAfter := h.resume(replyTo, tok)
		h.mu.Lock()
		h.resumes = append(h.resumes, resumeAnswer{RequestID: call.ID, Status: status, Body: body})
		h.mu.Unlock()
		if status != http.StatusServiceUnavailable {
			return
		}
		time.Sleep(retryAfter) // the wait the callback asked for
	}
}

// resume posts the token to replyTo and returns the answer's status, body and Retry-After.
func (h *haltThenResume) resume(replyTo, tok string) (int, string, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, replyTo, strings.NewReader(`{}`))
	if err != nil {
		return 0, err.Error(), 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error(), 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, string(body), max(time.Duration(secs)*time.Second, 100*time.Millisecond)
}

func (h *haltThenResume) answers() []resumeAnswer {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]resumeAnswer(nil), h.resumes...)
}

// TestD3ImmediateResumeAfterHalt pins D3: a receiver that resumed right after answering
// {"halt": true} reached the callback before the executor had recorded the pause, got 400
// (status in_processing), which it does not retry, and the request stayed paused until the pause
// expired. On the whole local stack, 10 requests halt at a receiver that flushes its answer and
// resumes at once: every request must complete, and no resume post may be answered 400.
func TestD3ImmediateResumeAfterHalt(t *testing.T) {
	h := newHaltThenResume(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &flow{t: t, ctx: ctx, dir: t.TempDir(), rcv: testkit.NewReceiver(t),
		env: map[string]string{"EXECUTION_STAGE": "skip", "WEBHOOK_CA_FILE": h.caFile}}
	f.startStack()

	f.mustAPI(http.MethodPatch, "/api/v1/policy", `[{"name": "eager", "key": "eager"}]`)
	f.connection("eager_ask", h.srv.URL+"/halt")
	f.mustAPI(http.MethodPut, "/api/v1/policy/eager/webhook/pre_execution",
		`[{"connection_config_key": "eager_ask", "direction": "two_way", "key": "ask", "name": "ask"}]`)

	const n = 10
	for i := range n {
		f.submit(fmt.Sprintf("pri_d3_%02d", i), "eager", "a@example.com")
	}
	for i := range n {
		f.waitStatus(fmt.Sprintf("pri_d3_%02d", i), "complete", 30*time.Second)
	}
	answers := h.answers()
	resumed := map[string]bool{}
	for _, a := range answers {
		if a.Status == http.StatusBadRequest {
			t.Errorf("resume of %s answered 400: %s", a.RequestID, a.Body)
		}
		if a.Status == http.StatusOK {
			resumed[a.RequestID] = true
		}
	}
	if len(resumed) != n {
		t.Errorf("%d requests resumed with 200, want %d; callback answers: %+v", len(resumed), n, answers)
	}
}
