package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure the receiver.
type Options struct {
	Addr string
	// Verifier checks the signatures of every call (a call that fails is answered 401); nil: calls
	// are not checked.
	Verifier     *Verifier
	Halt         bool
	DerivedEmail string
	DerivedPhone string
	// DerivedIdentity is a derived identity in fides's shape (a JSON object: standard fields and
	// custom identities {"label", "value"}); DerivedEmail and DerivedPhone are set over it.
	DerivedIdentity string
	// NotEligible makes the receiver reply not eligible to pre-approval calls (eligible otherwise).
	NotEligible   bool
	ResumeAfter   time.Duration
	ResumeOnEnter bool
	CallbackBase  string
}

// reply is a token this receiver posts back later: the resume of a request it halted, or the
// reply to a pre-approval call. what names the post ("resume"), done its success ("resumed").
type reply struct{ what, done, id, url, token string }

// Call is the body policyhooks posts to a webhook.
type Call struct {
	PrivacyRequestID string          `json:"privacy_request_id"`
	PolicyKey        string          `json:"policy_key"`
	Direction        string          `json:"direction"`
	CallbackType     string          `json:"callback_type"`
	Identity         json.RawMessage `json:"identity"`
}

// Receiver is an http.Handler answering policy webhook calls.
type Receiver struct {
	opts   Options
	log    io.Writer
	client *http.Client
	mu     sync.Mutex
	wg     sync.WaitGroup
	queue  chan reply
	// resumeWait is the wait after a first failed resume post (resumeBackoff; tests shorten it).
	resumeWait time.Duration
}

// NewReceiver returns a receiver logging to log.
func NewReceiver(o Options, log io.Writer) *Receiver {
	return &Receiver{opts: o, log: log, client: &http.Client{Timeout: 10 * time.Second}, queue: make(chan reply, 1024),
		resumeWait: resumeBackoff}
}

// Wait waits for pending resume posts.
func (r *Receiver) Wait() { r.wg.Wait() }

func (r *Receiver) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	if r.opts.Verifier != nil {
		if err := r.opts.Verifier.Verify(req.Header, body, time.Now()); err != nil {
			r.logf("REFUSED call: %v", err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
	}
	var c Call
	if err := json.Unmarshal(body, &c); err != nil {
		http.Error(w, "not a policy webhook call", http.StatusBadRequest)
		return
	}
	r.logf("%s %s call for request %s (policy %s, webhook-id %s, verified=%v)",
		c.CallbackType, c.Direction, c.PrivacyRequestID, c.PolicyKey, req.Header.Get("webhook-id"), r.opts.Verifier != nil)
	if c.CallbackType == "pre_approval" {
		// fides's pre-approval webhook: answer at once, reply later at one of the reply URLs.
		w.WriteHeader(http.StatusOK)
		what, header := "eligible", "reply-to-eligible"
		if r.opts.NotEligible {
			what, header = "not eligible", "reply-to-not-eligible"
		}
		if url, tok := req.Header.Get(header), req.Header.Get("reply-to-token"); url != "" && tok != "" {
			r.later(reply{what: "reply " + what + " to", done: "replied " + what + " to", id: c.PrivacyRequestID, url: url, token: tok})
		}
		return
	}
	if c.Direction != "two_way" {
		w.WriteHeader(http.StatusOK)
		return
	}
	answer := map[string]any{}
	if derived := r.derived(); len(derived) > 0 {
		answer["derived_identity"] = derived
	}
	replyTo, tok := req.Header.Get("reply-to"), req.Header.Get("reply-to-token")
	halt := r.opts.Halt && c.CallbackType == "pre" && replyTo != "" && tok != ""
	answer["halt"] = halt
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
	if halt {
		r.logf("halted request %s; will resume it via %s", c.PrivacyRequestID, replyTo)
		r.later(reply{what: "resume", done: "resumed", id: c.PrivacyRequestID, url: replyTo, token: tok})
	}
}

// derived returns the derived identity two-way calls are answered with: DerivedIdentity, with
// DerivedEmail and DerivedPhone set over it.
func (r *Receiver) derived() map[string]any {
	derived := map[string]any{}
	if r.opts.DerivedIdentity != "" {
		_ = json.Unmarshal([]byte(r.opts.DerivedIdentity), &derived) // checked in main
	}
	if r.opts.DerivedEmail != "" {
		derived["email"] = r.opts.DerivedEmail
	}
	if r.opts.DerivedPhone != "" {
		derived["phone_number"] = r.opts.DerivedPhone
	}
	return derived
}

// later posts p's token back after ResumeAfter, or when Enter is pressed (ResumeOnEnter).
func (r *Receiver) later(p reply) {
	switch {
	case r.opts.ResumeOnEnter:
		r.queue <- p
		r.logf("press Enter to %s request %s", p.what, p.id)
	case r.opts.ResumeAfter > 0:
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			time.Sleep(r.opts.ResumeAfter)
			r.post(p)
		}()
	}
}

// ResumeOnEnter posts the waiting tokens back in order (resumes and pre-approval replies), one per
// line read from in (a keypress of Enter on a terminal).
func (r *Receiver) ResumeOnEnter(in io.Reader) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		select {
		case p := <-r.queue:
			r.post(p)
		default:
			r.logf("no request waits for this receiver")
		}
	}
}

// resumeAttempts bounds the posts of one reply-to-token; resumeBackoff is the wait after the first
// failed one, doubled after each, unless the answer's Retry-After asks for longer (up to
// maxResumeWait). Eight attempts span about a minute: more than a NATS leader election.
const (
	resumeAttempts = 8
	resumeBackoff  = 500 * time.Millisecond
	maxResumeWait  = 30 * time.Second
)

// post posts a reply-to-token back (a resume, or a pre-approval reply), as a receiver does once its
// own work is done. A 503 (the callback could not reach NATS; nothing was recorded), a 429, any
// other 5xx or no answer at all is tried again with the same token after a backoff; a 2xx or
// another 4xx is final (409: an earlier post with the token went through).
func (r *Receiver) post(p reply) {
	url := p.url
	if strings.HasPrefix(url, "/") {
		url = strings.TrimRight(r.opts.CallbackBase, "/") + url
	}
	wait := r.resumeWait
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := r.postToken(url, p.token)
		switch {
		case err == nil && status < 500 && status != http.StatusTooManyRequests:
			r.logf("%s request %s: HTTP %d", p.done, p.id, status)
			return
		case attempt == resumeAttempts:
			r.logf("%s %s: giving up after %d attempts (last: HTTP %d, %v)", p.what, p.id, attempt, status, err)
			return
		}
		next := max(wait, min(retryAfter, maxResumeWait))
		r.logf("%s %s: attempt %d got HTTP %d (%v); trying again in %v", p.what, p.id, attempt, status, err, next)
		time.Sleep(next)
		wait = min(2*wait, maxResumeWait)
	}
}

// postToken makes one post of the token and returns the answer's status and its Retry-After
// (seconds; zero when absent), or the error of a post that got no answer.
func (r *Receiver) postToken(url, tok string) (status int, retryAfter time.Duration, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(`{}`)))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}
