// Package sweep is the backstop of what the lifecycle keeps beside a request's record (SPEC §5.1,
// §7): now and then it lists the requests that have identities stored and forgets those of
// finished requests, and removes the entries of errored_requests whose request is no longer in
// that error. The lifecycle forgets an identity when its request finishes (row F1); the sweep finds
// what that missed: an identity a NATS server brought back after a hard kill (a removed message it
// revived while recovering), one that a repeated submission stored anew and a crash left behind,
// and those of requests that finished under a version without purge. An entry of errored_requests
// is left behind by a request retried and still running (or failed again: then it is replaced).
package sweep

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

// Records reads request records (store.Records).
type Records interface {
	Load(ctx context.Context, id string) (*lifecycle.Record, uint64, error)
}

// Identities lists and forgets stored identities (store.Identities).
type Identities interface {
	Requests(ctx context.Context) ([]string, error)
	ForgetAll(ctx context.Context, id string, until time.Time) error
}

// Errors lists and removes entries of errored_requests (store.Errored).
type Errors interface {
	Entries(ctx context.Context) ([]store.Entry, error)
	DeleteAt(ctx context.Context, id string, rev uint64) error
	Put(ctx context.Context, e event.Errored) error
}

// Sweeper forgets the identities of finished requests and removes stale entries of
// errored_requests.
type Sweeper struct {
	Records    Records
	Identities Identities
	Errors     Errors
	// Cfg gives FINISHED_IDENTITY_RETENTION (Record.IdentityKeptUntil).
	Cfg lifecycle.Config
	Log zerolog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Result is what one sweep did.
type Result struct {
	// Checked counts the requests with stored identities; Forgotten those whose identity was
	// forgotten; Kept the finished ones still within FINISHED_IDENTITY_RETENTION.
	Checked, Forgotten, Kept int
	// Unindexed counts the entries of errored_requests removed, Indexed those written for requests
	// in error that had none (they failed under a version without the index).
	Unindexed, Indexed int
}

// Once sweeps every request with a stored identity. A request with no record is left alone: its
// record may be being written right now (the identity of a new submission is stored beside it),
// and its identity expires with IDENTITY_TTL anyway.
func (s *Sweeper) Once(ctx context.Context) (Result, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ids, err := s.Identities.Requests(ctx)
	if err != nil {
		return Result{}, err
	}
	entries, err := s.Errors.Entries(ctx)
	if err != nil {
		return Result{}, err
	}
	indexed := map[string]store.Entry{}
	for _, e := range entries {
		indexed[e.ID] = e
	}
	var res Result
	for _, id := range ids {
		res.Checked++
		rec, _, err := s.Records.Load(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			// A record this version cannot read (a newer executor's, during an upgrade) or a
			// store not answering: the next sweep tries again.
			s.Log.Warn().Err(err).Str("request_id", id).Msg("sweep: request skipped")
			continue
		case rec.Status == event.StatusError:
			// A request in error keeps its identity (a retry needs it): index it if it failed
			// before the index existed.
			if e, ok := indexed[id]; !ok || !e.Current(rec.Request) {
				if err := s.Errors.Put(ctx, rec.Errored()); err != nil {
					s.Log.Warn().Err(err).Str("request_id", id).Msg("sweep: request in error not indexed")
					continue
				}
				res.Indexed++
			}
			continue
		case !rec.Finished():
			continue
		}
		until := rec.IdentityKeptUntil(s.Cfg)
		if until.After(now()) {
			res.Kept++ // it expires then by its own TTL, and a later sweep removes it if not
			continue
		}
		if err := s.Identities.ForgetAll(ctx, id, until); err != nil {
			s.Log.Warn().Err(err).Str("request_id", id).Msg("sweep: identity not forgotten")
			continue
		}
		res.Forgotten++
	}
	s.unindex(ctx, entries, &res)
	return res, nil
}

// unindex removes the entries of errored_requests whose request is gone or no longer in the error
// they name, each only if no later error replaced it meanwhile.
func (s *Sweeper) unindex(ctx context.Context, entries []store.Entry, res *Result) {
	for _, e := range entries {
		rec, _, err := s.Records.Load(ctx, e.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			s.Log.Warn().Err(err).Str("request_id", e.ID).Msg("sweep: entry of errored_requests skipped")
			continue
		case e.Current(rec.Request):
			continue
		}
		switch err := s.Errors.DeleteAt(ctx, e.ID, e.Revision); {
		case errors.Is(err, store.ErrConflict):
		case err != nil:
			s.Log.Warn().Err(err).Str("request_id", e.ID).Msg("sweep: entry of errored_requests not removed")
		default:
			res.Unindexed++
		}
	}
}

// Run sweeps every interval (with up to a tenth of it added at random, so that replicas spread
// out) until ctx ends, the first time after one interval. A failed sweep is logged and tried at
// the next one.
func (s *Sweeper) Run(ctx context.Context, every time.Duration) {
	for {
		wait := every + time.Duration(rand.Int64N(int64(every)/10+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		res, err := s.Once(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.Log.Warn().Err(err).Int("forgotten", res.Forgotten).Msg("sweep failed")
		case res.Forgotten > 0 || res.Unindexed > 0 || res.Indexed > 0:
			s.Log.Info().Int("checked", res.Checked).Int("forgotten", res.Forgotten).Int("unindexed", res.Unindexed).
				Int("indexed", res.Indexed).Msg("sweep: forgot identities of finished requests, updated errored_requests")
		}
	}
}
