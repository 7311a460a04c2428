// Package resume is the domain of the callback service (SPEC §7): it checks reply-to-tokens (a
// halting pre-webhook's resume token, a pre-approval webhook's reply token) in the order the
// contract gives, publishes the resume, pre-approval reply, review and retry events the executor
// consumes, claims a reply-to-token after its event is published so that it is used once, and
// builds the public view of a privacy request. It reads privacy_requests (and the plan snapshots
// its records name) and never writes them; its only state is the claim of a used token.
package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Refusals of SPEC §7. Each is returned wrapped in an *Error that names the request.
var (
	// ErrNoToken: no "Authorization: Bearer" token (401).
	ErrNoToken = errors.New("no bearer token")
	// ErrNotAuthorized: the token does not decrypt, is malformed, is of another kind or lacks its
	// scope (403).
	ErrNotAuthorized = errors.New("token not authorized")
	// ErrTokenExpired: the token decrypted but is past its expiry (403).
	ErrTokenExpired = errors.New("token expired")
	// ErrNotFound: no privacy request has the id (404).
	ErrNotFound = errors.New("privacy request not found")
	// ErrOtherRequest: the token was issued for another privacy request (400).
	ErrOtherRequest = errors.New("token issued for another privacy request")
	// ErrTokenUsed: the token was already used: it resumed the request, or its pre-approval reply
	// was taken (409).
	ErrTokenUsed = errors.New("token already used")
	// ErrNotPaused: a resume of a request that is neither paused nor awaiting the answer of the
	// call the token was issued for (400).
	ErrNotPaused = errors.New("privacy request not paused")
	// ErrEarlierPause: the token was issued for an earlier pause of the request (400).
	ErrEarlierPause = errors.New("token issued for an earlier pause")
	// ErrNotAwaitingPreApproval: a pre-approval reply to a request that is not
	// awaiting_pre_approval (400).
	ErrNotAwaitingPreApproval = errors.New("privacy request not awaiting pre-approval")
	// ErrEarlierRun: the pre-approval token was issued in an earlier run of the pre-approval
	// stage, or for a webhook that is not one of the request's pre-approval webhooks (400).
	ErrEarlierRun = errors.New("token issued in an earlier run of the pre-approval stage")
	// ErrNotReviewable: an approval or denial of a request that is neither awaiting_pre_approval
	// nor pre_approval_not_eligible (400).
	ErrNotReviewable = errors.New("privacy request not in the pre-approval stage")
	// ErrNotFailed: a retry of a request that is not in error (400).
	ErrNotFailed = errors.New("privacy request not in error")
	// ErrUnavailable: NATS did not answer in time, to read the request or the token's claim or to
	// publish the event (a leader election takes seconds); nothing was recorded and the caller may
	// try again (503).
	ErrUnavailable = errors.New("event not published")
)

// Error is a refusal about one privacy request: Err is one of the sentinel errors above, ID the
// request id of the path, Status the request's status when it matters and Op, for a call with a
// reply-to-token, what the refusal calls it ("resume request", "pre-approval reply").
type Error struct {
	Err    error
	ID     string
	Status event.Status
	Op     string
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
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Config holds what a Service needs.
type Config struct {
	// Requests is the privacy_requests bucket, read only.
	Requests jetstream.KeyValue
	// Snapshots reads the plan snapshots the records name (plan_snapshots).
	Snapshots *plansnapshots.Store
	// Claims is the resume_tokens bucket: one key per used token id.
	Claims jetstream.KeyValue
	// Errored is the errored_requests bucket, read only (scoped retries).
	Errored jetstream.KeyValue
	// Publisher publishes the events.
	Publisher Publisher
	// Tokens open reply-to-tokens: the sealer of the current key first, then the one of the
	// previous key (tokens issued before a key rotation), if any.
	Tokens []*token.Sealer
	// Tracing starts the span of each event published; nil: tracing off.
	Tracing *tracing.Provider
}

// Service checks reply-to-tokens and publishes resume, pre-approval reply, review and retry events.
type Service struct {
	requests  jetstream.KeyValue
	snapshots *plansnapshots.Store
	claims    jetstream.KeyValue
	errored   jetstream.KeyValue
	publisher Publisher
	tokens    []*token.Sealer
	tracing   *tracing.Provider
	now       func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	return &Service{
		requests:  cfg.Requests,
		snapshots: cfg.Snapshots,
		claims:    cfg.Claims,
		errored:   cfg.Errored,
		publisher: cfg.Publisher,
		tokens:    cfg.Tokens,
		tracing:   cfg.Tracing,
		now:       time.Now,
	}
}

// publishTimeout bounds the publish and the claim of one reply-to-token's call, or the publish of
// one review or retry. They run on a context detached from the HTTP request, so that a client
// going away cannot stop them halfway.
const publishTimeout = 10 * time.Second

// claimSlack keeps a claim a little past the token's expiry, against clock skew between this
// service and the NATS server.
const claimSlack = time.Minute

// Ticket is a resume token that passed every check of SPEC §7 for one request; Resume uses it.
type Ticket struct{ ticket }

// Check runs the checks of SPEC §7 on raw, the bearer token of a resume of request id, in the
// contract's order: those of every reply-to-token (checkReply), then a request that is neither
// paused nor awaiting the answer of the call the token was issued for (see awaitingHalt), a token
// of an earlier pause. It changes nothing.
func (s *Service) Check(ctx context.Context, id, raw string) (*Ticket, error) {
	t, err := s.checkReply(ctx, resumeToken, id, raw)
	if err != nil {
		return nil, err
	}
	switch r, req := t.reply, t.request; {
	case req.Status == event.StatusPaused:
		if r.Pause != req.Pause || r.WebhookID != req.PausedWebhookID {
			return nil, t.refuse(ErrEarlierPause)
		}
	case !awaitingHalt(req, r):
		return nil, t.refuse(ErrNotPaused)
	}
	return &Ticket{t}, nil
}

// awaitingHalt reports whether req is still waiting for the answer of the call that the resume
// token r was issued for: in processing at that pre-webhook, with the pause the token names not yet
// recorded. The executor issues the token with the next pause number and records the pause only
// once the call has answered {"halt": true}, so a receiver that resumes at once arrives here (D3);
// the executor takes the resume after it has recorded the pause.
func awaitingHalt(req event.Request, r reply) bool {
	return req.Status == event.StatusInProcessing && req.Step == event.StepPreWebhooks &&
		r.Pause == req.Pause+1 &&
		req.Next >= 0 && req.Next < len(req.Plan.Pre) && req.Plan.Pre[req.Next].ID == r.WebhookID
}

// state reads the record of request id without its plan (its snapshot is not read): what a
// decision on its status needs.
func (s *Service) state(ctx context.Context, id string) (event.Request, error) {
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
	req.ID = id
	return req, nil
}

// request reads the state of request id, stored under event.KVKey(id); an id that is not a
// valid request id is not found.
func (s *Service) request(ctx context.Context, id string) (event.Request, error) {
	req, err := s.state(ctx, id)
	if err != nil {
		return req, err
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

// Resume publishes the resume event of the ticket's token with the derived identity (nil when
// none), then claims the token (publishThenClaim), and returns the request as it is being
// resumed. The executor ignores a resume whose pause no longer matches, so a repeated publish is
// harmless.
func (s *Service) Resume(ctx context.Context, t *Ticket, derived *event.Identity) (View, error) {
	if derived != nil && derived.IsZero() {
		derived = nil
	}
	r := t.reply
	payload, err := json.Marshal(event.Resume{
		RequestID: r.RequestID, WebhookID: r.WebhookID, Pause: r.Pause, TokenID: r.ID, DerivedIdentity: derived,
	})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode event: %w", err)
	}
	if err := s.publishThenClaim(ctx, t.ticket, event.SubjectResume, payload); err != nil {
		return View{}, err
	}
	zerolog.Ctx(ctx).Info().Str("privacy_request_id", r.RequestID).Int("pause", r.Pause).
		Str("webhook_id", r.WebhookID).Bool("derived_identity", derived != nil).Msg("resume published")

	req := t.request
	req.Status = event.StatusInProcessing
	return NewView(req), nil
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
	if _, err := s.publishRetry(ctx, req); err != nil {
		return View{}, err
	}
	req.Status = event.StatusInProcessing
	req.Error = nil
	return NewView(req), nil
}

// publishRetry publishes the retry of req from its current error, with Nats-Msg-Id
// retry-<id>-<error count>: a repeated retry of one error (a second click, a scoped retry that
// matches it again) is stored once. It reports whether the stream already had it.
func (s *Service) publishRetry(ctx context.Context, req event.Request) (bool, error) {
	payload, err := json.Marshal(event.Retry{RequestID: req.ID, FromError: req.ErrorCount})
	if err != nil {
		return false, fmt.Errorf("resume: encode retry: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	msgID := fmt.Sprintf("retry-%s-%d", req.ID, req.ErrorCount)
	ack, err := s.publish(ctx, req, event.SubjectRetry, payload, jetstream.WithMsgID(msgID))
	if err != nil {
		return false, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: req.ID}
	}
	zerolog.Ctx(ctx).Info().Str("privacy_request_id", req.ID).Int("from_error", req.ErrorCount).Msg("retry published")
	return ack != nil && ack.Duplicate, nil
}

// publish publishes payload on subject, an event about req, in a producer span that is a child of
// req's trace (event.Request.Trace: the span of its submission), not of the HTTP call that asked
// for it: a receiver's resume hours later, or an operator's retry, joins the request's one trace.
// The message carries the span's trace context, so the executor's run joins it too.
func (s *Service) publish(ctx context.Context, req event.Request, subject string, payload []byte,
	opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ctx, span := s.tracing.Start(s.tracing.Parent(ctx, req.Trace), subject+" publish",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("privacy_request.id", req.ID), attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", subject)))
	defer span.End()
	ack, err := s.publisher.PublishMsg(ctx, tracing.NewMsg(ctx, subject, payload), opts...)
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
	}
	return ack, err
}

// Get returns the view of request id.
func (s *Service) Get(ctx context.Context, id string) (View, error) {
	req, err := s.request(ctx, id)
	if err != nil {
		return View{}, err
	}
	return NewView(req), nil
}
