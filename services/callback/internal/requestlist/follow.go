package requestlist

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// Follow keeps x as the bucket kv (privacy_requests) is until ctx ends (natsconn.Follow: read
// whole at start, resumed after a short loss of NATS, read whole again after a long one).
func Follow(ctx context.Context, kv jetstream.KeyValue, conn natsconn.Conn, x *Index, log zerolog.Logger) {
	natsconn.Follow(ctx, kv, conn, feed{x: x, log: log}, log)
}

// feed is x as the natsconn.View of privacy_requests: it decodes each record's listed fields.
type feed struct {
	x   *Index
	log zerolog.Logger
}

func (f feed) BeginWhole() { f.x.Restart() }
func (f feed) EndWhole()   { f.x.Loaded() }

// Apply records one entry of the bucket in the index.
func (f feed) Apply(e jetstream.KeyValueEntry) { apply(f.x, e, f.log) }

// apply records one entry of the bucket in x.
func apply(x *Index, e jetstream.KeyValueEntry, log zerolog.Logger) {
	if e.Operation() != jetstream.KeyValuePut {
		x.Remove(e.Key(), e.Revision())
		return
	}
	r, err := decode(e.Value())
	if err != nil || r.ID == "" {
		// The executor writes every record; one that cannot be read is not listed (GET by id
		// answers for it).
		log.Error().Err(err).Str("key", e.Key()).Msg("request list: unreadable record left out")
		x.Remove(e.Key(), e.Revision())
		return
	}
	key := e.Key()
	if r.ID == key {
		r.ID = key // one string for both
	}
	x.Put(e.Revision(), Row{Key: key, ID: r.ID, ExternalID: r.ExternalID, PolicyKey: r.PolicyKey,
		Status: r.Status, Step: r.Step, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		StartedProcessingAt: r.StartedProcessingAt, FinishedProcessingAt: r.FinishedProcessingAt})
}
