package httpapi

import (
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// issueToken is POST /oauth/token: client credentials from HTTP Basic or the form body.
func issueToken(svc *oauth.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := api.ReadBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			writeError(w, r, api.Errorf(http.StatusBadRequest, "Malformed form body."))
			return
		}
		if gt := form.Get("grant_type"); gt != "" && gt != "client_credentials" {
			writeError(w, r, api.Errorf(http.StatusBadRequest, "Unsupported grant_type: only client_credentials is accepted."))
			return
		}
		id, secret, basic := r.BasicAuth()
		if !basic {
			id, secret = form.Get("client_id"), form.Get("client_secret")
		}
		tok, err := svc.IssueToken(r.Context(), id, secret)
		if err != nil {
			if basic {
				w.Header().Set("WWW-Authenticate", `Basic realm="policyhooks"`)
			}
			writeError(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		api.WriteJSON(w, http.StatusOK, map[string]any{
			"access_token": tok, "token_type": "bearer", "expires_in": int(svc.TTL().Seconds()),
		})
	}
}

// createClient is POST /oauth/client.
func createClient(svc *oauth.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Scopes *[]string `json:"scopes"`
		}
		if err := api.Decode(r, &body, true); err != nil {
			writeError(w, r, err)
			return
		}
		if body.Scopes == nil {
			writeError(w, r, api.InvalidField("field required", "value_error.missing", "body", "scopes"))
			return
		}
		claims, _ := api.ClaimsFrom(r.Context())
		id, secret, err := svc.CreateClient(r.Context(), claims.Scopes, *body.Scopes)
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		api.WriteJSON(w, http.StatusOK, map[string]string{"client_id": id, "client_secret": secret})
	}
}

// deleteClient is DELETE /oauth/client/{client_id}.
func deleteClient(svc *oauth.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := svc.DeleteClient(r.Context(), mux.Vars(r)["client_id"]); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// listScopes is GET /oauth/scope.
func listScopes() http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, oauth.Scopes)
	}
}
