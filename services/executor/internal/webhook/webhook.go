// Package webhook calls users' webhooks (SPEC §6): it builds the request with its headers and
// Standard Webhooks signature, sends it through one shared SSRF-guarded transport, and classifies
// the answer as done, retryable, ignored or refused.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
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
	// CAFile adds PEM roots to the system ones (WEBHOOK_CA_FILE).
	CAFile string
	// MaxIdleConnsPerHost sizes the keep-alive pool per receiver.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost caps the connections to one receiver (0: no cap); further calls wait for a
	// free connection within their WEBHOOK_TIMEOUT instead of each opening a TLS connection.
	MaxConnsPerHost int
	// UserAgent is sent on every call.
	UserAgent string
}

// Sender sends webhook calls through one shared transport.
type Sender struct {
	client    *http.Client
	policy    netguard.Policy
	timeout   time.Duration
	userAgent string
	now       func() time.Time
}

// NewSender builds the shared transport: keep-alive, TLS roots from the system plus CAFile, a
// dialer that refuses non-public addresses after DNS resolution, and no redirects.
func NewSender(cfg Config) (*Sender, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook: read CA file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook: CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	idle := max(cfg.MaxIdleConnsPerHost, 2)
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           cfg.Policy.Dialer(ConnectTimeout).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   ConnectTimeout,
		MaxIdleConns:          idle * 4,
		MaxIdleConnsPerHost:   idle,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Sender{
		client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		policy:    cfg.Policy,
		timeout:   cfg.Timeout,
		userAgent: cfg.UserAgent,
		now:       time.Now,
	}, nil
}

// Close releases idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// Body is the JSON body of a call.
type Body struct {
	PrivacyRequestID string             `json:"privacy_request_id"`
	PolicyKey        string             `json:"policy_key"`
	Direction        event.Direction    `json:"direction"`
	CallbackType     event.CallbackType `json:"callback_type"`
	Identity         event.Identity     `json:"identity"`
}

// Call is one webhook call.
type Call struct {
	Secrets event.HTTPSSecrets
	Body    Body
	// WebhookID is the Standard Webhooks webhook-id: the same on every repeat of this call.
	WebhookID string
	// ReplyTo and ReplyToken are set on pre-execution two-way calls only.
	ReplyTo    string
	ReplyToken string
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

// WebhookID derives the Standard Webhooks webhook-id of a call from what identifies it: the same
// request, callback type, webhook and step run give the same id.
func WebhookID(requestID string, ct event.CallbackType, webhookID string, run int) string {
	sum := sha256.Sum256([]byte(requestID + "\x00" + string(ct) + "\x00" + webhookID + "\x00" + strconv.Itoa(run)))
	return "msg_" + hex.EncodeToString(sum[:16])
}

// SigningKey returns the HMAC key of a signing secret: the base64-decoded bytes after a "whsec_"
// prefix (the Standard Webhooks format), else the secret's raw bytes.
func SigningKey(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, errors.New("signing_secret has the whsec_ prefix but is not base64")
		}
		return key, nil
	}
	return []byte(secret), nil
}

// Sign returns the webhook-signature value for id, timestamp and body.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Send makes the call once. It never returns an error: every failure is in the Result.
func (s *Sender) Send(ctx context.Context, c Call) Result {
	start := s.now()
	res := s.send(ctx, c)
	res.Latency = s.now().Sub(start)
	return res
}

func (s *Sender) send(ctx context.Context, c Call) Result {
	if err := s.policy.CheckURL(c.Secrets.URL); err != nil {
		return Result{Err: err, Forbidden: true}
	}
	body, err := json.Marshal(c.Body)
	if err != nil {
		return Result{Err: fmt.Errorf("encode body: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Secrets.URL, bytes.NewReader(body))
	if err != nil {
		return Result{Err: fmt.Errorf("build request: %w", err), Forbidden: true}
	}
	for name, value := range c.Secrets.Headers {
		req.Header.Set(name, value)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)
	if c.Secrets.Authorization != "" {
		req.Header.Set("Authorization", c.Secrets.Authorization)
	}
	if c.ReplyTo != "" {
		req.Header.Set("reply-to", c.ReplyTo)
		req.Header.Set("reply-to-token", c.ReplyToken)
	}
	if c.Secrets.SigningSecret != "" {
		key, err := SigningKey(c.Secrets.SigningSecret)
		if err != nil {
			return Result{Err: err, Forbidden: true}
		}
		ts := s.now().Unix()
		req.Header.Set("webhook-id", c.WebhookID)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", Sign(key, c.WebhookID, ts, body))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Result{Err: cleanError(err), Forbidden: errors.Is(err, netguard.ErrForbiddenAddress)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	res := Result{Status: resp.StatusCode, Body: answer, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.now())}
	if err != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		res.Err = fmt.Errorf("read answer: %w", cleanError(err))
	}
	return res
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
