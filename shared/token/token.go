// Package token seals and opens the encrypted tokens of the application: OAuth access tokens and
// the reply-to-token that lets a halting webhook resume a privacy request.
//
// Tokens are compact JWE with "alg": "dir" and "enc": "A256GCM" under a key derived from
// APP_ENCRYPTION_KEY for one purpose. Opening allows exactly that algorithm pair, refuses tokens
// longer than MaxLength before parsing, and requires an expiry.
package token

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxLength is the longest token Open parses, in bytes.
const MaxLength = 4096

var (
	// ErrInvalid reports a token that is too long, malformed, or does not decrypt under the key.
	ErrInvalid = errors.New("token: invalid")
	// ErrExpired reports a token that decrypted but whose expiry has passed.
	ErrExpired = errors.New("token: expired")
)

// Claims are the registered claims every token carries.
type Claims struct {
	ID       string `json:"jti,omitempty"`
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
}

func (c *Claims) registered() *Claims { return c }

// AccessClaims are the claims of an OAuth access token.
type AccessClaims struct {
	Claims
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// HasScope reports whether the token grants scope.
func (c AccessClaims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// ResumeClaims are the claims of a reply-to-token.
type ResumeClaims struct {
	Claims
	RequestID string   `json:"request_id"`
	WebhookID string   `json:"webhook_id"`
	Pause     int      `json:"pause"`
	Scopes    []string `json:"scopes"`
}

// HasScope reports whether the token grants scope.
func (c ResumeClaims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// PreApprovalClaims are the claims of a pre-approval webhook's reply-to-token: they name the request,
// the plan webhook and the run of the pre-approval stage it was issued in. Its jti is the call's
// webhook-id, so that every token of one webhook in one run is the same reply: a webhook replies
// once per request.
type PreApprovalClaims struct {
	Claims
	RequestID string   `json:"request_id"`
	WebhookID string   `json:"webhook_id"`
	Run       int      `json:"run"`
	Scopes    []string `json:"scopes"`
}

// HasScope reports whether the token grants scope.
func (c PreApprovalClaims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// Claimer is any claims type of this package: Claims embedded in it.
type Claimer interface{ registered() *Claims }

// Sealer seals and opens tokens under one key.
type Sealer struct {
	key []byte
	now func() time.Time
}

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("token: key must be 32 bytes, got %d", len(key))
	}
	return &Sealer{key: slices.Clone(key), now: time.Now}, nil
}

// WithClock returns a copy of the Sealer that reads the time from now; for tests.
func (s *Sealer) WithClock(now func() time.Time) *Sealer {
	c := *s
	c.now = now
	return &c
}

// Seal sets the claims' iat to now, exp to now+ttl and a random jti when it is empty, and returns
// the compact JWE.
func (s *Sealer) Seal(claims Claimer, ttl time.Duration) (string, error) {
	now := s.now()
	reg := claims.registered()
	reg.IssuedAt = now.Unix()
	reg.Expiry = now.Add(ttl).Unix()
	if reg.ID == "" {
		reg.ID = NewID()
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: s.key},
		(&jose.EncrypterOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("token: encrypter: %w", err)
	}
	out, err := jwt.Encrypted(enc).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("token: seal: %w", err)
	}
	return out, nil
}

// Open decrypts raw into claims and checks its expiry. It returns an error wrapping ErrInvalid for
// a token that is too long, malformed, of another algorithm, or sealed under another key, and
// ErrExpired (with the claims filled) for one that is past its expiry.
func (s *Sealer) Open(raw string, claims Claimer) error {
	if len(raw) > MaxLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLength)
	}
	tok, err := jwt.ParseEncrypted(raw, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := tok.Claims(s.key, claims); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	reg := claims.registered()
	if reg.Expiry == 0 {
		return fmt.Errorf("%w: no expiry", ErrInvalid)
	}
	if s.now().Unix() >= reg.Expiry {
		return ErrExpired
	}
	return nil
}

// NewID returns a random 128-bit identifier in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b[:])
}
