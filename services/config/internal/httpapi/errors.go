package httpapi

import (
	"errors"
	"net/http"

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
		errors.Is(err, policy.ErrNotFound),
		errors.Is(err, policy.ErrWebhookNotFound):
		return &api.Error{Status: http.StatusNotFound, Detail: err.Error()}
	case errors.Is(err, connection.ErrInUse):
		return &api.Error{Status: http.StatusConflict, Detail: err.Error()}
	case errors.As(err, &invalid):
		return api.InvalidField(invalid.Msg, "value_error", invalid.Loc...)
	case errors.Is(err, policy.ErrDuplicate):
		return &api.Error{Status: http.StatusBadRequest,
			Detail: "Check request body: there are multiple webhooks whose keys or names resolve to the same value."}
	case errors.Is(err, policy.ErrBadOrder),
		errors.Is(err, policy.ErrNotHTTPS),
		errors.Is(err, oauth.ErrRootClient):
		return &api.Error{Status: http.StatusBadRequest, Detail: err.Error()}
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
