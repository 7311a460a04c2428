// Package sweep is the backstop of identity purge (SPEC §5.1): now and then it lists the requests
// that have identities stored and forgets those of finished requests. The lifecycle forgets an
// identity when its request finishes (row F1); the sweep finds what that missed: an identity a NATS
// server brought back after a hard kill (a removed message it revived while recovering), one that a
// repeated submission stored anew and a crash left behind, and those of requests that finished
// under a version without purge.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/services/executor/internal/store"
	"github.com/rs/zerolog"
)

// Records reads request records (store.Records).
type Records interface {
	Load(ctx context.Context, id string) (*lifecycle.Record, uint64, error)
}

// Identities lists and forgets stored identities (store.Identities).
type Identities interface {
	Requests(ctx context.Context) ([]string, error)
	Forget(ctx context.Context, id string, until time.Time) error
}

// Sweeper forgets the identities of finished requests.
type Sweeper struct {
	Records    Records
	Identities Identities
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
	var res Result
	for _, id := range ids {
		res.Checked++
		rec, _, err := s.Records.Load(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return res, fmt.Errorf("sweep: %w", err)
		case !rec.Finished():
			continue
		}
		until := rec.IdentityKeptUntil(s.Cfg)
		if until.After(now()) {
			res.Kept++ // it expires then by its own TTL, and a later sweep removes it if not
			continue
		}
		if err := s.Identities.Forget(ctx, id, until); err != nil {
			return res, fmt.Errorf("sweep: %w", err)
		}
		res.Forgotten++
	}
	return res, nil
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
			s.Log.Warn().Err(err).Int("forgotten", res.Forgotten).Msg("identity sweep failed")
		case res.Forgotten > 0:
			s.Log.Info().Int("checked", res.Checked).Int("forgotten", res.Forgotten).Msg("identity sweep forgot the identities of finished requests")
		}
	}
}
