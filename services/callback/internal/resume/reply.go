package resume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// reply holds the claims of a reply-to-token of either kind, as the steps every such token goes
// through read them: a resume token names a pause, a pre-approval token a run of the pre-approval
// stage.
type reply struct {
	token.Claims
	RequestID string
	WebhookID string
	Pause     int
	Run       int
}

// kind is one kind of reply-to-token: what its refusals call the request it answers, and how its
// claims open.
type kind struct {
	// op names the call in refusals: "Invalid <op>: ...".
	op string
	// open opens raw with sealer into this kind's claims, and reports whether they grant the
	// kind's scope.
	open func(sealer *token.Sealer, raw string) (r reply, granted bool, err error)
}

var (
	// resumeToken is a halting pre-webhook's reply-to-token (token.ResumeClaims, scope
	// privacy-request:resume).
	resumeToken = kind{op: "resume request", open: func(sealer *token.Sealer, raw string) (reply, bool, error) {
		var c token.ResumeClaims
		err := sealer.Open(raw, &c)
		return reply{Claims: c.Claims, RequestID: c.RequestID, WebhookID: c.WebhookID, Pause: c.Pause},
			c.HasScope(scope.PrivacyRequestResume), err
	}}
	// preApprovalToken is a pre-approval webhook's reply-to-token (token.PreApprovalClaims, scope
	// privacy-request:review).
	preApprovalToken = kind{op: "pre-approval reply", open: func(sealer *token.Sealer, raw string) (reply, bool, error) {
		var c token.PreApprovalClaims
		err := sealer.Open(raw, &c)
		return reply{Claims: c.Claims, RequestID: c.RequestID, WebhookID: c.WebhookID, Run: c.Run},
			c.HasScope(scope.PrivacyRequestReview), err
	}}
)

// ticket is a reply-to-token of kind k that passed the checks of checkReply, and the request it
// answers as read during them.
type ticket struct {
	k       kind
	reply   reply
	request event.Request
}

// refuse returns err as the refusal of t's call, naming the request's status.
func (t ticket) refuse(err error) error {
	return &Error{Err: err, ID: t.request.ID, Status: t.request.Status, Op: t.k.op}
}

// checkReply runs the checks every reply-to-token goes through, in SPEC §7's order, on raw, the
// bearer token of a call of kind k about request id: no token, a token that does not open as k or
// lacks its scope, request id or a usable jti, an expired token, an unknown request, a token of
// another request, a used token. The caller then checks the request's state. It changes nothing.
func (s *Service) checkReply(ctx context.Context, k kind, id, raw string) (ticket, error) {
	refuse := func(err error) error { return &Error{Err: err, ID: id, Op: k.op} }
	if raw == "" {
		return ticket{}, refuse(ErrNoToken)
	}
	r, err := s.open(k, raw)
	if err != nil {
		return ticket{}, refuse(err)
	}
	req, err := s.request(ctx, id)
	if err != nil {
		return ticket{}, err
	}
	if r.RequestID != id {
		return ticket{}, refuse(ErrOtherRequest)
	}
	used, err := s.used(ctx, r.ID)
	if err != nil {
		return ticket{}, refuse(err)
	}
	if used {
		return ticket{}, refuse(ErrTokenUsed)
	}
	return ticket{k: k, reply: r, request: req}, nil
}

// open decrypts raw as a token of kind k with the first sealer that can, and checks its scope,
// then its expiry: a token that lacks the scope is not authorized even when it has expired.
func (s *Service) open(k kind, raw string) (reply, error) {
	var (
		r       reply
		granted bool
		err     = token.ErrInvalid
	)
	for _, sealer := range s.tokens {
		r, granted, err = k.open(sealer, raw)
		if !errors.Is(err, token.ErrInvalid) {
			break
		}
	}
	switch {
	case err != nil && !errors.Is(err, token.ErrExpired):
		return r, ErrNotAuthorized
	case !granted || r.RequestID == "" || !event.ValidKVKey(r.ID):
		return r, ErrNotAuthorized
	case err != nil:
		return r, ErrTokenExpired
	}
	return r, nil
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

// claim is the value kept under a used token's id: no personal data. Pause is a resume token's,
// Run a pre-approval token's; the other is left out.
type claim struct {
	RequestID string    `json:"request_id"`
	WebhookID string    `json:"webhook_id"`
	Pause     int       `json:"pause,omitempty"`
	Run       int       `json:"run,omitempty"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// publishThenClaim publishes payload, the event of t's call, on subject with the token's jti as
// Nats-Msg-Id, then claims the jti in resume_tokens until the token expires.
//
// The publish comes first so that a token is never used up without its event: a publish that
// fails (or a crash before the claim) leaves no claim, and the caller's next attempt publishes
// again. A repeated publish carries the same Nats-Msg-Id, and the executor ignores an event that
// no longer matches the request's state. A failed publish wraps ErrUnavailable. Losing the claim
// to a concurrent call with the same token is ErrTokenUsed (both published the one, de-duplicated
// event). A claim that fails otherwise is logged and the call stands: its event is on the stream.
// Both run on a context detached from the HTTP request, so that a client going away cannot stop
// them halfway.
func (s *Service) publishThenClaim(ctx context.Context, t ticket, subject string, payload []byte) error {
	r := t.reply
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	value, err := json.Marshal(claim{RequestID: r.RequestID, WebhookID: r.WebhookID, Pause: r.Pause, Run: r.Run, ClaimedAt: s.now().UTC()})
	if err != nil {
		return fmt.Errorf("resume: encode claim: %w", err)
	}
	if _, err := s.publish(ctx, t.request, subject, payload, jetstream.WithMsgID(r.ID)); err != nil {
		return &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: r.RequestID}
	}
	_, err = s.claims.Create(ctx, r.ID, value, jetstream.KeyTTL(s.claimTTL(r.Expiry)))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return t.refuse(ErrTokenUsed)
	case err != nil:
		zerolog.Ctx(ctx).Warn().Err(err).Str("privacy_request_id", r.RequestID).Str("subject", subject).
			Msg("event published, but the token could not be recorded as used")
	}
	return nil
}

// claimTTL is how long a claim must live: until the token expires, plus slack, at least a second.
func (s *Service) claimTTL(exp int64) time.Duration {
	ttl := time.Unix(exp, 0).Sub(s.now()).Truncate(time.Second) + time.Second + claimSlack
	return max(ttl, time.Second)
}
