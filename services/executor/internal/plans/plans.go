// Package plans keeps a local, live view of the KV bucket policy_webhooks: the compiled webhook
// plan of every policy, so that starting a request costs no round trip in the common case.
package plans

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// ErrNotFound reports a policy key without a plan.
var ErrNotFound = errors.New("plans: no plan for policy")

// View is the local view of policy_webhooks: a natsconn.Map of the plans (Loaded, and the
// natsconn.View methods, are the Map's).
type View struct {
	*natsconn.Map[event.Plan]
	kv  jetstream.KeyValue
	log zerolog.Logger
}

// Watch starts following kv until ctx ends (natsconn.Follow) and returns the view; Loaded reports
// when the bucket was read whole once.
func Watch(ctx context.Context, kv jetstream.KeyValue, conn natsconn.Conn, log zerolog.Logger) *View {
	v := &View{Map: natsconn.NewMap[event.Plan](log), kv: kv, log: log}
	go natsconn.Follow(ctx, kv, conn, v, log)
	return v
}

// Latest returns the plan of policy key as the watch last delivered it, without I/O.
func (v *View) Latest(key string) (event.Plan, bool) { return v.Map.Get(event.KVKey(key)) }

// Get returns the plan of policy key. On a miss it reads the bucket directly once, so that a
// policy created an instant ago is found before the watch delivers it.
func (v *View) Get(ctx context.Context, key string) (event.Plan, error) {
	kvKey := event.KVKey(key)
	if p, ok := v.Map.Get(kvKey); ok {
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
	var p event.Plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		// As the watch does: a plan that cannot be read is no plan (retrying would not help).
		v.log.Error().Err(err).Str("policy_key", key).Msg("plans: undecodable plan ignored")
		return event.Plan{}, ErrNotFound
	}
	return p, nil
}
