// Package state keeps the executor's state in KV: one Record per privacy request in
// privacy_requests, written by compare-and-set on its revision only, and the sealed identity of each
// request in privacy_identities.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
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

	// plan caches the JSON of Request.Plan: the plan snapshot does not change while a request runs,
	// so it is encoded (or kept from the decoded record) once instead of on every CAS.
	plan planCache
}

// planCache is the JSON of a plan and what identifies the plan it was made from. A plan snapshot
// is never changed in place: a new one (another policy version or other slices) has another key.
type planCache struct {
	key  planKey
	json json.RawMessage
}

type planKey struct {
	policyKey string
	version   int64
	published time.Time
	pre, post *event.PlanWebhook
	nPre      int
	nPost     int
}

func keyOf(p *event.Plan) planKey {
	k := planKey{policyKey: p.PolicyKey, version: p.Version, published: p.PublishedAt, nPre: len(p.Pre), nPost: len(p.Post)}
	if len(p.Pre) > 0 {
		k.pre = &p.Pre[0]
	}
	if len(p.Post) > 0 {
		k.post = &p.Post[0]
	}
	return k
}

// wireRecord is the JSON form of a Record with its plan pre-encoded: its Plan field, shallower
// than Record.Request.Plan, takes the "plan" key in both directions.
type wireRecord struct {
	*Record
	Plan json.RawMessage `json:"plan"`
}

// maxPlans bounds each map of a planInterner; a full map is emptied.
const maxPlans = 256

// planInterner shares plan snapshots and their JSON between the records in memory: records
// created from the same plan (the same slices) share one encoding, and records decoded with the same
// plan JSON share one decoded plan. With thousands of requests in flight on a few policies this
// keeps one copy of each plan instead of one per request. Plans are never changed in place.
type planInterner struct {
	mu     sync.Mutex
	byKey  map[planKey]json.RawMessage
	byJSON map[string]event.Plan
}

func newPlanInterner() *planInterner {
	return &planInterner{byKey: map[planKey]json.RawMessage{}, byJSON: map[string]event.Plan{}}
}

// planJSON returns the JSON of p, encoding it when it is not known.
func (pi *planInterner) planJSON(p *event.Plan, k planKey) (json.RawMessage, error) {
	pi.mu.Lock()
	b, ok := pi.byKey[k]
	pi.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	pi.mu.Lock()
	if len(pi.byKey) >= maxPlans {
		clear(pi.byKey)
	}
	pi.byKey[k] = b
	pi.mu.Unlock()
	return b, nil
}

// plan returns the plan whose JSON is raw, decoding it when it is not known.
func (pi *planInterner) plan(raw json.RawMessage) (event.Plan, json.RawMessage, error) {
	pi.mu.Lock()
	p, ok := pi.byJSON[string(raw)]
	pi.mu.Unlock()
	if ok {
		return p, pi.known(&p, raw), nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return event.Plan{}, nil, err
	}
	pi.mu.Lock()
	if len(pi.byJSON) >= maxPlans {
		clear(pi.byJSON)
	}
	pi.byJSON[string(raw)] = p
	pi.mu.Unlock()
	return p, pi.known(&p, raw), nil
}

// known records raw as the JSON of p and returns the shared copy.
func (pi *planInterner) known(p *event.Plan, raw json.RawMessage) json.RawMessage {
	k := keyOf(p)
	pi.mu.Lock()
	defer pi.mu.Unlock()
	if b, ok := pi.byKey[k]; ok {
		return b
	}
	if len(pi.byKey) >= maxPlans {
		clear(pi.byKey)
	}
	pi.byKey[k] = raw
	return raw
}

// encode returns the JSON of r, encoding its plan only when it changed since the last encode.
func (pi *planInterner) encode(r *Record) ([]byte, error) {
	k := keyOf(&r.Plan)
	if r.plan.json == nil || r.plan.key != k {
		b, err := pi.planJSON(&r.Plan, k)
		if err != nil {
			return nil, err
		}
		r.plan = planCache{key: k, json: b}
	}
	// The record is encoded with a one-byte placeholder for the plan, which is then replaced by
	// the cached JSON: a json.RawMessage would be validated and copied byte by byte on every encode,
	// which costs as much as encoding the plan.
	b, err := json.Marshal(wireRecord{Record: r, Plan: planPlaceholder})
	if err != nil {
		return nil, err
	}
	const tail = `,"plan":0}` // Plan is wireRecord's last field
	if !bytes.HasSuffix(b, []byte(tail)) {
		return json.Marshal(wireRecord{Record: r, Plan: r.plan.json})
	}
	out := make([]byte, 0, len(b)+len(r.plan.json))
	out = append(out, b[:len(b)-len(tail)+len(`,"plan":`)]...)
	out = append(out, r.plan.json...)
	return append(out, '}'), nil
}

var planPlaceholder = json.RawMessage("0")

// decode reads a record from its JSON, sharing its plan with the records that have the same.
func (pi *planInterner) decode(b []byte) (*Record, error) {
	r := &Record{}
	w := wireRecord{Record: r}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	if len(w.Plan) > 0 && string(w.Plan) != "null" {
		p, raw, err := pi.plan(w.Plan)
		if err != nil {
			return nil, err
		}
		r.Plan = p
		r.plan = planCache{key: keyOf(&r.Plan), json: raw}
	}
	return r, nil
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
	var prev *event.Status
	if r.EventSeq > 0 {
		p := r.Status
		prev = &p
	}
	r.Status = s
	r.UpdatedAt = now
	r.EventSeq++
	r.Outbox = append(r.Outbox, Pending{Seq: r.EventSeq, Event: event.StatusChanged{
		ID: r.ID, Seq: r.EventSeq, Status: s, Previous: prev, At: now, Step: r.Step, WebhookKey: webhookKey, Error: message,
	}})
}

// Store reads and writes records and identities.
type Store struct {
	requests   jetstream.KeyValue
	identities jetstream.KeyValue
	keyring    *secret.Keyring
	identTTL   time.Duration
	plans      *planInterner
}

// NewStore returns a Store over the two buckets; keyring seals identities (PurposeIdentities).
func NewStore(requests, identities jetstream.KeyValue, keyring *secret.Keyring, identityTTL time.Duration) *Store {
	return &Store{requests: requests, identities: identities, keyring: keyring, identTTL: identityTTL,
		plans: newPlanInterner()}
}

// IdentityTTL is how long an identity entry lives after its last write.
func (s *Store) IdentityTTL() time.Duration { return s.identTTL }

// Load returns the record of id and its revision.
func (s *Store) Load(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := s.requests.Get(ctx, event.KVKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state: load %s: %w", id, err)
	}
	r, err := s.plans.decode(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("state: decode %s: %w", id, err)
	}
	return r, e.Revision(), nil
}

// Create writes the first record of a request; ErrExists when the id is known.
func (s *Store) Create(ctx context.Context, r *Record) (uint64, error) {
	b, err := s.plans.encode(r)
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
	b, err := s.plans.encode(r)
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
