package connection

import (
	"context"
	"errors"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Breakers are the connections' circuit breakers in connection_health (breaker.Store), which
// the executor opens and closes as calls fail and succeed (SPEC §6.3).
type Breakers interface {
	Get(ctx context.Context, key string) (event.ConnectionHealth, uint64, error)
	All(ctx context.Context) ([]event.ConnectionHealth, error)
	Close(ctx context.Context, key string) (event.ConnectionHealth, error)
	Delete(ctx context.Context, key string) error
}

// ErrNoBreakers reports a service built without breakers (tests that do not need them).
var ErrNoBreakers = errors.New("connection: circuit breakers are not available")

// UseBreakers gives the service the connections' circuit breakers.
func (s *Service) UseBreakers(b Breakers) { s.breakers = b }

// Health returns the circuit breaker of connection key (closed, with no failures, when the
// executor never counted one).
func (s *Service) Health(ctx context.Context, key string) (event.ConnectionHealth, error) {
	if _, err := s.Get(ctx, key); err != nil {
		return event.ConnectionHealth{}, err
	}
	if s.breakers == nil {
		return event.ConnectionHealth{}, ErrNoBreakers
	}
	h, _, err := s.breakers.Get(ctx, key)
	return h, err
}

// Healths returns the circuit breakers with an entry, in connection key order. A connection whose
// calls never failed has no entry (it is closed); an entry outlives its connection only when
// removing it at the delete failed (logged), and is then the breaker a connection created again
// with the key starts from.
func (s *Service) Healths(ctx context.Context) ([]event.ConnectionHealth, error) {
	if s.breakers == nil {
		return nil, ErrNoBreakers
	}
	return s.breakers.All(ctx)
}

// CloseBreaker closes the circuit breaker of connection key by hand (an operator knows the
// endpoint is back): the requests waiting on it call it again as they next look, and
// privacy.connection.healthy is published. A closed breaker stays as it is.
func (s *Service) CloseBreaker(ctx context.Context, key string) (event.ConnectionHealth, error) {
	if _, err := s.Get(ctx, key); err != nil {
		return event.ConnectionHealth{}, err
	}
	if s.breakers == nil {
		return event.ConnectionHealth{}, ErrNoBreakers
	}
	return s.breakers.Close(ctx, key)
}

// forgetBreaker removes the breaker of a deleted connection; a failure is logged, not returned
// (a connection created again later with the key starts from the stale entry, which its first
// answered call or an operator closes).
func (s *Service) forgetBreaker(ctx context.Context, key string) {
	if s.breakers == nil {
		return
	}
	if err := s.breakers.Delete(ctx, key); err != nil {
		s.log.Warn().Err(err).Str("connection_key", key).Msg("circuit breaker of a deleted connection not removed")
	}
}
