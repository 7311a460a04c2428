package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"golang.org/x/net/http/httpguts"
)

// Access tokens of connections with oauth2 client credentials (SPEC §6).
const (
	// MaxTokenAnswer is the most of a token endpoint's answer that is read; a longer answer is
	// refused.
	MaxTokenAnswer = 64 << 10
	// DefaultTokenLifetime is the lifetime of a token whose answer has no usable expires_in.
	DefaultTokenLifetime = 5 * time.Minute
	// MaxTokenLifetime caps the lifetime of a token, whatever its expires_in says.
	MaxTokenLifetime = 24 * time.Hour
	// MaxTokenMargin caps how long before the end of its lifetime a token is replaced: a tenth of
	// the lifetime, at most this.
	MaxTokenMargin = time.Minute
	// maxTokens bounds the cache; when it is full, the entries without a fetch in flight are
	// dropped.
	maxTokens = 1024
)

// TokenError is a failure to obtain an access token from a connection's token endpoint. Its
// message holds the endpoint's status, or why there was no usable answer, and never the answer's
// body, the token or the credentials.
type TokenError struct {
	// Status is the token endpoint's HTTP status, 0 when it did not answer.
	Status int
	// Err is why there was no answer (a transport error, a refused URL), or why an answer was not
	// usable; nil for an answer refused for its status alone.
	Err error
}

func (e *TokenError) Error() string {
	switch {
	case e.Status != 0 && e.Err == nil:
		return fmt.Sprintf("oauth2 token endpoint answered %d", e.Status)
	case e.Status != 0:
		return fmt.Sprintf("oauth2 token endpoint answered %d: %v", e.Status, e.Err)
	default:
		return fmt.Sprintf("oauth2 token endpoint: %v", e.Err)
	}
}

// Unwrap returns Err.
func (e *TokenError) Unwrap() error { return e.Err }

// tokens obtains access tokens by the client credentials grant (RFC 6749 §4.4) and caches them per
// connection and credentials (tokenKey). Calls of one connection that find no usable token share
// one fetch.
type tokens struct {
	policy    netguard.Policy
	timeout   time.Duration
	userAgent string
	now       func() time.Time

	mu      sync.Mutex
	entries map[string]*tokenEntry
}

// tokenEntry is the cached token of one key.
type tokenEntry struct {
	// token is "" when there is none to use (none fetched yet, or dropped after a 401).
	token string
	// renewAt is when the token stops being used: its lifetime less the margin.
	renewAt time.Time
	// fetch is the fetch in flight, nil when none.
	fetch *tokenFetch
}

// tokenFetch is one fetch from a token endpoint; done is closed when token or err is set.
type tokenFetch struct {
	done  chan struct{}
	token string
	err   error
}

// doFunc sends a request through one of the Sender's guarded clients.
type doFunc func(*http.Request) (*http.Response, error)

func newTokens(policy netguard.Policy, timeout time.Duration, userAgent string) *tokens {
	return &tokens{policy: policy, timeout: timeout, userAgent: userAgent, now: time.Now,
		entries: map[string]*tokenEntry{}}
}

// tokenKey names the token of connection conn obtained with o: changed credentials (another token
// URL, client, secret or scopes) get another token. The credentials are in it only as a hash.
func tokenKey(conn string, o *event.OAuth2) string {
	b, _ := json.Marshal(o)
	sum := sha256.Sum256(b)
	return conn + "\x00" + hex.EncodeToString(sum[:16])
}

// get returns the token of key, obtained with o through do: the cached one while it is in its
// lifetime less the margin, else a fresh one. A fetch runs on its own, within the webhook timeout,
// so that a caller that gives up (ctx) does not fail the others waiting for it; an error is a
// *TokenError.
func (ts *tokens) get(ctx context.Context, key string, o *event.OAuth2, do doFunc) (string, error) {
	ts.mu.Lock()
	e := ts.entries[key]
	if e == nil {
		if len(ts.entries) >= maxTokens {
			for k, old := range ts.entries {
				if old.fetch == nil {
					delete(ts.entries, k)
				}
			}
		}
		e = &tokenEntry{}
		ts.entries[key] = e
	}
	if e.token != "" && ts.now().Before(e.renewAt) {
		tok := e.token
		ts.mu.Unlock()
		return tok, nil
	}
	f := e.fetch
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		e.fetch = f
		go ts.run(e, f, *o, do)
	}
	ts.mu.Unlock()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timeout: %w", err)
		}
		return "", &TokenError{Err: err}
	}
}

// drop forgets the token of key if it is still tok (the webhook refused it), so that the next get
// fetches a new one; a token fetched meanwhile is kept.
func (ts *tokens) drop(key, tok string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e := ts.entries[key]; e != nil && e.token == tok {
		e.token = ""
	}
}

// run makes fetch f of entry e and publishes its outcome. The lifetime counts from the moment the
// token was asked for.
func (ts *tokens) run(e *tokenEntry, f *tokenFetch, o event.OAuth2, do doFunc) {
	asked := ts.now()
	tok, life, err := ts.fetch(o, do)
	ts.mu.Lock()
	if err == nil {
		e.token, e.renewAt = tok, asked.Add(life-min(life/10, MaxTokenMargin))
	}
	e.fetch = nil
	ts.mu.Unlock()
	f.token, f.err = tok, err
	close(f.done)
}

// fetch asks o's token endpoint, through do, for a token by the client credentials grant: a form
// POST of grant_type=client_credentials and the space-separated scopes, the client authenticated
// by HTTP Basic with its id and secret form-url-encoded (RFC 6749 §2.3.1). It returns the token
// and its lifetime.
func (ts *tokens) fetch(o event.OAuth2, do doFunc) (string, time.Duration, error) {
	if err := ts.policy.CheckURL(o.TokenURL); err != nil {
		return "", 0, &TokenError{Err: err}
	}
	ctx := context.Background()
	if ts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ts.timeout)
		defer cancel()
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(o.Scopes) > 0 {
		form.Set("scope", strings.Join(o.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &TokenError{Err: fmt.Errorf("%w: the token URL does not parse", netguard.ErrForbiddenURL)}
	}
	req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", ts.userAgent)
	resp, err := do(req)
	if err != nil {
		return "", 0, &TokenError{Err: cleanError(err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxTokenAnswer))
		return "", 0, &TokenError{Status: resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxTokenAnswer+1))
	if err != nil {
		return "", 0, &TokenError{Status: resp.StatusCode, Err: fmt.Errorf("read answer: %w", cleanError(err))}
	}
	if len(b) > MaxTokenAnswer {
		return "", 0, &TokenError{Status: resp.StatusCode, Err: fmt.Errorf("answer longer than %d bytes", MaxTokenAnswer)}
	}
	tok, life, err := parseToken(b)
	if err != nil {
		return "", 0, &TokenError{Status: resp.StatusCode, Err: err}
	}
	return tok, life, nil
}

// parseToken reads a successful token answer (RFC 6749 §5.1): access_token, sendable as an HTTP
// field value; token_type Bearer (any case; absent is taken for Bearer); expires_in in seconds, a
// number or a string of one, DefaultTokenLifetime when absent or not positive, at most
// MaxTokenLifetime. Its errors never quote the answer.
func parseToken(b []byte) (string, time.Duration, error) {
	var ans struct {
		AccessToken *string         `json:"access_token"`
		TokenType   *string         `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return "", 0, errors.New("the answer is not a JSON object with access_token")
	}
	if ans.AccessToken == nil || *ans.AccessToken == "" {
		return "", 0, errors.New("the answer has no access_token")
	}
	tok := *ans.AccessToken
	if !httpguts.ValidHeaderFieldValue(tok) || strings.TrimSpace(tok) != tok {
		return "", 0, errors.New("the access_token cannot be sent in an HTTP header")
	}
	if ans.TokenType != nil && *ans.TokenType != "" && !strings.EqualFold(*ans.TokenType, "bearer") {
		return "", 0, errors.New("the token_type is not Bearer")
	}
	life := DefaultTokenLifetime
	if s := strings.Trim(string(ans.ExpiresIn), `"`); s != "" {
		if n, err := strconv.ParseFloat(s, 64); err == nil && n >= 1 {
			life = time.Duration(min(n, MaxTokenLifetime.Seconds())) * time.Second
		}
	}
	return tok, life, nil
}
