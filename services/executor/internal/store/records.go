// Package store keeps the executor's state in NATS KV: one lifecycle.Record per privacy request in
// privacy_requests, written by compare-and-set on its revision only, and in privacy_identities the
// sealed identity of each request, each entry with its own TTL (IDENTITY_TTL when written), beside
// the derived identities a request has yet to merge (patches).
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

var (
	// ErrNotFound reports a request, identity or patch that is not stored (an identity also after
	// it expired).
	ErrNotFound = errors.New("store: not found")
	// ErrExists reports a Create of an id that is already stored.
	ErrExists = errors.New("store: already exists")
	// ErrConflict reports a compare-and-set that lost: someone else moved the request.
	ErrConflict = errors.New("store: revision conflict")
	// ErrTooLarge reports a value over the NATS maximum payload: writing it again cannot succeed.
	ErrTooLarge = errors.New("store: value exceeds the NATS maximum payload")
)

// Counter counts the NATS requests the store makes, by operation (bench: round trips per request).
type Counter func(op string)

// Records reads and writes request records.
type Records struct {
	kv        jetstream.KeyValue
	js        jetstream.JetStream
	retention time.Duration
	plans     *planInterner
	count     Counter
}

// NewRecords returns the store of records in the privacy_requests bucket kv. A record written
// complete carries a TTL of retention (REQUEST_RETENTION; zero: none, kept for good), published
// through js; every later write of it carries the TTL again, as a write replaces the message.
func NewRecords(kv jetstream.KeyValue, js jetstream.JetStream, retention time.Duration, count Counter) *Records {
	if count == nil {
		count = func(string) {}
	}
	return &Records{kv: kv, js: js, retention: retention, plans: newPlanInterner(), count: count}
}

// ttl is the TTL a write of r carries: the retention once the request is complete, else none.
func (s *Records) ttl(r *lifecycle.Record) time.Duration {
	if r.Status == event.StatusComplete {
		return s.retention
	}
	return 0
}

// Load returns the record of id and its revision.
func (s *Records) Load(ctx context.Context, id string) (*lifecycle.Record, uint64, error) {
	s.count("kv_get")
	e, err := s.kv.Get(ctx, event.KVKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: load %s: %w", id, err)
	}
	r, err := s.plans.decode(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("store: decode %s: %w", id, err)
	}
	return r, e.Revision(), nil
}

// Create writes the first record of a request; ErrExists when the id is known.
func (s *Records) Create(ctx context.Context, r *lifecycle.Record) (uint64, error) {
	b, err := s.plans.encode(r)
	if err != nil {
		return 0, fmt.Errorf("store: encode %s: %w", r.ID, err)
	}
	s.count("kv_create")
	var opts []jetstream.KVCreateOpt
	if ttl := s.ttl(r); ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	rev, err := s.kv.Create(ctx, event.KVKey(r.ID), b, opts...)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return 0, ErrExists
	case err != nil:
		return 0, fmt.Errorf("store: create %s: %w", r.ID, writeError(err))
	}
	return rev, nil
}

// Update writes r if the stored revision is still rev; ErrConflict otherwise.
func (s *Records) Update(ctx context.Context, r *lifecycle.Record, rev uint64) (uint64, error) {
	b, err := s.plans.encode(r)
	if err != nil {
		return 0, fmt.Errorf("store: encode %s: %w", r.ID, err)
	}
	s.count("kv_update")
	var nrev uint64
	if ttl := s.ttl(r); ttl > 0 {
		// kv.Update sets no TTL; the same compare-and-set as a publish with the TTL header.
		var ack *jetstream.PubAck
		ack, err = s.js.Publish(ctx, natsconn.KeySubject(s.kv.Bucket(), event.KVKey(r.ID)), b,
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
		if err == nil {
			nrev = ack.Sequence
		}
	} else {
		nrev, err = s.kv.Update(ctx, event.KVKey(r.ID), b, rev)
	}
	switch {
	case natsconn.IsConflict(err):
		return 0, ErrConflict
	case err != nil:
		return 0, fmt.Errorf("store: update %s: %w", r.ID, writeError(err))
	}
	return nrev, nil
}

// writeError marks a value too large for NATS as ErrTooLarge.
func writeError(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return err
}

// ---- plan snapshots ----

// planKey identifies a plan snapshot: plans are never changed in place, so a new one (another
// policy version, or other slices) has another key.
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
	*lifecycle.Record
	Plan json.RawMessage `json:"plan"`
}

// maxPlans bounds each map of a planInterner; a full map is emptied.
const maxPlans = 256

// planInterner shares plan snapshots and their JSON between the records in memory: records
// created from the same plan (the same slices) share one encoding, and records decoded with the same
// plan JSON share one decoded plan. With thousands of requests in flight on a few policies this
// keeps one copy of each plan instead of one per request, and encodes it once.
type planInterner struct {
	mu     sync.Mutex
	byKey  map[planKey]json.RawMessage
	byJSON map[string]event.Plan
}

func newPlanInterner() *planInterner {
	return &planInterner{byKey: map[planKey]json.RawMessage{}, byJSON: map[string]event.Plan{}}
}

// planJSON returns the JSON of p, encoding it when it is not known.
func (pi *planInterner) planJSON(p *event.Plan) (json.RawMessage, error) {
	k := keyOf(p)
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
	pi.remember(k, b)
	return b, nil
}

func (pi *planInterner) remember(k planKey, b json.RawMessage) {
	pi.mu.Lock()
	defer pi.mu.Unlock()
	if len(pi.byKey) >= maxPlans {
		clear(pi.byKey)
	}
	pi.byKey[k] = b
}

// plan returns the plan whose JSON is raw, decoding it when it is not known.
func (pi *planInterner) plan(raw json.RawMessage) (event.Plan, error) {
	pi.mu.Lock()
	p, ok := pi.byJSON[string(raw)]
	pi.mu.Unlock()
	if ok {
		return p, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return event.Plan{}, err
	}
	pi.mu.Lock()
	if len(pi.byJSON) >= maxPlans {
		clear(pi.byJSON)
	}
	pi.byJSON[string(raw)] = p
	pi.mu.Unlock()
	pi.remember(keyOf(&p), raw)
	return p, nil
}

// encode returns the JSON of r with its plan's JSON spliced in. The record is encoded with a
// one-byte placeholder for the plan, which is then replaced by the plan's cached JSON: a
// json.RawMessage would be validated and copied byte by byte on every encode, which costs as much
// as encoding the plan.
func (pi *planInterner) encode(r *lifecycle.Record) ([]byte, error) {
	planJSON, err := pi.planJSON(&r.Plan)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(wireRecord{Record: r, Plan: planPlaceholder})
	if err != nil {
		return nil, err
	}
	const tail = `,"plan":0}` // Plan is wireRecord's last field
	if !bytes.HasSuffix(b, []byte(tail)) {
		return json.Marshal(wireRecord{Record: r, Plan: planJSON})
	}
	out := make([]byte, 0, len(b)+len(planJSON))
	out = append(out, b[:len(b)-len(tail)+len(`,"plan":`)]...)
	out = append(out, planJSON...)
	return append(out, '}'), nil
}

var planPlaceholder = json.RawMessage("0")

// decode reads a record from its JSON, sharing its plan with the records that have the same.
func (pi *planInterner) decode(b []byte) (*lifecycle.Record, error) {
	r := &lifecycle.Record{}
	w := wireRecord{Record: r}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	if len(w.Plan) > 0 && string(w.Plan) != "null" {
		p, err := pi.plan(w.Plan)
		if err != nil {
			return nil, err
		}
		r.Plan = p
	}
	return r, nil
}
