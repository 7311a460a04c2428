package chaos

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// FailureRate is the share of calls the one-way, derive, slow and pre-approval receivers answer
// with 503.
const FailureRate = 0.08

// Call is one webhook call a receiver saw.
type Call struct {
	Hook         string
	At           time.Time // arrival
	AnsweredAt   time.Time // just before the answer was written; zero when never answered
	WebhookID    string
	SignatureErr string // empty when the Standard Webhooks signature verified
	CallbackType string
	Identity     event.Identity
	Status       int    // the status answered; 0 when the caller left first
	Halt         bool   // answered halt
	ReplyTo      string // header reply-to, or reply-to-eligible for a pre-approval call
	HasToken     bool
}

// TokenPost is one attempt of a receiver to post a call's reply-to-token back: the halting
// receiver's resume, or the pre-approval receiver's eligible reply.
type TokenPost struct {
	At     time.Time
	Status int    // 0 on a connection error
	Detail string // the error, or the start of the answer's body
}

// Receivers are the HTTPS webhook receivers, one httptest server per Host, and everything they saw.
type Receivers struct {
	URLs    map[string]string // hook key → URL
	Secrets map[string]string // hook key → signing secret
	CAFile  string

	servers  map[Host]*httptest.Server
	specs    map[string]Spec
	start    time.Time
	ctx      context.Context
	cancel   context.CancelFunc
	resumers sync.WaitGroup
	client   *http.Client

	rngMu sync.Mutex
	rng   *rand.Rand

	mu      sync.Mutex
	calls   map[string][]*Call
	resumes map[string][]*TokenPost
	replies map[string][]*TokenPost // eligible replies
	strays  []string                // calls naming no request of the stream
}

// NewReceivers starts the receivers and writes their CA to dir/receivers-ca.pem.
func NewReceivers(dir string, specs []Spec, seed uint64, start time.Time) (*Receivers, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Receivers{
		URLs: map[string]string{}, Secrets: map[string]string{},
		servers: map[Host]*httptest.Server{}, specs: map[string]Spec{},
		start: start, ctx: ctx, cancel: cancel,
		client: &http.Client{Timeout: 5 * time.Second},
		rng:    rand.New(rand.NewPCG(seed, 2)),
		calls:  map[string][]*Call{}, resumes: map[string][]*TokenPost{}, replies: map[string][]*TokenPost{},
	}
	for _, s := range specs {
		r.specs[s.ID] = s
	}
	for _, h := range Hooks {
		if r.servers[h.Host] == nil {
			r.servers[h.Host] = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				r.serve(h.Host, w, req)
			}))
		}
		r.URLs[h.Key] = r.servers[h.Host].URL + "/hook/" + h.Key
		r.Secrets[h.Key] = "whsec_" + base64.StdEncoding.EncodeToString([]byte("chaos-signing-"+h.Key+"-"+randomHex(8)))
	}
	// Every httptest server presents the same certificate; its PEM is the CA the services trust.
	cert := r.servers[HostFast].Certificate()
	r.CAFile = dir + "/receivers-ca.pem"
	if err := os.WriteFile(r.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close stops the token posts and the servers.
func (r *Receivers) Close() {
	r.cancel()
	for _, s := range r.servers {
		s.Close() // waits for the handlers
	}
	r.resumers.Wait()
}

func (r *Receivers) chance(p float64) bool {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.Float64() < p
}

func (r *Receivers) between(lo, hi time.Duration) time.Duration {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

type callBody struct {
	PrivacyRequestID string         `json:"privacy_request_id"`
	PolicyKey        string         `json:"policy_key"`
	Direction        string         `json:"direction"`
	CallbackType     string         `json:"callback_type"`
	Identity         event.Identity `json:"identity"`
}

func (r *Receivers) serve(host Host, w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	key, _ := strings.CutPrefix(req.URL.Path, "/hook/")
	i := HookIndex(key)
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	var cb callBody
	if i < 0 || Hooks[i].Host != host || err != nil || json.Unmarshal(body, &cb) != nil {
		r.mu.Lock()
		r.strays = append(r.strays, fmt.Sprintf("+%.3fs %s %s on host %s: %.200s", at.Sub(r.start).Seconds(), req.Method, req.URL.Path, host, body))
		r.mu.Unlock()
		http.Error(w, "unknown hook", http.StatusNotFound)
		return
	}
	hook := Hooks[i]
	replyTo := req.Header.Get("reply-to")
	if hook.Behaviour == Eligible {
		replyTo = req.Header.Get("reply-to-eligible")
	}
	c := &Call{
		Hook: key, At: at, WebhookID: req.Header.Get("webhook-id"), CallbackType: cb.CallbackType,
		Identity: cb.Identity, ReplyTo: replyTo, HasToken: req.Header.Get("reply-to-token") != "",
		SignatureErr: verifySignature(r.Secrets[key], req.Header, body),
	}
	r.mu.Lock()
	spec, known := r.specs[cb.PrivacyRequestID]
	if !known {
		r.strays = append(r.strays, fmt.Sprintf("+%.3fs call of %s for unknown request %q", at.Sub(r.start).Seconds(), key, cb.PrivacyRequestID))
	}
	r.calls[cb.PrivacyRequestID] = append(r.calls[cb.PrivacyRequestID], c)
	r.mu.Unlock()

	if host == HostSlow {
		select {
		case <-time.After(r.between(time.Second, 2500*time.Millisecond)):
		case <-req.Context().Done():
			return // the caller left (timeout, or its process died): never answered
		}
	}
	status, answer := http.StatusOK, []byte(`{}`)
	switch {
	case hook.Behaviour != Halt && r.chance(FailureRate):
		status, answer = http.StatusServiceUnavailable, []byte(`{"detail": "chaos: try again"}`)
	case hook.Behaviour == Halt:
		answer, _ = json.Marshal(map[string]any{"halt": true, "derived_identity": map[string]any{"phone_number": spec.DerivedPhone,
			"crm_id": map[string]string{"label": "CRM id", "value": spec.DerivedCRM}}})
	case hook.Behaviour == Derive:
		answer, _ = json.Marshal(map[string]any{"derived_identity": map[string]string{"email": spec.DerivedEmail}})
	}
	r.mu.Lock()
	c.Status, c.AnsweredAt, c.Halt = status, time.Now(), status == http.StatusOK && hook.Behaviour == Halt
	r.mu.Unlock()
	// A Content-Length makes the answer complete once flushed, so that an immediate resume really
	// comes after the executor could read the whole answer.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(status)
	_, _ = w.Write(answer)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if c.ReplyTo == "" || !c.HasToken || !known {
		return
	}
	token := req.Header.Get("reply-to-token")
	switch {
	case c.Halt:
		r.resumers.Go(func() { r.post(r.resumes, cb.PrivacyRequestID, c.ReplyTo, token, spec.ResumeDelay) })
	case hook.Behaviour == Eligible && status == http.StatusOK:
		r.resumers.Go(func() { r.post(r.replies, cb.PrivacyRequestID, c.ReplyTo, token, spec.ReplyDelay) })
	}
}

// post posts a reply-to-token back to url as a careful receiver would, and records each attempt
// in into under request id: after delay, retrying connection errors and 5xx with backoff until the
// test ends, stopping on any other answer (200 done, 409 already used, other 4xx refused).
func (r *Receivers) post(into map[string][]*TokenPost, id, url, token string, delay time.Duration) {
	select {
	case <-time.After(delay):
	case <-r.ctx.Done():
		return
	}
	backoff := 100 * time.Millisecond
	for {
		p := &TokenPost{At: time.Now()}
		req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, url, strings.NewReader(`{}`))
		if err != nil {
			p.Detail = err.Error()
			r.addPost(into, id, p)
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := r.client.Do(req)
		if err != nil {
			p.Detail = err.Error()
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
			resp.Body.Close()
			p.Status, p.Detail = resp.StatusCode, string(bytes.TrimSpace(b))
		}
		if r.ctx.Err() != nil {
			return // the test ended: not an answer of the service
		}
		r.addPost(into, id, p)
		if err == nil && p.Status < 500 {
			return
		}
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (r *Receivers) addPost(into map[string][]*TokenPost, id string, p *TokenPost) {
	r.mu.Lock()
	defer r.mu.Unlock()
	into[id] = append(into[id], p)
}

// Calls returns a copy of the calls seen for request id, in arrival order.
func (r *Receivers) Calls(id string) []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return values(r.calls[id])
}

// Resumes returns a copy of the resume posts made for request id.
func (r *Receivers) Resumes(id string) []TokenPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return values(r.resumes[id])
}

// Replies returns a copy of the eligible replies posted for request id.
func (r *Receivers) Replies(id string) []TokenPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return values(r.replies[id])
}

// values copies what ps point to, so that callers read them without the lock.
func values[T any](ps []*T) []T {
	out := make([]T, 0, len(ps))
	for _, p := range ps {
		out = append(out, *p)
	}
	return out
}

// Strays returns the calls that named no hook or no request of the stream.
func (r *Receivers) Strays() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.strays...)
}

// verifySignature checks the Standard Webhooks headers of a call: webhook-id, webhook-timestamp
// and a "v1,<base64 HMAC-SHA256 of id.timestamp.body>" among the webhook-signature values. It
// returns what is wrong, or "".
func verifySignature(secret string, h http.Header, body []byte) string {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Sprintf("missing Standard Webhooks headers (webhook-id %q, webhook-timestamp %q, webhook-signature %q)", id, ts, sigs)
	}
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		k, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "bad test secret"
		}
		key = k
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return ""
		}
	}
	return "webhook-signature does not match"
}
