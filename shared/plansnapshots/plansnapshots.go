// Package plansnapshots keeps the plan snapshots of privacy requests in the plan_snapshots bucket,
// once per distinct plan, so that a request's record names its plan by reference instead of
// carrying a copy (SPEC §5). A snapshot's key is derived from its JSON (Ref), so the same plan is
// stored once however many requests and executors write it, and a stored snapshot never changes:
// every process keeps the ones it has seen in memory for good (within a bound).
//
// The executor puts a snapshot before it writes the first record that refers to it, so a record
// never names a snapshot that is not stored; the executor and the callback get them back.
package plansnapshots

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// ErrNotFound reports a reference that has no snapshot.
var ErrNotFound = errors.New("plansnapshots: no snapshot")

// maxCached bounds each map of a Store; a full map is emptied. Plans change when an operator edits
// a policy, so a process sees a handful.
const maxCached = 1024

// Ref returns the key of the snapshot whose JSON is planJSON: the first 128 bits of its SHA-256, in
// hex.
func Ref(planJSON []byte) string {
	sum := sha256.Sum256(planJSON)
	return hex.EncodeToString(sum[:16])
}

// Store reads and writes snapshots in the plan_snapshots bucket.
type Store struct {
	kv     jetstream.KeyValue
	mu     sync.Mutex
	stored map[string]bool       // refs known to be in the bucket
	plans  map[string]event.Plan // decoded snapshots by ref
}

// New returns the Store of the plan_snapshots bucket kv.
func New(kv jetstream.KeyValue) *Store {
	return &Store{kv: kv, stored: map[string]bool{}, plans: map[string]event.Plan{}}
}

// Put stores the snapshot whose JSON is planJSON unless it is known to be stored, and returns its
// reference. A snapshot another writer stored first is the same one (its key is its content).
func (s *Store) Put(ctx context.Context, planJSON []byte) (string, error) {
	ref := Ref(planJSON)
	s.mu.Lock()
	known := s.stored[ref]
	s.mu.Unlock()
	if known {
		return ref, nil
	}
	_, err := s.kv.Create(ctx, ref, planJSON)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("plansnapshots: store %s: %w", ref, err)
	}
	s.remember(func() { s.stored[ref] = true })
	return ref, nil
}

// Get returns the snapshot of ref, from memory when this process has seen it.
func (s *Store) Get(ctx context.Context, ref string) (event.Plan, error) {
	s.mu.Lock()
	p, ok := s.plans[ref]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	if !event.ValidKVKey(ref) {
		return event.Plan{}, fmt.Errorf("%w: %q is not a reference", ErrNotFound, ref)
	}
	e, err := s.kv.Get(ctx, ref)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return event.Plan{}, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if err != nil {
		return event.Plan{}, fmt.Errorf("plansnapshots: read %s: %w", ref, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return event.Plan{}, fmt.Errorf("plansnapshots: decode %s: %w", ref, err)
	}
	s.remember(func() { s.plans[ref], s.stored[ref] = p, true })
	return p, nil
}

// remember runs add under the lock, emptying a map that reached its bound first.
func (s *Store) remember(add func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stored) >= maxCached {
		clear(s.stored)
	}
	if len(s.plans) >= maxCached {
		clear(s.plans)
	}
	add()
}
