package natsconn

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A View is a local copy of a KV bucket that Follow keeps: the executor's plans and breakers, the
// callback's request list.
type View interface {
	// Apply records one entry of the bucket: a put, a delete or a purge (a TTL that ran out is a
	// purge or a delete).
	Apply(jetstream.KeyValueEntry)
	// BeginWhole begins a read of the bucket whole: a key it does not deliver before EndWhole is
	// gone.
	BeginWhole()
	// EndWhole ends a read of the bucket whole.
	EndWhole()
}

// Conn is what Follow needs of the NATS connection (a *nats.Conn): whether it is connected, and
// how many times it reconnected.
type Conn interface {
	IsConnected() bool
	Stats() nats.Statistics
}

// ResumeGap is how long a connection may have been lost for Follow to resume after the last
// revision it applied rather than read the bucket whole again: the delete markers a per-key TTL
// leaves (LimitMarkerTTL, a minute) must still be there to be read.
const ResumeGap = 30 * time.Second

// resumeGap is ResumeGap; a test sets it to 0 to read whole after any reconnect.
var resumeGap = ResumeGap

// Follow keeps view as the bucket kv is, until ctx ends. Its first watch reads the bucket whole.
// The watch starts again when it ends or when conn reconnects: after a loss shorter than ResumeGap
// it resumes after the last revision applied, so that a NATS restart or a failover costs no reload
// and no staleness (nats.go's own recovery of a watch takes 10 to 20 seconds: its ordered
// consumer waits for two missed heartbeats); after a longer one, or before a read was ever whole,
// it reads the bucket whole again.
func Follow(ctx context.Context, kv jetstream.KeyValue, conn Conn, view View, log zerolog.Logger) {
	f := &follower{conn: conn, view: view, log: log.With().Str("bucket", kv.Bucket()).Logger()}
	resume := false
	for ctx.Err() == nil {
		var opts []jetstream.WatchOpt
		if resume {
			opts = append(opts, jetstream.ResumeFromRevision(f.last+1))
		} else {
			view.BeginWhole()
		}
		w, err := kv.WatchAll(ctx, opts...)
		if err != nil {
			f.log.Warn().Err(err).Msg("watch failed, trying again")
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
	conn Conn
	view View
	log  zerolog.Logger
	// last is the highest revision applied; whole reports that a watch read the bucket whole.
	last  uint64
	whole bool
}

// follow applies w's entries until ctx ends, w ends, or the connection came back; it reports
// whether the next watch may resume (the connection was lost for less than ResumeGap).
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
				f.log.Info().Dur("gap", gap).Msg("NATS reconnected, watching again")
				return gap < resumeGap
			}
			connected = time.Now()
		case e, ok := <-w.Updates():
			if !ok {
				return time.Since(connected) < resumeGap
			}
			if e == nil {
				if whole {
					f.view.EndWhole()
					f.whole = true
				}
				continue
			}
			f.view.Apply(e)
			f.last = max(f.last, e.Revision())
		}
	}
}
