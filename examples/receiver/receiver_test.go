package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHaltThenResume(t *testing.T) {
	var mu sync.Mutex
	var resumed []string
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(200)
	}))
	defer callback.Close()

	var log bytes.Buffer
	rcv := NewReceiver(Options{Halt: true, DerivedPhone: "555-0100", ResumeAfter: 10 * time.Millisecond, CallbackBase: callback.URL}, &syncWriter{w: &log})
	srv := httptest.NewServer(rcv)
	defer srv.Close()

	body := `{"privacy_request_id":"pri_1","policy_key":"p","direction":"two_way","callback_type":"pre","identity":{"email":"secret@example.com","phone_number":null}}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
	req.Header.Set("reply-to", "/api/v1/privacy-request/pri_1/resume")
	req.Header.Set("reply-to-token", "tok123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		DerivedIdentity map[string]string `json:"derived_identity"`
		Halt            bool              `json:"halt"`
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &answer); err != nil || !answer.Halt || answer.DerivedIdentity["phone_number"] != "555-0100" {
		t.Fatalf("answer = %s, want halt and derived phone", b)
	}
	rcv.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 1 || resumed[0] != "/api/v1/privacy-request/pri_1/resume Bearer tok123" {
		t.Fatalf("resume posts = %q", resumed)
	}
	if strings.Contains(log.String(), "secret@example.com") {
		t.Fatal("the receiver logged an identity value")
	}
	if !strings.Contains(log.String(), "resumed request pri_1: HTTP 200") { // the README's quickstart waits for it
		t.Fatalf("log %q lacks the resume's outcome", log.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestResumeOnEnter(t *testing.T) {
	var mu sync.Mutex
	var resumed []string
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.URL.Path)
		mu.Unlock()
	}))
	defer callback.Close()
	rcv := NewReceiver(Options{Halt: true, ResumeOnEnter: true, CallbackBase: callback.URL}, io.Discard)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	for _, id := range []string{"pri_a", "pri_b"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"privacy_request_id":"`+id+`","direction":"two_way","callback_type":"pre"}`))
		req.Header.Set("reply-to", "/api/v1/privacy-request/"+id+"/resume")
		req.Header.Set("reply-to-token", "tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	if len(resumed) != 0 {
		t.Fatalf("resumed %q before any keypress", resumed)
	}
	mu.Unlock()
	// One Enter resumes the first halted request only; a third with nothing halted does nothing.
	rcv.ResumeOnEnter(strings.NewReader("\n"))
	mu.Lock()
	if len(resumed) != 1 || resumed[0] != "/api/v1/privacy-request/pri_a/resume" {
		t.Fatalf("after one Enter resumed %q, want pri_a only", resumed)
	}
	mu.Unlock()
	rcv.ResumeOnEnter(strings.NewReader("\n\n"))
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 2 || resumed[1] != "/api/v1/privacy-request/pri_b/resume" {
		t.Fatalf("resumed %q, want pri_a then pri_b", resumed)
	}
}

// TestResumeRetries: a resume answered 503 (the callback could not reach NATS), 429 or 500 is
// posted again with the same token until an answer is final; a 4xx is final at once.
func TestResumeRetries(t *testing.T) {
	for _, tt := range []struct {
		name    string
		answers []int // the callback's answers in turn; the last repeats
		posts   int
	}{
		{"503 then 200", []int{503, 503, 200}, 3},
		{"429 then 200", []int{429, 200}, 2},
		{"500 then 409", []int{500, 409}, 2},
		{"400 is final", []int{400, 200}, 1},
		{"200 at once", []int{200}, 1},
		{"503 for good", []int{503}, resumeAttempts},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var tokens []string
			callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n := len(tokens)
				tokens = append(tokens, r.Header.Get("Authorization"))
				mu.Unlock()
				status := tt.answers[min(n, len(tt.answers)-1)]
				if status == 503 {
					w.Header().Set("Retry-After", "0")
				}
				w.WriteHeader(status)
			}))
			defer callback.Close()
			rcv := NewReceiver(Options{CallbackBase: callback.URL}, io.Discard)
			rcv.resumeWait = time.Millisecond
			rcv.post(reply{what: "resume", done: "resumed", id: "pri_1", url: "/api/v1/privacy-request/pri_1/resume", token: "tok123"})
			mu.Lock()
			defer mu.Unlock()
			if len(tokens) != tt.posts {
				t.Fatalf("%d posts, want %d", len(tokens), tt.posts)
			}
			for _, tok := range tokens {
				if tok != "Bearer tok123" {
					t.Fatalf("posted %q, want the same token every time", tok)
				}
			}
		})
	}
}

// TestPreApprovalReply: a pre-approval call is answered at once with 200 and no body to read; the
// receiver then posts the call's reply-to-token to its reply-to-eligible URL (reply-to-not-eligible
// with NotEligible), and to nothing else.
func TestPreApprovalReply(t *testing.T) {
	for _, tt := range []struct {
		notEligible bool
		want        string
	}{
		{false, "/api/v1/privacy-request/pri_pa/pre-approve/eligible Bearer tokPA"},
		{true, "/api/v1/privacy-request/pri_pa/pre-approve/not-eligible Bearer tokPA"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			var mu sync.Mutex
			var posts []string
			callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				posts = append(posts, r.URL.Path+" "+r.Header.Get("Authorization"))
				mu.Unlock()
			}))
			defer callback.Close()
			rcv := NewReceiver(Options{Halt: true, NotEligible: tt.notEligible, ResumeAfter: time.Millisecond}, io.Discard)
			srv := httptest.NewServer(rcv)
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL,
				strings.NewReader(`{"privacy_request_id":"pri_pa","direction":"two_way","callback_type":"pre_approval"}`))
			base := callback.URL + "/api/v1/privacy-request/pri_pa/pre-approve/"
			req.Header.Set("reply-to-eligible", base+"eligible")
			req.Header.Set("reply-to-not-eligible", base+"not-eligible")
			req.Header.Set("reply-to-token", "tokPA")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(b) != 0 {
				t.Fatalf("answer %d %q, want 200 and no body", resp.StatusCode, b)
			}
			rcv.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(posts) != 1 || posts[0] != tt.want {
				t.Fatalf("posts %q, want [%s]", posts, tt.want)
			}
		})
	}
}

// TestDerivedIdentityInFidesShape: two-way answers carry the configured derived identity in fides's
// shape, custom identities included, with -derived-email and -derived-phone set over it.
func TestDerivedIdentityInFidesShape(t *testing.T) {
	rcv := NewReceiver(Options{DerivedPhone: "555-0100",
		DerivedIdentity: `{"ga_client_id": "GA1.2", "phone_number": "1", "loyalty_id": {"label": "Loyalty ID", "value": "CH-1"}}`}, io.Discard)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json",
		strings.NewReader(`{"privacy_request_id":"pri_1","direction":"two_way","callback_type":"post"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"derived_identity":{"ga_client_id":"GA1.2","loyalty_id":{"label":"Loyalty ID","value":"CH-1"},"phone_number":"555-0100"},"halt":false}`
	if strings.TrimSpace(string(b)) != want {
		t.Fatalf("answer %s, want %s", b, want)
	}
}
