package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// writeError writes err after mapping it with statusOf.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	api.WriteError(w, r, statusOf(err))
}

// statusOf is the one place where domain errors become status codes and {"detail"} bodies.
// Anything it does not know stays as it is and becomes a logged 500.
func statusOf(err error) error {
	var (
		he           *api.Error
		invalid      *connection.InvalidError
		unknownScope *oauth.UnknownScopeError
	)
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, connection.ErrNotFound),
		errors.Is(err, connection.ErrNoSigningKey),
		errors.Is(err, policy.ErrNotFound),
		errors.Is(err, policy.ErrWebhookNotFound):
		return &api.Error{Status: http.StatusNotFound, Detail: detail(err)}
	case errors.Is(err, connection.ErrInUse):
		return &api.Error{Status: http.StatusConflict, Detail: detail(err)}
	case errors.As(err, &invalid):
		return api.InvalidField(invalid.Msg, "value_error", invalid.Loc...)
	case errors.Is(err, policy.ErrDuplicate):
		return &api.Error{Status: http.StatusBadRequest,
			Detail: "Check request body: there are multiple webhooks whose keys or names resolve to the same value."}
	case errors.Is(err, policy.ErrBadOrder),
		errors.Is(err, policy.ErrNotHTTPS),
		errors.Is(err, oauth.ErrRootClient):
		return &api.Error{Status: http.StatusBadRequest, Detail: detail(err)}
	case errors.Is(err, oauth.ErrNotFound):
		return &api.Error{Status: http.StatusNotFound, Detail: "No client found with this id."}
	case errors.Is(err, oauth.ErrScopeNotHeld):
		return &api.Error{Status: http.StatusForbidden, Detail: api.DetailNotAuthorized}
	case errors.As(err, &unknownScope):
		return api.InvalidField(unknownScope.Error(), "value_error", "body", "scopes")
	case errors.Is(err, oauth.ErrBadCredentials):
		return &api.Error{Status: http.StatusUnauthorized, Detail: api.DetailUnauthenticated, OAuthCode: oauthInvalidClient}
	}
	return err
}

// detail is the one place of the fidesops-compatible texts of the policy and connection errors,
// formatted from the errors' fields: statusOf puts them in {"detail"} bodies and newBulkResult in
// the messages of bulk answers. Any other error keeps its own message.
func detail(err error) string {
	var (
		policyNotFound  *policy.NotFoundError
		webhookNotFound *policy.WebhookNotFoundError
		policyTaken     *policy.KeyTakenError
		order           *policy.OrderError
		notHTTPS        *policy.NotHTTPSError
		connNotFound    *connection.NotFoundError
		noSigningKey    *connection.NoSigningKeyError
		connTaken       *connection.KeyTakenError
		typeChange      *connection.TypeChangeError
		inUse           *connection.InUseError
	)
	switch {
	case errors.As(err, &policyNotFound):
		return fmt.Sprintf("No Policy found for key %s.", policyNotFound.Key)
	case errors.As(err, &webhookNotFound) && webhookNotFound.Kind == policy.PreApproval:
		return fmt.Sprintf("No PreApprovalWebhook found for key %s.", webhookNotFound.Key)
	case errors.As(err, &webhookNotFound):
		return fmt.Sprintf("No %s Webhook found for key '%s' on Policy '%s'.",
			kindLabel(webhookNotFound.Kind), webhookNotFound.Key, webhookNotFound.Policy)
	case errors.As(err, &policyTaken):
		return keyTaken(policyTaken.Key, "Policy")
	case errors.As(err, &order):
		return fmt.Sprintf("Cannot set order to %d: there are only %d %s(s) defined on this Policy.",
			order.Order, order.Count, kindModel(order.Kind))
	case errors.As(err, &notHTTPS):
		return fmt.Sprintf("ConnectionConfig '%s' is of type %s: only https connections can back webhooks.",
			notHTTPS.Key, notHTTPS.Type)
	case errors.As(err, &connNotFound):
		return fmt.Sprintf("No connection configuration found with key '%s'.", connNotFound.Key)
	case errors.As(err, &noSigningKey):
		return fmt.Sprintf("ConnectionConfig '%s' has no Ed25519 signing key.", noSigningKey.Key)
	case errors.As(err, &connTaken):
		return keyTaken(connTaken.Key, "ConnectionConfig")
	case errors.As(err, &typeChange): // before inUse, which it wraps
		return fmt.Sprintf("ConnectionConfig '%s' is used by the webhook(s) %s and must stay of type https.",
			typeChange.InUse.Key, strings.Join(typeChange.InUse.Webhooks, ", "))
	case errors.As(err, &inUse):
		return fmt.Sprintf("Cannot delete ConnectionConfig '%s': it is used by the webhook(s) %s. Remove them first.",
			inUse.Key, strings.Join(inUse.Webhooks, ", "))
	}
	return err.Error()
}

// keyTaken is the text of a bulk item whose key or name belongs to another resource of model.
func keyTaken(key, model string) string {
	return fmt.Sprintf("Key %s already exists in %s. Keys will be snake-cased names if not provided. "+
		"If you are seeing this error without providing a key, please provide a key or a different name.", key, model)
}

// kindLabel is "Pre-Execution" or "Post-Execution".
func kindLabel(k policy.Kind) string {
	if k == policy.Post {
		return "Post-Execution"
	}
	return "Pre-Execution"
}

// kindModel is "PolicyPreWebhook" or "PolicyPostWebhook".
func kindModel(k policy.Kind) string {
	if k == policy.Post {
		return "PolicyPostWebhook"
	}
	return "PolicyPreWebhook"
}
