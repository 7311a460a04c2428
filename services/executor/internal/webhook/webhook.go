// Package webhook calls users' webhooks (SPEC §6): it builds the request with its headers and
// Standard Webhooks signatures, obtains the connection's OAuth2 access token when it has client
// credentials, sends both the token request and the call through one shared SSRF-guarded
// transport (through the operator's proxy when there is one), or through a transport of the
// connection's own when it presents a client certificate, and classifies the answer as done,
// retryable, ignored or refused.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"golang.org/x/net/http/httpguts"
)

// MaxAnswer is the most of an answer's body that is read.
const MaxAnswer = 1 << 20

// ConnectTimeout bounds the TCP connect of a call.
const ConnectTimeout = 5 * time.Second

// Config configures a Sender.
type Config struct {
	// Timeout bounds a whole call (WEBHOOK_TIMEOUT).
	Timeout time.Duration
	// Policy says which URLs and addresses may be called.
	Policy netguard.Policy
	// Roots are the trusted roots of the calls' TLS handshakes; nil is the system roots.
	Roots *x509.CertPool
	// MaxIdleConnsPerHost sizes the keep-alive pool per receiver.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost caps the calls in progress to one receiver, and so its connections (0: no
	// cap); further calls wait for a free call slot within their WEBHOOK_TIMEOUT instead of each
	// opening a TLS connection.
	MaxConnsPerHost int
	// UserAgent is sent on every call.
	UserAgent string
}

// Sender sends webhook calls through one shared transport, and the calls of connections with a
// client certificate through transports of their own built alike (clientTransports).
type Sender struct {
	client    *http.Client
	policy    netguard.Policy
	timeout   time.Duration
	userAgent string
	now       func() time.Time
	// perHost bounds the calls in progress to one host (scheme and host:port), 0: no cap. slots
	// holds the slots of each host called so far (one small channel per host, kept).
	perHost int
	slotsMu sync.Mutex
	slots   map[string]chan struct{}
	// tokens are the access tokens of connections with oauth2 client credentials.
	tokens *tokens
	// certs are the clients of connections with a client certificate.
	certs *clientTransports
}

// NewSender builds the shared transport: keep-alive, TLS roots cfg.Roots, the policy's dialer
// (which judges the host asked for, and every address after DNS resolution, and goes through the
// policy's proxy when it has one), none of the environment's proxy settings (a proxy of their own
// would connect in the guard's place) and no redirects.
func NewSender(cfg Config) *Sender {
	client := newClient(cfg, nil)
	return &Sender{
		client:    client,
		policy:    cfg.Policy,
		timeout:   cfg.Timeout,
		userAgent: cfg.UserAgent,
		now:       time.Now,
		perHost:   cfg.MaxConnsPerHost,
		slots:     map[string]chan struct{}{},
		tokens:    newTokens(cfg.Policy, cfg.Timeout, cfg.UserAgent),
		certs:     newClientTransports(func(cert *tls.Certificate) *http.Client { return newClient(cfg, cert) }),
	}
}

// newClient returns a client over a transport of cfg that presents cert in its TLS handshakes
// (none when nil), whether the server names acceptable authorities or not.
func newClient(cfg Config, cert *tls.Certificate) *http.Client {
	idle := max(cfg.MaxIdleConnsPerHost, 2)
	tlsConfig := &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tlsConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           cfg.Policy.Dialer(ConnectTimeout).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   ConnectTimeout,
		MaxIdleConns:          idle * 4,
		MaxIdleConnsPerHost:   idle,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Close releases idle connections, those of the connections' own transports included.
func (s *Sender) Close() {
	s.client.CloseIdleConnections()
	s.certs.close()
}

// Body is the JSON body of a call: fidesops's fields, then fides's (SPEC §6). A receiver written
// for either finds what it reads.
type Body struct {
	PrivacyRequestID string             `json:"privacy_request_id"`
	PolicyKey        string             `json:"policy_key"`
	Direction        event.Direction    `json:"direction"`
	CallbackType     event.CallbackType `json:"callback_type"`
	Identity         event.Identity     `json:"identity"`
	// PrivacyRequestStatus is the request's status when the call is made.
	PrivacyRequestStatus event.Status `json:"privacy_request_status"`
	// PolicyAction is fides's action type of the policy (access, erasure, consent); null when the
	// policy has no drp_action.
	PolicyAction *string `json:"policy_action"`
	// Timestamp is when this attempt was made.
	Timestamp time.Time `json:"timestamp"`
	// PrivacyRequest summarises the request, without personal data.
	PrivacyRequest RequestSummary `json:"privacy_request"`
}

// RequestSummary is the non-personal part of a privacy request that calls carry (fides's
// privacy_request object).
type RequestSummary struct {
	ID                  string       `json:"id"`
	Status              event.Status `json:"status"`
	PolicyKey           string       `json:"policy_key"`
	ExternalID          *string      `json:"external_id"`
	CreatedAt           time.Time    `json:"created_at"`
	StartedProcessingAt *time.Time   `json:"started_processing_at"`
	// DueDate is when the request is due: its creation plus the policy's execution_timeframe in
	// days; null when the policy has none.
	DueDate *time.Time `json:"due_date"`
}

// NewBody returns the body of a call of a webhook of direction and callback type ct for req, with
// ident and the time of the attempt.
func NewBody(req *event.Request, direction event.Direction, ct event.CallbackType, ident event.Identity, now time.Time) Body {
	b := Body{PrivacyRequestID: req.ID, PolicyKey: req.PolicyKey, Direction: direction, CallbackType: ct,
		Identity: ident, PrivacyRequestStatus: req.Status, Timestamp: now.UTC(),
		PrivacyRequest: RequestSummary{ID: req.ID, Status: req.Status, PolicyKey: req.PolicyKey,
			CreatedAt: req.CreatedAt, StartedProcessingAt: req.StartedProcessingAt}}
	if req.Plan.PolicyAction != "" {
		action := req.Plan.PolicyAction
		b.PolicyAction = &action
	}
	if req.ExternalID != "" {
		ext := req.ExternalID
		b.PrivacyRequest.ExternalID = &ext
	}
	if days := req.Plan.ExecutionTimeframe; days > 0 {
		due := req.CreatedAt.AddDate(0, 0, days)
		b.PrivacyRequest.DueDate = &due
	}
	return b
}

// Call is one webhook call.
type Call struct {
	// ConnectionKey names the connection of Secrets: its OAuth2 access token is cached under it.
	ConnectionKey string
	Secrets       event.HTTPSSecrets
	Body          Body
	// WebhookID is the Standard Webhooks webhook-id: the same on every repeat of this call.
	WebhookID string
	// ReplyTo is the resume URL of a pre-execution two-way call; ReplyEligible and
	// ReplyNotEligible are the reply URLs of a pre-approval call. ReplyToken goes with either.
	ReplyTo          string
	ReplyEligible    string
	ReplyNotEligible string
	ReplyToken       string
	// Slot is the call slot taken for this call (TryAcquire, Acquire); Send takes one when nil.
	Slot *Slot
}

// Result is what a call produced.
type Result struct {
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	Body   []byte
	// Err is the transport error (or a refused URL) when there was no answer.
	Err error
	// Forbidden reports that the URL or address was refused by the network policy.
	Forbidden bool
	// RetryAfter is the parsed Retry-After header, 0 when absent.
	RetryAfter time.Duration
	Latency    time.Duration
}

// Slot is a call slot of one webhook host, taken by TryAcquire or Acquire and released by the Send
// of the call it was taken for (or by Release, when the call is not made after all).
type Slot struct {
	ch  chan struct{} // the host's slots; nil when no slot is held
	err error
}

// Err reports why Acquire got no slot (none freed within the webhook timeout, or ctx ended); a
// call is not made without one.
func (sl *Slot) Err() error { return sl.err }

// Release gives the slot back; Send calls it, and a caller that does not send after all must.
// Releasing twice is harmless.
func (sl *Slot) Release() {
	if sl.ch != nil {
		<-sl.ch
		sl.ch = nil
	}
}

// hostSlots returns the slots of rawURL's host (scheme and host:port), nil when calls are not
// capped or the URL does not parse (the call reports it).
func (s *Sender) hostSlots(rawURL string) chan struct{} {
	if s.perHost <= 0 {
		return nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil
	}
	key := strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host)
	s.slotsMu.Lock()
	defer s.slotsMu.Unlock()
	ch, ok := s.slots[key]
	if !ok {
		ch = make(chan struct{}, s.perHost)
		s.slots[key] = ch
	}
	return ch
}

// TryAcquire takes a call slot of rawURL's host if one is free now; nil otherwise.
func (s *Sender) TryAcquire(rawURL string) *Slot {
	sl := &Slot{}
	ch := s.hostSlots(rawURL)
	if ch == nil {
		return sl
	}
	select {
	case ch <- struct{}{}:
		sl.ch = ch
		return sl
	default:
		return nil
	}
}

// Acquire takes a call slot of rawURL's host, waiting at most WEBHOOK_TIMEOUT; Err says why a slot
// could not be taken.
func (s *Sender) Acquire(ctx context.Context, rawURL string) *Slot {
	sl := &Slot{}
	ch := s.hostSlots(rawURL)
	if ch == nil {
		return sl
	}
	select {
	case ch <- struct{}{}:
		sl.ch = ch
		return sl
	default:
	}
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case ch <- struct{}{}:
		sl.ch = ch
	case <-t.C:
		sl.err = errors.New("timeout: no free connection to the webhook host within the webhook timeout")
	case <-ctx.Done():
		sl.err = ctx.Err()
	}
	return sl
}

// Send makes the call once, in c.Slot (taken here when nil, and released in any case), within
// WEBHOOK_TIMEOUT from now. It never returns an error: every failure is in the Result.
func (s *Sender) Send(ctx context.Context, c Call) Result {
	start := s.now()
	if c.Slot == nil {
		// The slot is taken before anything of the call is built: with thousands of calls waiting
		// for one host, each waits with no request, body or connection state.
		c.Slot = s.Acquire(ctx, c.Secrets.URL)
		start = s.now()
	}
	defer c.Slot.Release()
	res := s.send(ctx, c, start.Add(s.timeout))
	res.Latency = s.now().Sub(start)
	return res
}

// send makes the call within deadline. With oauth2 credentials it first gets the connection's
// access token, and when the webhook answers 401 it drops that token and makes the call once more
// with a fresh one.
func (s *Sender) send(ctx context.Context, c Call, deadline time.Time) Result {
	if c.Slot.err != nil {
		return Result{Err: c.Slot.err}
	}
	if err := s.policy.CheckURL(c.Secrets.URL); err != nil {
		return Result{Err: err, Forbidden: true}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	body, err := json.Marshal(c.Body)
	if err != nil {
		return Result{Err: fmt.Errorf("encode body: %w", err)}
	}
	header, err := s.header(c, body)
	if err != nil {
		return Result{Err: err, Forbidden: true}
	}
	// traceparent (and tracestate) of the call's span, so that receivers can join the request's
	// trace; the signatures cover the body alone, so they do not change.
	tracing.InjectHTTP(ctx, header)
	// A connection with a client certificate presents it in its calls and token requests alike.
	client, certID, err := s.clientFor(c)
	if err != nil {
		return Result{Err: err, Forbidden: true}
	}
	o := c.Secrets.OAuth2
	if o == nil {
		if c.Secrets.Authorization != "" {
			header.Set("Authorization", c.Secrets.Authorization)
		}
		return s.post(ctx, client, c.Secrets.URL, header, body)
	}
	// A token obtained with another certificate may be bound to it (RFC 8705 §3): one per certificate.
	key := tokenKey(c.ConnectionKey, o) + certID
	tok, err := s.tokens.get(ctx, key, o, client.Do)
	if err != nil {
		return tokenFailure(err)
	}
	header.Set("Authorization", "Bearer "+tok)
	res := s.post(ctx, client, c.Secrets.URL, header, body)
	if res.Status != http.StatusUnauthorized {
		return res
	}
	// The token was revoked or expired early: once more with a fresh one, in this attempt.
	s.tokens.drop(key, tok)
	if tok, err = s.tokens.get(ctx, key, o, client.Do); err != nil {
		return tokenFailure(err)
	}
	header.Set("Authorization", "Bearer "+tok)
	return s.post(ctx, client, c.Secrets.URL, header, body)
}

// clientFor returns the client of call c: the shared one, or the one of its connection's client
// certificate, with "" or the certificate's cache id. Its error is a certificate and key that
// cannot be used, which a retry does not fix.
func (s *Sender) clientFor(c Call) (*http.Client, string, error) {
	sec := c.Secrets
	if sec.ClientCertificate == "" && sec.ClientKey == "" {
		return s.client, "", nil
	}
	id := certID(sec.ClientCertificate, sec.ClientKey)
	client, err := s.certs.get(c.ConnectionKey, id, sec.ClientCertificate, sec.ClientKey)
	return client, "\x00" + id, err
}

// header returns the headers of call c with body, but Authorization: the connection's headers,
// then the fixed ones, reply-to and the signatures. Its error is a header of the secrets that
// cannot be sent, or a signing secret or key that cannot be used.
func (s *Sender) header(c Call, body []byte) (http.Header, error) {
	h := http.Header{}
	for name, value := range c.Secrets.Headers {
		// net/http refuses such a header only when sending, as a transport error that a retry
		// cannot fix: refuse it here, for good and without echoing the value (D16). Config refuses
		// it at write; this covers secrets stored before it did.
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return nil, fmt.Errorf("header %q of the connection's secrets is not a valid RFC 9110 header", event.Reason(name))
		}
		h.Set(name, value)
	}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", s.userAgent)
	if c.ReplyTo != "" {
		h.Set("reply-to", c.ReplyTo)
		h.Set("reply-to-token", c.ReplyToken)
	}
	if c.ReplyEligible != "" {
		// fides's names, and the ones it used before them (reply-to-approve, reply-to-deny).
		h.Set("reply-to-eligible", c.ReplyEligible)
		h.Set("reply-to-not-eligible", c.ReplyNotEligible)
		h.Set("reply-to-approve", c.ReplyEligible)
		h.Set("reply-to-deny", c.ReplyNotEligible)
		h.Set("reply-to-token", c.ReplyToken)
	}
	if Signed(c.Secrets) {
		now := s.now()
		sig, err := Signature(c.Secrets, c.WebhookID, now, body)
		if err != nil {
			return nil, err
		}
		h.Set("webhook-id", c.WebhookID)
		h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		h.Set("webhook-signature", sig)
	}
	return h, nil
}

// post sends body to rawURL with header through client and reads at most MaxAnswer of the answer.
func (s *Sender) post(ctx context.Context, client *http.Client, rawURL string, header http.Header, body []byte) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %w", err), Forbidden: true}
	}
	req.Header = header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return Result{Err: cleanError(err), Forbidden: forbidden(err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	res := Result{Status: resp.StatusCode, Body: answer, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.now())}
	if err != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		res.Err = fmt.Errorf("read answer: %w", cleanError(err))
	}
	return res
}

// tokenFailure is the result of a call whose access token could not be obtained: retried like a
// call without an answer, refused for good when the guard refused the token URL.
func tokenFailure(err error) Result {
	return Result{Err: err, Forbidden: forbidden(err)}
}

// forbidden reports whether err is the network policy refusing a URL or an address.
func forbidden(err error) bool {
	return errors.Is(err, netguard.ErrForbiddenAddress) || errors.Is(err, netguard.ErrForbiddenURL)
}

// cleanError drops the URL from a client error (it may carry query secrets).
func cleanError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("timeout: %w", inner)
			}
			return inner
		}
	}
	return err
}

func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
