package resume

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

// PreApprovalTicket is a pre-approval token that passed every check for one request; Reply uses
// it.
type PreApprovalTicket struct{ ticket }

// CheckPreApproval runs the checks of a pre-approval webhook's reply on raw, its bearer token for
// request id, in the contract's order: those of every reply-to-token (checkReply), then a request
// that is not awaiting_pre_approval, then a token of an earlier run of the stage or of a webhook
// that is not one of the request's pre-approval webhooks. It changes nothing.
func (s *Service) CheckPreApproval(ctx context.Context, id, raw string) (*PreApprovalTicket, error) {
	t, err := s.checkReply(ctx, preApprovalToken, id, raw)
	if err != nil {
		return nil, err
	}
	switch r, req := t.reply, t.request; {
	case req.Status != event.StatusAwaitingPreApproval:
		return nil, t.refuse(ErrNotAwaitingPreApproval)
	case r.Run != req.Run || !slices.ContainsFunc(preApprovalWebhooks(req.Plan), func(h event.PlanWebhook) bool { return h.ID == r.WebhookID }):
		return nil, t.refuse(ErrEarlierRun)
	}
	return &PreApprovalTicket{t}, nil
}

// preApprovalWebhooks returns the webhooks of p's pre-approval stage, none when it has none.
func preApprovalWebhooks(p event.Plan) []event.PlanWebhook {
	if p.PreApproval == nil {
		return nil
	}
	return p.PreApproval.Webhooks
}

// Reply publishes the pre-approval reply of the ticket's token, eligible or not, then claims the
// token (publishThenClaim), and returns the request with that reply, as the executor will record
// it; its status is left as read, the executor deciding what follows from the replies. The
// executor ignores a reply of another run, so a repeated publish is harmless.
func (s *Service) Reply(ctx context.Context, t *PreApprovalTicket, eligible bool) (View, error) {
	r := t.reply
	payload, err := json.Marshal(event.PreApprovalReply{
		RequestID: r.RequestID, WebhookID: r.WebhookID, Run: r.Run, Eligible: eligible, TokenID: r.ID,
	})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode pre-approval reply: %w", err)
	}
	if err := s.publishThenClaim(ctx, t.ticket, event.SubjectPreApproval, payload); err != nil {
		return View{}, err
	}
	zerolog.Ctx(ctx).Info().Str("privacy_request_id", r.RequestID).Int("run", r.Run).
		Str("webhook_id", r.WebhookID).Bool("eligible", eligible).Msg("pre-approval reply published")

	req := t.request
	answer := event.ReplyNotEligible
	if eligible {
		answer = event.ReplyEligible
	}
	req.Webhooks = slices.Clone(req.Webhooks)
	for i, w := range req.Webhooks {
		if w.CallbackType == event.PreApprovalCallback && w.ID == r.WebhookID {
			req.Webhooks[i].Reply = answer
		}
	}
	return NewView(req), nil
}

// Review publishes an operator's approval (approved) or denial of request id, with the denial's
// reason, and returns the request as it is being approved (in_processing) or denied. The request
// must be awaiting_pre_approval or pre_approval_not_eligible. The event's Nats-Msg-Id names the
// request and the run of its pre-approval stage, so that a repeated click publishes once: a review
// the stream already holds for that run (the same click again, or the other decision within the
// duplicate window) is not published again, and the answer is then the request as read.
func (s *Service) Review(ctx context.Context, id string, approved bool, reason string) (View, error) {
	req, err := s.request(ctx, id)
	if err != nil {
		return View{}, err
	}
	if req.Status != event.StatusAwaitingPreApproval && req.Status != event.StatusPreApprovalNotEligible {
		return View{}, &Error{Err: ErrNotReviewable, ID: id, Status: req.Status}
	}
	if approved {
		reason = ""
	}
	payload, err := json.Marshal(event.Review{RequestID: id, Approved: approved, Reason: reason})
	if err != nil {
		return View{}, fmt.Errorf("resume: encode review: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	msgID := fmt.Sprintf("review-%s-%d", id, req.Run)
	ack, err := s.publish(ctx, req, event.SubjectReview, payload, jetstream.WithMsgID(msgID))
	if err != nil {
		return View{}, &Error{Err: fmt.Errorf("%w: %w", ErrUnavailable, err), ID: id}
	}
	zerolog.Ctx(ctx).Info().Str("privacy_request_id", id).Int("run", req.Run).Bool("approved", approved).
		Bool("duplicate", ack != nil && ack.Duplicate).Msg("review published")
	switch {
	case ack != nil && ack.Duplicate:
	case approved:
		req.Status = event.StatusInProcessing
	default:
		req.Status, req.DenyReason = event.StatusDenied, reason
	}
	return NewView(req), nil
}
