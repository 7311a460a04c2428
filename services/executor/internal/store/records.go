// Package store keeps the executor's state in NATS KV: one lifecycle.Record per privacy request in
// privacy_requests, written by compare-and-set on its revision only, and in privacy_identities the
// sealed identity of each request, each entry with its own TTL (IDENTITY_TTL when written), beside
// the derived identities a request has yet to merge (patches).
package store

import (
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
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
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
	plans     *planRefs
	count     Counter
}

// NewRecords returns the store of records in the privacy_requests bucket kv, their plans in
// snapshots (plan_snapshots). A record written finished (complete or denied) carries a TTL of retention
// (REQUEST_RETENTION; zero: none, kept for good), published through js; every later write of it
// carries the TTL again, as a write replaces the message.
func NewRecords(kv jetstream.KeyValue, snapshots *plansnapshots.Store, js jetstream.JetStream, retention time.Duration, count Counter) *Records {
	if count == nil {
		count = func(string) {}
	}
	return &Records{kv: kv, js: js, retention: retention, plans: newPlanRefs(snapshots), count: count}
}

// ttl is the TTL a write of r carries: the retention once the request is finished (complete, or
// denied by an operator), else none.
func (s *Records) ttl(r *lifecycle.Record) time.Duration {
	if r.Finished() {
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
	r, err := s.plans.decode(ctx, e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("store: decode %s: %w", id, err)
	}
	return r, e.Revision(), nil
}

// Create writes the first record of a request; ErrExists when the id is known.
func (s *Records) Create(ctx context.Context, r *lifecycle.Record) (uint64, error) {
	b, err := s.plans.encode(ctx, r)
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
	b, err := s.plans.encode(ctx, r)
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

// planKey identifies a plan in memory: plans are never changed in place, so a new one (another
// policy version, or other slices) has another key.
type planKey struct {
	policyKey string
	version   int64
	published time.Time
	pre, post *event.PlanWebhook
	nPre      int
	nPost     int
	approval  *event.PreApproval
}

func keyOf(p *event.Plan) planKey {
	k := planKey{policyKey: p.PolicyKey, version: p.Version, published: p.PublishedAt, nPre: len(p.Pre), nPost: len(p.Post),
		approval: p.PreApproval}
	if len(p.Pre) > 0 {
		k.pre = &p.Pre[0]
	}
	if len(p.Post) > 0 {
		k.post = &p.Post[0]
	}
	return k
}

// maxPlans bounds the map of a planRefs; a full map is emptied.
const maxPlans = 256

// planRefs stores a record's plan once in plan_snapshots and writes the record with its reference
// instead (event.Request.PlanRef), and reads a record's plan back by its reference. Records created
// from the same plan share its slices, so the plan is encoded and its snapshot put once per
// process, and records read with the same reference share one decoded plan (plansnapshots.Store
// keeps it): with thousands of requests in flight on a few policies, one copy of each plan.
type planRefs struct {
	snapshots *plansnapshots.Store
	mu        sync.Mutex
	byKey     map[planKey]string
}

func newPlanRefs(snapshots *plansnapshots.Store) *planRefs {
	return &planRefs{snapshots: snapshots, byKey: map[planKey]string{}}
}

// ref returns the reference of p in plan_snapshots, storing the snapshot when this process has not.
func (pr *planRefs) ref(ctx context.Context, p *event.Plan) (string, error) {
	k := keyOf(p)
	pr.mu.Lock()
	ref, ok := pr.byKey[k]
	pr.mu.Unlock()
	if ok {
		return ref, nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	if ref, err = pr.snapshots.Put(ctx, b); err != nil {
		return "", err
	}
	pr.mu.Lock()
	if len(pr.byKey) >= maxPlans {
		clear(pr.byKey)
	}
	pr.byKey[k] = ref
	pr.mu.Unlock()
	return ref, nil
}

// encode returns the JSON of r as stored: its plan replaced by the plan's reference, the snapshot
// stored first, so that no stored record names a snapshot that is not there. A record without a
// plan (its policy had none) has no reference.
func (pr *planRefs) encode(ctx context.Context, r *lifecycle.Record) ([]byte, error) {
	if r.Plan.PolicyKey == "" && len(r.Plan.Pre)+len(r.Plan.Post) == 0 {
		cp := *r
		cp.Format, cp.PlanRef = cp.Layout(), ""
		return json.Marshal(&cp)
	}
	ref, err := pr.ref(ctx, &r.Plan)
	if err != nil {
		return nil, err
	}
	cp := *r
	cp.Format, cp.Plan, cp.PlanRef = r.Layout(), event.Plan{}, ref
	return json.Marshal(&cp)
}

// decode reads a stored record, its plan from plan_snapshots by reference (or inline, in a record
// written before references). In memory a record holds its plan and no reference: the reference is
// how it is stored, and encode finds it again from the plan. A record in a newer format than this
// code reads is event.ErrNewerFormat: the message stays unacknowledged for a newer executor.
func (pr *planRefs) decode(ctx context.Context, b []byte) (*lifecycle.Record, error) {
	r := &lifecycle.Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, err
	}
	if err := r.CheckFormat(); err != nil {
		return nil, err
	}
	r.Format = 0 // like the reference, how it is stored: encode writes its Layout
	if r.PlanRef != "" {
		p, err := pr.snapshots.Get(ctx, r.PlanRef)
		if err != nil {
			return nil, err
		}
		r.Plan, r.PlanRef = p, ""
	}
	return r, nil
}
