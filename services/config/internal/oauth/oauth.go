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
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

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
		scopes = scope.All
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
		if !slices.Contains(scope.All, sc) {
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

// DeleteClient deletes a client; its tokens stop working at once, here (the store document goes
// first) and, through the mirror, in the other services. A delete whose mirror step failed is
// finished by deleting again: the store says ErrNotFound, and the left-over entry is removed.
func (s *Service) DeleteClient(ctx context.Context, id string) error {
	if id == s.root.ID {
		return ErrRootClient
	}
	err := s.store.DeleteClient(ctx, id)
	if errors.Is(err, ErrNotFound) {
		if _, gerr := s.mirror.Get(ctx, id); gerr != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if derr := s.mirror.Delete(ctx, id); derr != nil && !errors.Is(derr, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("oauth: unmirror client: %w", derr)
	}
	return err
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

// Sync makes the oauth_clients bucket hold exactly the root client and the stored clients. What it
// lists is only a hint: each entry it would change is settled by syncClient, which reads the store
// again after the entry's revision and writes with that revision, so a Sync that overlaps a create
// or a delete never undoes it.
func (s *Service) Sync(ctx context.Context) error {
	clients, err := s.store.AllClients(ctx)
	if err != nil {
		return err
	}
	want := map[string][]string{s.root.ID: scope.All}
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
		errs = append(errs, s.syncClient(ctx, id))
	}
	lister, err := s.mirror.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("oauth: list mirrored clients: %w", err))...)
	}
	for k := range lister.Keys() {
		if _, ok := want[k]; !ok {
			errs = append(errs, s.syncClient(ctx, k))
		}
	}
	return errors.Join(errs...)
}

// maxSyncAttempts bounds the compare-and-set retries of one mirror entry.
const maxSyncAttempts = 20

// syncClient makes the mirror entry of id what the store says: it reads the entry's revision, then
// the client, and puts (or deletes) the entry only if it is still at that revision, retrying
// otherwise. A DeleteClient removes the store document before the entry, so either this read
// already misses the client or the delete's entry removal moves the revision and this write fails.
func (s *Service) syncClient(ctx context.Context, id string) error {
	for range maxSyncAttempts {
		cur, rev, err := natsconn.Latest(ctx, s.mirror, id)
		if err != nil {
			return fmt.Errorf("oauth: read mirrored client: %w", err)
		}
		scopes := scope.All
		if id != s.root.ID {
			c, err := s.store.GetClient(ctx, id)
			if errors.Is(err, ErrNotFound) {
				if cur == nil {
					return nil
				}
				err := s.mirror.Delete(ctx, id, jetstream.LastRevision(rev))
				if natsconn.IsConflict(err) {
					continue
				}
				if err != nil {
					return fmt.Errorf("oauth: unmirror client: %w", err)
				}
				return nil
			}
			if err != nil {
				return err
			}
			scopes = c.Scopes
		}
		b, err := json.Marshal(MirrorEntry{ClientID: id, Scopes: scopes})
		if err != nil {
			return err
		}
		if cur != nil && bytes.Equal(cur.Value(), b) {
			return nil
		}
		// Revision 0 expects no message at all under the key.
		_, err = s.mirror.Update(ctx, id, b, rev)
		if natsconn.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("oauth: mirror client: %w", err)
		}
		return nil
	}
	return fmt.Errorf("oauth: mirror entry of a client kept changing: gave up after %d attempts", maxSyncAttempts)
}
