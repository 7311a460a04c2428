// Package resume is the domain of the callback service (SPEC §7): it checks reply-to-tokens in the
// order the contract gives, publishes the resume and retry events the executor consumes, claims a
// token after its resume is published so that it is used once, and builds the public view of a
// privacy request. It reads privacy_requests (and the plan snapshots its records name) and never
// writes them; its only state is the claim of a used token.
package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// Refusals of SPEC §7. Each is returned wrapped in an *Error that names the request.
var (
	// ErrNoToken: no "Authorization: Bearer" token (401).
	ErrNoToken = errors.New("no bearer token")
	// ErrNotAuthorized: the token does not decrypt, is malformed or lacks the resume scope (403).
	ErrNotAuthorized = errors.New("token not authorized")
	// ErrTokenExpired: the token decrypted but is past its expiry (403).
	ErrTokenExpired = errors.New("token expired")
	// ErrNotFound: no privacy request has the id (404).
	ErrNotFound = errors.New("privacy request not found")
	// ErrOtherRequest: the token was issued for another privacy request (400).
	ErrOtherRequest = errors.New("token issued for another privacy request")
	// ErrTokenUsed: the token already resumed the request (409).
	ErrTokenUsed = errors.New("token already used")
	// ErrNotPaused: a resume of a request that is neither paused nor awaiting the answer of the
	// call the token was issued for (400).
	ErrNotPaused = errors.New("privacy request not paused")
	// ErrEarlierPause: the token was issued for an earlier pause of the request (400).
	ErrEarlierPause = errors.New("token issued for an earlier pause")
	// ErrNotFailed: a retry of a request that is not in error (400).
	ErrNotFailed = errors.New("privacy request not in error")
	// ErrUnavailable: NATS did not answer in time, to read the request or the token's claim or to
	// publish the event (a leader election takes seconds); nothing was recorded and the caller may
	// try again (503).
	ErrUnavailable = errors.New("event not published")
)

// Error is a refusal about one privacy request: Err is one of the sentinel errors above, ID the
// request id of the path and Status the request's status when it matters.
type Error struct {
	Err    error
	ID     string
	Status event.Status
}

func (e *Error) Error() string {
	if e.Status != "" {
		return fmt.Sprintf("resume: request %q (status %s): %v", e.ID, e.Status, e.Err)
	}
	return fmt.Sprintf("resume: request %q: %v", e.ID, e.Err)
}

// Unwrap returns the sentinel error.
func (e *Error) Unwrap() error { return e.Err }

func refuse(err error, id string) error { return &Error{Err: err, ID: id} }

// Publisher publishes to JetStream; jetstream.JetStream satisfies it.
type Publisher interface {
	Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Config holds what a Service needs.
type Config struct {
	// Requests is the privacy_requests bucket, read only.
	Requests jetstream.KeyValue
	// Snapshots reads the plan snapshots the records name (plan_snapshots).
	Snapshots *plansnapshots.Store
	// Claims is the resume_tokens bucket: one key per used token id.
	Claims jetstream.KeyValue
	// Publisher publishes the resume and retry events.
	Publisher Publisher
	// Tokens open reply-to-tokens: the sealer of the current key first, then the one of the
	// previous key (tokens issued before a key rotation), if any.
	Tokens []*token.Sealer
}

// Service checks resume tokens and publishes resume and retry events.
type Service struct {
	requests  jetstream.KeyValue
	snapshots *plansnapshots.Store
	claims    jetstream.KeyValue
	publisher Publisher
	tokens    []*token.Sealer
	now       func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{
		requests:  cfg.Requests,
		snapshots: cfg.Snapshots,
		claims:    cfg.Claims,
		publisher: cfg.Publisher,
		tokens:    cfg.Tokens,
		now:       time.Now,
	}
}

// publishTimeout bounds the publish and the claim of one resume, or the publish of one retry. They
// run on a context detached from the HTTP request, so that a client going away cannot stop them
// halfway.
const publishTimeout = 10 * time.Second

// claimSlack keeps a claim a little past the token's expiry, against clock skew between this
// service and the NATS server.
const claimSlack = time.Minute

// Ticket is a reply-to-token that passed every check of SPEC §7 for one request; Resume uses it.
type Ticket struct {
	claims  token.ResumeClaims
	request event.Request
}

// Check runs the checks of SPEC §7 on raw, the bearer token of a resume of request id, in the
// contract's order: no token, a token that does not open or lacks the scope, an expired token, an
// unknown request, a token of another request, a used token, a request that is neither paused nor
// awaiting the answer of the call the token was issued for (see awaitingHalt), a token of an
// earlier pause. It changes nothing.
func (s *Service) Check(ctx context.Context, id, raw string) (*Ticket, error) {
	if raw == "" {
		return nil, refuse(ErrNoToken, id)
	}
	claims, err := s.open(raw)
	if err != nil {
		return nil, refuse(err, id)
	}
	req, err := s.request(ctx, id)
	if err != nil {
		return nil, err
	}
	if claims.RequestID != id {
		return nil, refuse(ErrOtherRequest, id)
	}
	used, err := s.used(ctx, claims.ID)
	if err != nil {
		return nil, &Error{Err: err, ID: id}
	}
	if used {
		return nil, refuse(ErrTokenUsed, id)
	}
	switch {
	case req.Status == event.StatusPaused:
		if claims.Pause != req.Pause || claims.WebhookID != req.PausedWebhookID {
			return nil, refuse(ErrEarlierPause, id)
		}
	case !awaitingHalt(req, claims):
		return nil, &Error{Err: ErrNotPaused, ID: id, Status: req.Status}
	}
	return &Ticket{claims: claims, request: req}, nil
}

// awaitingHalt reports whether req is still waiting for the answer of the call that claims was
// issued for: in processing at that pre-webhook, with the pause the token names not yet recorded.
// The executor issues the token with the next pause number and records the pause only once the
// call has answered {"halt": true}, so a receiver that resumes at once arrives here (D3); the
// executor takes the resume after it has recorded the pause.
func awaitingHalt(req event.Request, claims token.ResumeClaims) bool {
	return req.Status == event.StatusInProcessing && req.Step == event.StepPreWebhooks &&
		claims.Pause == req.Pause+1 &&
		req.Next >= 0 && req.Next < len(req.Plan.Pre) && req.Plan.Pre[req.Next].ID == claims.WebhookID
}

// open decrypts raw with the first sealer that can and checks its scope, then its expiry: a token
// that lacks the scope is not authorized even when it has expired.
func (s *Service) open(raw string) (token.ResumeClaims, error) {
	var (
		claims token.ResumeClaims
		err    = token.ErrInvalid
	)
	for _, sealer := range s.tokens {
		claims = token.ResumeClaims{}
		err = sealer.Open(raw, &claims)
		if !errors.Is(err, token.ErrInvalid) {
			break
		}
	}
	switch {
	case err != nil && !errors.Is(err, token.ErrExpired):
		return claims, ErrNotAuthorized
	case !claims.HasScope(scope.PrivacyRequestResume) || claims.RequestID == "" || !event.ValidKVKey(claims.ID):
		return claims, ErrNotAuthorized
	case err != nil:
		return claims, ErrTokenExpired
	}
	return claims, nil
}

// request reads the state of request id, stored under event.KVKey(id); an id that is not a
// valid request id is not found.
func (s *Service) request(ctx context.Context, id string) (event.Request, error) {
	var req event.Request
	key := event.KVKey(id)
	if !event.ValidRequestID(id) {
		return req, refuse(ErrNotFound, id)
	}
	entry, err := s.requests.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return req, refuse(ErrNotFound, id)
	}
	if err != nil {
		return req, &Error{Err: fmt.Errorf("%w: read request: %w", ErrUnavailable, err), ID: id}
	}
	if err := json.Unmarshal(entry.Value(), &req); err != nil {
		return req, fmt.Errorf("resume: decode request %q: %w", id, err)
	}
	if err := req.CheckFormat(); err != nil {
		// A newer executor wrote it: this callback is older, being upgraded.
		return req, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: id}
	}
	if req.PlanRef != "" {
		// The executor stores the snapshot before the record that names it: an error here is
		// the store not answering.
		if req.Plan, err = s.snapshots.Get(ctx, req.PlanRef); err != nil {
			return req, &Error{Err: fmt.Errorf("%w: read plan snapshot: %w", ErrUnavailable, err), ID: id}
		}
	}
	req.ID = id
	return req, nil
}

func (s *Service) used(ctx context.Context, jti string) (bool, error) {
	_, err := s.claims.Get(ctx, jti)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	}
	return false, fmt.Errorf("%w: read claim: %w", ErrUnavailable, err)
}

// claim is the value kept under a used token's id: no personal data.
type claim struct {
	RequestID string    `json:"request_id"`
	WebhookID string    `json:"webhook_id"`
	Pause     int       `json:"pause"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// Resume publishes the resume event of the ticket's token with the derived identity (nil when
// none), then claims the token, and returns the request as it is being resumed.
//
// The publish comes first so that a token is never used up without its event: a publish that
// fails (or a crash before the claim) leaves no claim, and the receiver's next attempt publishes
// again. A repeated publish is harmless: it carries the same Nats-Msg-Id (the jti), and the
// executor ignores a resume whose pause no longer matches. A failed publish wraps
// ErrUnavailable. Losing the claim to a concurrent resume with the same token is ErrTokenUsed
// (both published the one, de-duplicated event). A claim that fails otherwise is logged and the
// resume stands: its event is on the stream.
func (s *Service) Resume(ctx context.Context, t *Ticket, derived *event.Identity) (View, error) {
	id, jti := t.claims.RequestID, t.claims.ID
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()

	if derived != nil && derived.IsZero() {
		derived = nil
	}
	payload, err := json.Marshal(event.Resume{
		RequestID: id, WebhookID: t.claims.WebhookID, Pause: t.claims.Pause, TokenID: jti, DerivedIdentity: derived,
	})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode event: %w", err)
	}
	value, err := json.Marshal(claim{RequestID: id, WebhookID: t.claims.WebhookID, Pause: t.claims.Pause, ClaimedAt: s.now().UTC()})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode claim: %w", err)
	}
	if _, err := s.publisher.Publish(ctx, event.SubjectResume, payload, jetstream.WithMsgID(jti)); err != nil {
		return View{}, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: id}
	}
	log := zerolog.Ctx(ctx)
	_, err = s.claims.Create(ctx, jti, value, jetstream.KeyTTL(s.claimTTL(t.claims.Expiry)))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return View{}, refuse(ErrTokenUsed, id)
	case err != nil:
		log.Warn().Err(err).Str("privacy_request_id", id).Int("pause", t.claims.Pause).
			Msg("resume published, but the token could not be recorded as used")
	}
	log.Info().Str("privacy_request_id", id).Int("pause", t.claims.Pause).
		Str("webhook_id", t.claims.WebhookID).Bool("derived_identity", derived != nil).Msg("resume published")

	req := t.request
	req.Status = event.StatusInProcessing
	return NewView(req), nil
}

// claimTTL is how long a claim must live: until the token expires, plus slack, at least a second.
func (s *Service) claimTTL(exp int64) time.Duration {
	ttl := time.Unix(exp, 0).Sub(s.now()).Truncate(time.Second) + time.Second + claimSlack
	return max(ttl, time.Second)
}

// Retry publishes a retry of request id, which must be in error, and returns the request as it is
// being restarted. The event's Nats-Msg-Id names the failure it answers, so that a repeated call
// publishes it once.
func (s *Service) Retry(ctx context.Context, id string) (View, error) {
	req, err := s.request(ctx, id)
	if err != nil {
		return View{}, err
	}
	if req.Status != event.StatusError {
		return View{}, &Error{Err: ErrNotFailed, ID: id, Status: req.Status}
	}
	payload, err := json.Marshal(event.Retry{RequestID: id, FromError: req.ErrorCount})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode retry: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	msgID := fmt.Sprintf("retry-%s-%d", id, req.ErrorCount)
	if _, err := s.publisher.Publish(ctx, event.SubjectRetry, payload, jetstream.WithMsgID(msgID)); err != nil {
		return View{}, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: id}
	}
	zerolog.Ctx(ctx).Info().Str("privacy_request_id", id).Int("from_error", req.ErrorCount).Msg("retry published")
	req.Status = event.StatusInProcessing
	req.Error = nil
	return NewView(req), nil
}

// Get returns the view of request id.
func (s *Service) Get(ctx context.Context, id string) (View, error) {
	req, err := s.request(ctx, id)
	if err != nil {
		return View{}, err
	}
	return NewView(req), nil
}
