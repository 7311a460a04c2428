// Package plans reads the KV bucket policy_webhooks, the compiled webhook plan of every policy: a
// request starts on the plan read from the bucket (Get), and a local, live view of the bucket
// gives the secrets last published to the requests already running with no round trip (Latest).
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
	kv    jetstream.KeyValue
	reads *reads
	count func(op string)
	log   zerolog.Logger
}

// Watch starts following kv until ctx ends (natsconn.Follow) and returns the view; Loaded reports
// when the bucket was read whole once. count is told of each NATS request Get makes ("kv_get").
func Watch(ctx context.Context, kv jetstream.KeyValue, conn natsconn.Conn, count func(op string), log zerolog.Logger) *View {
	v := newView(kv, count, log)
	go natsconn.Follow(ctx, kv, conn, v, log)
	return v
}

// newView returns a view that no watch feeds: Get reads the bucket, Latest finds nothing until
// the view is applied entries.
func newView(kv jetstream.KeyValue, count func(op string), log zerolog.Logger) *View {
	v := &View{Map: natsconn.NewMap[event.Plan](log), kv: kv, count: count, log: log}
	v.reads = newReads(v.read)
	return v
}

// Latest returns the plan of policy key as the watch last delivered it, without I/O.
func (v *View) Latest(key string) (event.Plan, bool) { return v.Map.Get(event.KVKey(key)) }

// Get returns the plan of policy key as the bucket holds it now: it reads the bucket (from its
// stream's leader on a cluster, as natsconn.Assets.Plans returns it), never the watched view. A
// request starts on the plan config last answered for: config puts a changed plan before it
// answers the change, and the view may not have it yet when a submission published right after
// arrives, so a webhook just added would be skipped (SPEC §5.1, step 1). Concurrent Gets of one
// key share a read that started after each of them was called (reads), so a burst of submissions
// of one policy costs about one NATS request per round trip, not one each (docs/performance.md).
func (v *View) Get(ctx context.Context, key string) (event.Plan, error) {
	if !event.ValidKVKey(event.KVKey(key)) { // a policy key named by an event may hold anything
		return event.Plan{}, ErrNotFound
	}
	return v.reads.get(ctx, key)
}

// read reads the plan of policy key from the bucket.
func (v *View) read(ctx context.Context, key string) (event.Plan, error) {
	kvKey := event.KVKey(key)
	v.count("kv_get")
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
