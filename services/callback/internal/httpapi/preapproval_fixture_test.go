package httpapi

import (
	"fmt"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/token"
)

// preApprovalRequest is a request in its pre-approval stage at run, as the executor records it:
// both pre-approval webhooks were called, "wh-legal" replied eligible and "wh-fraud" has not
// replied yet. The pre-webhooks of pausedRequest wait for their turn; the pre-approval records
// come last.
func preApprovalRequest(id string, run int) event.Request {
	req := pausedRequest(id, 0)
	due := t0.Add(60 * time.Hour)
	req.Status, req.Step, req.Run, req.Next = event.StatusAwaitingPreApproval, event.StepPreApproval, run, 0
	req.PausedWebhookID, req.PauseExpiresAt, req.PausedAt, req.ApprovalDue = "", nil, nil, &due
	req.Plan.PreApproval = &event.PreApproval{Webhooks: []event.PlanWebhook{
		{ID: "wh-fraud", Key: "fraud_check", Name: "Fraud check", Direction: event.OneWay, Order: 0, ConnectionKey: "c3", Secrets: "ph1.abcd.SEALEDSECRET"},
		{ID: "wh-legal", Key: "legal_check", Name: "Legal check", Direction: event.OneWay, Order: 1, ConnectionKey: "c3", Secrets: "ph1.abcd.SEALEDSECRET"},
	}}
	req.Format = req.Layout()
	for i := range req.Webhooks {
		req.Webhooks[i].Outcome, req.Webhooks[i].Attempts, req.Webhooks[i].Interrupted = event.OutcomePending, nil, 0
	}
	req.Webhooks = append(req.Webhooks,
		event.WebhookRecord{ID: "wh-fraud", Key: "fraud_check", CallbackType: event.PreApprovalCallback, Direction: event.OneWay, Order: 0,
			Outcome: event.OutcomeSucceeded, Attempts: []event.Attempt{{At: t0.Add(time.Second), WebhookID: "msg_fraud", Status: 200, LatencyMS: 4}}},
		event.WebhookRecord{ID: "wh-legal", Key: "legal_check", CallbackType: event.PreApprovalCallback, Direction: event.OneWay, Order: 1,
			Outcome: event.OutcomeSucceeded, Reply: event.ReplyEligible,
			Attempts: []event.Attempt{{At: t0.Add(time.Second), WebhookID: "msg_legal", Status: 200, LatencyMS: 5}}},
	)
	return req
}

// notEligibleRequest is preApprovalRequest once "wh-fraud" replied not eligible: an operator's
// review is awaited.
func notEligibleRequest(id string, run int) event.Request {
	req := preApprovalRequest(id, run)
	req.Status, req.ApprovalDue = event.StatusPreApprovalNotEligible, nil
	req.Webhooks[len(req.Webhooks)-2].Reply = event.ReplyNotEligible
	return req
}

// preApprovalToken mints a pre-approval webhook's reply-to-token as the executor does: its jti is
// the call's webhook-id (here derived from the request, webhook and run, so that every token of one
// call shares it).
func (f *fixture) preApprovalToken(id, webhookID string, run int) (raw, jti string) {
	f.t.Helper()
	return sealPreApproval(f.t, f.resume, token.PreApprovalClaims{
		Claims:    token.Claims{ID: fmt.Sprintf("msg_%s_%s_%d", event.KVKey(id), webhookID, run)},
		RequestID: id, WebhookID: webhookID, Run: run, Scopes: []string{scope.PrivacyRequestReview},
	}, 60*time.Hour)
}

func sealPreApproval(t testing.TB, s *token.Sealer, c token.PreApprovalClaims, ttl time.Duration) (raw, jti string) {
	t.Helper()
	raw, err := s.Seal(&c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return raw, c.ID
}

// The paths of the pre-approval replies, written out as their receivers are given them.
func eligiblePath(id string) string {
	return "/api/v1/privacy-request/" + id + "/pre-approve/eligible"
}

func notEligiblePath(id string) string {
	return "/api/v1/privacy-request/" + id + "/pre-approve/not-eligible"
}
