package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// Filter selects the requests in error a scoped retry restarts (SPEC §7); a zero field matches
// every request.
type Filter struct {
	PolicyKey     string
	WebhookKey    string
	ConnectionKey string
	// Since and Until bound when the request went to error: Since <= at < Until.
	Since, Until time.Time
	// Status is the HTTP status of the failed webhook's last attempt.
	Status int
}

// matches reports whether e is selected by f.
func (f Filter) matches(e event.Errored) bool {
	return (f.PolicyKey == "" || e.PolicyKey == f.PolicyKey) &&
		(f.WebhookKey == "" || e.WebhookKey == f.WebhookKey) &&
		(f.ConnectionKey == "" || e.ConnectionKey == f.ConnectionKey) &&
		(f.Since.IsZero() || !e.At.Before(f.Since)) &&
		(f.Until.IsZero() || e.At.Before(f.Until)) &&
		(f.Status == 0 || e.Status == f.Status)
}

// MaxRetriesPerCall bounds the retries one scoped retry publishes, so that a call answers well
// within the server's write timeout; Replay.More says a repeat has more to queue.
const MaxRetriesPerCall = 1000

// Replay is what a scoped retry did.
type Replay struct {
	// Queued counts the requests whose retry was queued by this call: neither one that left its
	// error since it was indexed nor one whose retry of this error was queued before (by an
	// earlier call within the stream's duplicate window) is counted.
	Queued int `json:"queued"`
	// More reports that the call stopped at MaxRetriesPerCall: the same call again queues the rest.
	More bool `json:"more"`
}

// RetryMatching publishes the retry of every request in error that f selects, from its failed step,
// as Retry does for one. The candidates come from errored_requests; each is checked against its
// record (still in the error it was indexed for) before its retry is published. It is idempotent:
// a retry of one error is stored once (publishRetry), and a request retried since is no longer in
// error (once the executor took the retry; until then the record still says error, and a repeat
// within the stream's 2-minute duplicate window is recognised as one).
func (s *Service) RetryMatching(ctx context.Context, f Filter) (Replay, error) {
	entries, err := s.erroredEntries(ctx)
	if err != nil {
		return Replay{}, err
	}
	var out Replay
	for _, e := range entries {
		if !f.matches(e) {
			continue
		}
		if out.Queued == MaxRetriesPerCall {
			out.More = true
			break
		}
		req, err := s.state(ctx, e.ID)
		var re *Error
		switch {
		case errors.As(err, &re) && errors.Is(re.Err, ErrUnavailable):
			return out, err
		case err != nil:
			// Gone, or a record this version cannot read: not one to retry here.
			zerolog.Ctx(ctx).Warn().Err(err).Str("privacy_request_id", e.ID).Msg("scoped retry: request skipped")
			continue
		case !e.Current(req):
			continue // retried since, or failed again and indexed anew
		}
		dup, err := s.publishRetry(ctx, req)
		if err != nil {
			return out, err
		}
		if !dup {
			out.Queued++
		}
	}
	return out, nil
}

// erroredEntries reads every entry of errored_requests, in one pass of an ordered consumer; an
// entry it cannot decode is skipped with a warning.
func (s *Service) erroredEntries(ctx context.Context) ([]event.Errored, error) {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var out []event.Errored
	err := natsconn.Each(ctx, s.errored, func(kve jetstream.KeyValueEntry) error {
		var e event.Errored
		if err := json.Unmarshal(kve.Value(), &e); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("key", kve.Key()).Msg("scoped retry: undecodable entry of errored_requests skipped")
			return nil
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	}
	return out, nil
}
