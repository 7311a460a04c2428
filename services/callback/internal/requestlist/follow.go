package requestlist

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Conn is what Follow needs of the NATS connection (a *nats.Conn): whether it is connected, and
// how many times it reconnected.
type Conn interface {
	IsConnected() bool
	Stats() nats.Statistics
}

// markerGap is how long a connection may have been lost for a watch to resume after the last
// revision it applied rather than read the bucket whole again: the delete markers a per-key TTL
// leaves (LimitMarkerTTL, a minute) must still be there to be read.
const markerGap = 30 * time.Second

// Follow keeps x as the bucket kv (privacy_requests) is until ctx ends. The first watch reads the
// bucket whole. The watch is started again when it ends or when conn reconnects: after a short
// loss it resumes after the last revision it applied, so that a NATS restart or a failover costs
// no reload and no staleness (nats.go's own recovery of a watch takes 10 to 20 seconds); after a
// long one, or before the first read was whole, it reads the bucket whole again.
func Follow(ctx context.Context, kv jetstream.KeyValue, conn Conn, x *Index, log zerolog.Logger) {
	f := &follower{kv: kv, conn: conn, x: x, log: log}
	resume := false
	for ctx.Err() == nil {
		var opts []jetstream.WatchOpt
		if resume {
			opts = append(opts, jetstream.ResumeFromRevision(f.last+1))
		} else {
			x.Restart() // the rows this pass does not deliver are gone
		}
		w, err := kv.WatchAll(ctx, opts...)
		if err != nil {
			log.Warn().Err(err).Msg("request list: watch failed, trying again")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		resume = f.follow(ctx, w, !resume) && f.whole
		_ = w.Stop()
	}
}

// follower is the state of Follow between its watches.
type follower struct {
	kv   jetstream.KeyValue
	conn Conn
	x    *Index
	log  zerolog.Logger
	// last is the highest revision applied; whole reports that a watch read the bucket whole.
	last  uint64
	whole bool
}

// follow applies w's entries until ctx ends, w ends, or the connection came back; it reports
// whether the next watch may resume (the connection was lost for less than markerGap).
func (f *follower) follow(ctx context.Context, w jetstream.KeyWatcher, whole bool) bool {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	seen, connected := f.conn.Stats().Reconnects, time.Now()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			if !f.conn.IsConnected() {
				continue
			}
			if f.conn.Stats().Reconnects != seen {
				gap := time.Since(connected)
				f.log.Info().Dur("gap", gap).Msg("request list: NATS reconnected, watching again")
				return gap < markerGap
			}
			connected = time.Now()
		case e, ok := <-w.Updates():
			if !ok {
				return time.Since(connected) < markerGap
			}
			if e == nil {
				if whole {
					f.x.Loaded()
					f.whole = true
				}
				continue
			}
			apply(f.x, e, f.log)
			f.last = max(f.last, e.Revision())
		}
	}
}

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
