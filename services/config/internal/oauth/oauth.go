// Package oauth is the OAuth2 client-credentials server of SPEC §1.1: it issues access tokens,
// creates and deletes clients (secrets stored only as SHA-256 hashes), tells the Authorizer
// whether a client still exists, and mirrors client ids and scopes (never secrets) into the NATS
// KV bucket oauth_clients so that the other services honour a deletion at once.
package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// Scopes are every scope of SPEC §1.1.
var Scopes = []string{
	"client:create", "client:delete", "scope:read",
	"connection:read", "connection:create_or_update", "connection:delete",
	"policy:read", "policy:create_or_update", "policy:delete",
	"webhook:read", "webhook:create_or_update", "webhook:delete",
	"privacy-request:read", "privacy-request:resume",
}

// Client is a stored OAuth client.
type Client struct {
	ID         string
	SecretHash string
	Scopes     []string
	CreatedAt  time.Time
}

// MirrorEntry is the value of a client's key in the oauth_clients bucket.
type MirrorEntry struct {
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// Errors.
var (
	ErrBadCredentials = errors.New("oauth: bad client credentials")
	ErrNotFound       = errors.New("oauth: no such client")
	ErrRootClient     = errors.New("oauth: the root client is configured by OAUTH_ROOT_CLIENT_ID and cannot be deleted")
	// ErrScopeNotHeld reports a new client asking for a scope its creator lacks (403).
	ErrScopeNotHeld = errors.New("oauth: scope not held by the caller")
)

// UnknownScopeError names a scope that does not exist (422).
type UnknownScopeError struct{ Scope string }

func (e *UnknownScopeError) Error() string {
	return fmt.Sprintf("Invalid Scope. Scope '%s' does not exist.", e.Scope)
}

// Store persists clients.
type Store interface {
	InsertClient(ctx context.Context, c Client) error
	// GetClient returns ErrNotFound for an unknown id.
	GetClient(ctx context.Context, id string) (Client, error)
	// DeleteClient returns ErrNotFound for an unknown id.
	DeleteClient(ctx context.Context, id string) error
	AllClients(ctx context.Context) ([]Client, error)
}

// Root is the root client from the environment.
type Root struct {
	ID     string
	Secret string
}

// Service is the OAuth server.
type Service struct {
	store  Store
	mirror jetstream.KeyValue
	sealer *token.Sealer
	root   Root
	ttl    time.Duration
	log    zerolog.Logger
}

// NewService returns a Service issuing tokens sealed by sealer that live ttl.
func NewService(store Store, mirror jetstream.KeyValue, sealer *token.Sealer, root Root, ttl time.Duration, log zerolog.Logger) *Service {
	return &Service{store: store, mirror: mirror, sealer: sealer, root: root, ttl: ttl, log: log}
}

// TTL is the lifetime of the access tokens.
func (s *Service) TTL() time.Duration { return s.ttl }

func hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func equalHash(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// IssueToken checks the client credentials and returns an access token.
func (s *Service) IssueToken(ctx context.Context, id, secret string) (string, error) {
	if id == "" || secret == "" {
		return "", ErrBadCredentials
	}
	var scopes []string
	if id == s.root.ID {
		if !equalHash(hash(secret), hash(s.root.Secret)) {
			return "", ErrBadCredentials
		}
		scopes = Scopes
	} else {
		c, err := s.store.GetClient(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return "", ErrBadCredentials
		}
		if err != nil {
			return "", err
		}
		if !equalHash(hash(secret), c.SecretHash) {
			return "", ErrBadCredentials
		}
		scopes = c.Scopes
	}
	tok, err := s.sealer.Seal(&token.AccessClaims{ClientID: id, Scopes: slices.Clone(scopes)}, s.ttl)
	if err != nil {
		return "", fmt.Errorf("oauth: seal token: %w", err)
	}
	return tok, nil
}

// CreateClient creates a client with scopes, which must exist and be held by the caller, and
// returns its id and secret (shown once).
func (s *Service) CreateClient(ctx context.Context, callerScopes, scopes []string) (string, string, error) {
	for _, sc := range scopes {
		if !slices.Contains(Scopes, sc) {
			return "", "", &UnknownScopeError{Scope: sc}
		}
	}
	for _, sc := range scopes {
		if !slices.Contains(callerScopes, sc) {
			return "", "", ErrScopeNotHeld
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", fmt.Errorf("oauth: client secret: %w", err)
	}
	secret := hex.EncodeToString(raw[:])
	c := Client{ID: token.NewID(), SecretHash: hash(secret), Scopes: dedupe(scopes), CreatedAt: time.Now().UTC()}
	if err := s.store.InsertClient(ctx, c); err != nil {
		return "", "", err
	}
	if err := s.putMirror(ctx, c.ID, c.Scopes); err != nil {
		// Without its mirror entry the other services refuse the client: fail closed, report it.
		return "", "", err
	}
	return c.ID, secret, nil
}

func dedupe(scopes []string) []string {
	out := []string{}
	for _, sc := range scopes {
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out
}

// DeleteClient deletes a client; its tokens stop working at once, here and (through the mirror)
// in the other services.
func (s *Service) DeleteClient(ctx context.Context, id string) error {
	if id == s.root.ID {
		return ErrRootClient
	}
	if _, err := s.store.GetClient(ctx, id); err != nil {
		return err
	}
	if err := s.mirror.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("oauth: unmirror client: %w", err)
	}
	return s.store.DeleteClient(ctx, id)
}

// ClientExists reports whether the client still exists (the root client always does).
func (s *Service) ClientExists(ctx context.Context, id string) (bool, error) {
	if id == s.root.ID {
		return true, nil
	}
	_, err := s.store.GetClient(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Service) putMirror(ctx context.Context, id string, scopes []string) error {
	b, err := json.Marshal(MirrorEntry{ClientID: id, Scopes: scopes})
	if err != nil {
		return err
	}
	if _, err := s.mirror.Put(ctx, id, b); err != nil {
		return fmt.Errorf("oauth: mirror client: %w", err)
	}
	return nil
}

// Sync makes the oauth_clients bucket hold exactly the root client and the stored clients.
func (s *Service) Sync(ctx context.Context) error {
	clients, err := s.store.AllClients(ctx)
	if err != nil {
		return err
	}
	want := map[string][]string{s.root.ID: Scopes}
	for _, c := range clients {
		want[c.ID] = c.Scopes
	}
	var errs []error
	for id, scopes := range want {
		b, err := json.Marshal(MirrorEntry{ClientID: id, Scopes: scopes})
		if err != nil {
			return err
		}
		if e, err := s.mirror.Get(ctx, id); err == nil && bytes.Equal(e.Value(), b) {
			continue
		}
		if _, err := s.mirror.Put(ctx, id, b); err != nil {
			errs = append(errs, fmt.Errorf("oauth: mirror client: %w", err))
		}
	}
	lister, err := s.mirror.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("oauth: list mirrored clients: %w", err))...)
	}
	for k := range lister.Keys() {
		if _, ok := want[k]; !ok {
			if err := s.mirror.Delete(ctx, k); err != nil {
				errs = append(errs, fmt.Errorf("oauth: unmirror client: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
