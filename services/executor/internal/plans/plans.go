// Package plans keeps a local, live view of the KV bucket policy_webhooks: the compiled webhook
// plan of every policy, so that starting a request costs no round trip in the common case.
package plans

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// ErrNotFound reports a policy key without a plan.
var ErrNotFound = errors.New("plans: no plan for policy")

// View is the local view of policy_webhooks.
type View struct {
	kv     jetstream.KeyValue
	log    zerolog.Logger
	mu     sync.RWMutex
	plans  map[string]event.Plan
	loaded atomic.Bool
	// fresh holds the keys a read of the bucket whole delivered so far (nil between reads).
	fresh map[string]bool
}

// Watch starts following kv until ctx ends (natsconn.Follow) and returns the view; Loaded reports
// when the bucket was read whole once.
func Watch(ctx context.Context, kv jetstream.KeyValue, conn natsconn.Conn, log zerolog.Logger) *View {
	v := &View{kv: kv, log: log, plans: map[string]event.Plan{}}
	go natsconn.Follow(ctx, kv, conn, v, log)
	return v
}

// BeginWhole begins a read of the bucket whole (natsconn.View).
func (v *View) BeginWhole() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fresh = map[string]bool{}
}

// EndWhole ends a read of the bucket whole: the plans it did not deliver are gone (natsconn.View).
func (v *View) EndWhole() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range v.plans {
		if v.fresh != nil && !v.fresh[k] {
			delete(v.plans, k)
		}
	}
	v.fresh = nil
	v.loaded.Store(true)
}

// Apply records one entry of the bucket (natsconn.View).
func (v *View) Apply(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fresh != nil {
		v.fresh[e.Key()] = true
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(v.plans, e.Key())
		return
	}
	var p event.Plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		v.log.Error().Err(err).Str("policy_key", e.Key()).Msg("plans: undecodable plan ignored")
		delete(v.plans, e.Key())
		return
	}
	v.plans[e.Key()] = p
}

// Loaded reports whether the initial content of the bucket has been read.
func (v *View) Loaded() bool { return v.loaded.Load() }

// Latest returns the plan of policy key as the watch last delivered it, without I/O.
func (v *View) Latest(key string) (event.Plan, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	p, ok := v.plans[event.KVKey(key)]
	return p, ok
}

// Get returns the plan of policy key. On a miss it reads the bucket directly once, so that a
// policy created an instant ago is found before the watch delivers it.
func (v *View) Get(ctx context.Context, key string) (event.Plan, error) {
	kvKey := event.KVKey(key)
	v.mu.RLock()
	p, ok := v.plans[kvKey]
	v.mu.RUnlock()
	if ok {
		return p, nil
	}
	if !event.ValidKVKey(kvKey) { // a policy key named by an event may hold anything
		return event.Plan{}, ErrNotFound
	}
	e, err := v.kv.Get(ctx, kvKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return event.Plan{}, ErrNotFound
	}
	if err != nil {
		return event.Plan{}, fmt.Errorf("plans: get %q: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		// As the watch does: a plan that cannot be read is no plan (retrying would not help).
		v.log.Error().Err(err).Str("policy_key", key).Msg("plans: undecodable plan ignored")
		return event.Plan{}, ErrNotFound
	}
	return p, nil
}
