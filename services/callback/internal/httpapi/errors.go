package httpapi

import (
	"errors"
	"net/http"

	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/rs/zerolog"
)

// detailExpired is the detail of an expired reply-to-token (SPEC §7); the other authorization
// details are the shared ones of SPEC §1.1.
const detailExpired = "Webhook token expired"

// toHTTP maps a domain error to the *api.Error answered for it; errors it does not know (and
// *api.Error values, which are answers already) are returned unchanged.
func toHTTP(err error) error {
	if errors.Is(err, requestlist.ErrLoading) {
		return api.Errorf(http.StatusServiceUnavailable, "The request list is loading (this replica started a moment ago); try again shortly.")
	}
	var re *resume.Error
	if !errors.As(err, &re) {
		return err
	}
	switch {
	case errors.Is(re.Err, resume.ErrNoToken):
		return api.Errorf(http.StatusUnauthorized, api.DetailUnauthenticated)
	case errors.Is(re.Err, resume.ErrNotAuthorized):
		return api.Errorf(http.StatusForbidden, api.DetailNotAuthorized)
	case errors.Is(re.Err, resume.ErrTokenExpired):
		return api.Errorf(http.StatusForbidden, detailExpired)
	case errors.Is(re.Err, resume.ErrNotFound):
		return api.Errorf(http.StatusNotFound, "No privacy request found with id '%s'.", re.ID)
	case errors.Is(re.Err, resume.ErrOtherRequest):
		return api.Errorf(http.StatusBadRequest, "Invalid %s: the token was not issued for privacy request '%s'.", re.Op, re.ID)
	case errors.Is(re.Err, resume.ErrTokenUsed):
		return api.Errorf(http.StatusConflict, "Invalid %s: the token was already used for privacy request '%s'.", re.Op, re.ID)
	case errors.Is(re.Err, resume.ErrNotPaused), errors.Is(re.Err, resume.ErrNotAwaitingPreApproval):
		return api.Errorf(http.StatusBadRequest, "Invalid %s: privacy request '%s' status = %s.", re.Op, re.ID, re.Status)
	case errors.Is(re.Err, resume.ErrEarlierPause):
		return api.Errorf(http.StatusBadRequest, "Invalid %s: the token belongs to an earlier pause of privacy request '%s'.", re.Op, re.ID)
	case errors.Is(re.Err, resume.ErrEarlierRun):
		return api.Errorf(http.StatusBadRequest, "Invalid %s: the token belongs to an earlier run of the pre-approval stage of privacy request '%s'.", re.Op, re.ID)
	case errors.Is(re.Err, resume.ErrNotReviewable):
		return api.Errorf(http.StatusBadRequest, "Cannot review privacy request: privacy request '%s' status = %s.", re.ID, re.Status)
	case errors.Is(re.Err, resume.ErrNotFailed):
		return api.Errorf(http.StatusBadRequest, "Cannot restart privacy request from failure: privacy request '%s' status = %s.", re.ID, re.Status)
	case errors.Is(re.Err, resume.ErrUnavailable):
		return api.Errorf(http.StatusServiceUnavailable, "The service could not reach its store in time; nothing was recorded, try again.")
	}
	return err
}

// writeError answers err through toHTTP and returns the status it answered. An unavailable
// NATS is logged (the cause is never sent) and answered with Retry-After.
func writeError(w http.ResponseWriter, r *http.Request, err error) int {
	mapped := toHTTP(err)
	var he *api.Error
	if !errors.As(mapped, &he) {
		api.WriteError(w, r, mapped)
		return http.StatusInternalServerError
	}
	switch he.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", "Bearer")
	case http.StatusServiceUnavailable:
		if !errors.Is(err, requestlist.ErrLoading) {
			zerolog.Ctx(r.Context()).Error().Err(err).Msg("NATS did not answer")
		}
		w.Header().Set("Retry-After", "1")
	}
	api.WriteError(w, r, he)
	return he.Status
}
