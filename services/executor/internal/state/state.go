// Package state keeps the executor's state in KV: one Record per privacy request in
// privacy_requests, written by compare-and-set on its revision only, and the sealed identity of each
// request in privacy_identities.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
)

var (
	// ErrNotFound reports a request or identity that is not stored (an identity also after it
	// expired).
	ErrNotFound = errors.New("state: not found")
	// ErrExists reports a Create of an id that is already stored.
	ErrExists = errors.New("state: already exists")
	// ErrConflict reports a compare-and-set that lost: someone else moved the request.
	ErrConflict = errors.New("state: revision conflict")
)

// Record is the value of a request in privacy_requests: the contract event.Request (which the
// callback service reads) plus fields only the executor uses. Its JSON is event.Request's with the
// extra fields beside them.
type Record struct {
	event.Request
	// Claim is the webhook call being made right now; it lets one worker call a webhook while others
	// wait, and lets another take over when it expires.
	Claim *Claim `json:"claim,omitempty"`
	// RetryAt is when the next attempt of the current webhook is due after a retryable failure.
	RetryAt *time.Time `json:"retry_at,omitempty"`
	// IdentityExpiresAt is when the identity entry expires (its last write plus IDENTITY_TTL).
	IdentityExpiresAt *time.Time `json:"identity_expires_at,omitempty"`
	// Outbox holds status events written with the transition that caused them and not yet
	// confirmed published; EventSeq numbers them (it is their Nats-Msg-Id).
	Outbox   []Pending `json:"outbox,omitempty"`
	EventSeq int       `json:"event_seq"`
}

// Claim is a lease on one webhook call.
type Claim struct {
	Owner     string    `json:"owner"`
	At        time.Time `json:"at"`
	Until     time.Time `json:"until"`
	WebhookID string    `json:"webhook_id"`
}

// Pending is a status event in the outbox.
type Pending struct {
	Seq   int                 `json:"seq"`
	Event event.StatusChanged `json:"event"`
}

// SetStatus changes the status and puts the status event in the outbox.
func (r *Record) SetStatus(s event.Status, now time.Time, webhookKey, message string) {
	prev := r.Status
	r.Status = s
	r.UpdatedAt = now
	r.EventSeq++
	r.Outbox = append(r.Outbox, Pending{Seq: r.EventSeq, Event: event.StatusChanged{
		ID: r.ID, Status: s, Previous: prev, At: now, Step: r.Step, WebhookKey: webhookKey, Error: message,
	}})
}

// Store reads and writes records and identities.
type Store struct {
	requests   jetstream.KeyValue
	identities jetstream.KeyValue
	keyring    *secret.Keyring
	identTTL   time.Duration
}

// NewStore returns a Store over the two buckets; keyring seals identities (PurposeIdentities).
func NewStore(requests, identities jetstream.KeyValue, keyring *secret.Keyring, identityTTL time.Duration) *Store {
	return &Store{requests: requests, identities: identities, keyring: keyring, identTTL: identityTTL}
}

// Load returns the record of id and its revision.
func (s *Store) Load(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := s.requests.Get(ctx, event.KVKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state: load %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("state: decode %s: %w", id, err)
	}
	return &r, e.Revision(), nil
}

// Create writes the first record of a request; ErrExists when the id is known.
func (s *Store) Create(ctx context.Context, r *Record) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("state: encode %s: %w", r.ID, err)
	}
	rev, err := s.requests.Create(ctx, event.KVKey(r.ID), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("state: create %s: %w", r.ID, err)
	}
	return rev, nil
}

// Update writes r if the stored revision is still rev; ErrConflict otherwise.
func (s *Store) Update(ctx context.Context, r *Record, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("state: encode %s: %w", r.ID, err)
	}
	nrev, err := s.requests.Update(ctx, event.KVKey(r.ID), b, rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return 0, ErrConflict
		}
		return 0, fmt.Errorf("state: update %s: %w", r.ID, err)
	}
	return nrev, nil
}

// Identity returns the identity of id and when its entry expires; ErrNotFound when it is gone.
func (s *Store) Identity(ctx context.Context, id string) (event.Identity, time.Time, error) {
	e, err := s.identities.Get(ctx, event.KVKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return event.Identity{}, time.Time{}, ErrNotFound
	}
	if err != nil {
		return event.Identity{}, time.Time{}, fmt.Errorf("state: identity %s: %w", id, err)
	}
	plain, err := s.keyring.Open(string(e.Value()), []byte(id))
	if err != nil {
		return event.Identity{}, time.Time{}, fmt.Errorf("state: open identity %s: %w", id, err)
	}
	var ident event.Identity
	if err := json.Unmarshal(plain, &ident); err != nil {
		return event.Identity{}, time.Time{}, fmt.Errorf("state: decode identity %s: %w", id, err)
	}
	return ident, e.Created().Add(s.identTTL), nil
}

// PutIdentity seals and stores the identity of id; with onlyNew it keeps an identity already stored.
// It returns when the entry expires and whether ident is now the stored identity (false when
// onlyNew kept an earlier one).
func (s *Store) PutIdentity(ctx context.Context, id string, ident event.Identity, onlyNew bool) (time.Time, bool, error) {
	plain, err := json.Marshal(ident)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("state: encode identity %s: %w", id, err)
	}
	sealed, err := s.keyring.Seal(plain, []byte(id))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("state: seal identity %s: %w", id, err)
	}
	now := time.Now()
	if onlyNew {
		_, err = s.identities.Create(ctx, event.KVKey(id), []byte(sealed))
		if errors.Is(err, jetstream.ErrKeyExists) {
			_, exp, gerr := s.Identity(ctx, id)
			return exp, false, gerr
		}
	} else {
		_, err = s.identities.Put(ctx, event.KVKey(id), []byte(sealed))
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("state: store identity %s: %w", id, err)
	}
	return now.Add(s.identTTL), true, nil
}
