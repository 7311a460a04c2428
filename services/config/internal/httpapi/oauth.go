package httpapi

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
)

// The error codes of the token endpoint (RFC 6749 §5.2).
const (
	oauthInvalidRequest       = "invalid_request"
	oauthInvalidClient        = "invalid_client"
	oauthUnsupportedGrantType = "unsupported_grant_type"
)

// grantClientCredentials is the one grant type the token endpoint serves (RFC 6749 §4.4).
const grantClientCredentials = "client_credentials"

// issueToken is POST /oauth/token: a client credentials grant, with the credentials in HTTP Basic
// or in the form body.
func issueToken(svc *oauth.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, secret, basic, err := tokenRequest(r)
		if err != nil {
			writeError(w, r, err)
			return
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

// tokenRequest reads a token request (RFC 6749 §4.4.2): a form body with grant_type, given once and
// equal to client_credentials, and the client credentials, from HTTP Basic when the request has it
// (each form-url-decoded after the Basic decoding, §2.3.1), else from client_id and client_secret
// in the form. basic tells where they came from. A bad request is a 400 *api.Error with an RFC 6749
// §5.2 error code.
func tokenRequest(r *http.Request) (id, secret string, basic bool, err error) {
	b, err := api.ReadBody(r)
	if err != nil {
		return "", "", false, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return "", "", false, tokenRequestError(oauthInvalidRequest, "Malformed form body.")
	}
	for _, p := range []string{"grant_type", "client_id", "client_secret"} {
		if len(form[p]) > 1 {
			return "", "", false, tokenRequestError(oauthInvalidRequest, fmt.Sprintf("The %s parameter must be given only once.", p))
		}
	}
	switch form.Get("grant_type") {
	case grantClientCredentials:
	case "":
		return "", "", false, tokenRequestError(oauthInvalidRequest, "The grant_type parameter is required: use grant_type=client_credentials.")
	default:
		return "", "", false, tokenRequestError(oauthUnsupportedGrantType, "Unsupported grant_type: only client_credentials is accepted.")
	}
	rawID, rawSecret, basic := r.BasicAuth()
	if !basic {
		return form.Get("client_id"), form.Get("client_secret"), false, nil
	}
	id, idErr := url.QueryUnescape(rawID)
	secret, secretErr := url.QueryUnescape(rawSecret)
	if idErr != nil || secretErr != nil {
		return "", "", true, tokenRequestError(oauthInvalidRequest,
			"Malformed HTTP Basic credentials: the client id and secret must be form-url-encoded before the Basic encoding (RFC 6749 §2.3.1).")
	}
	return id, secret, true, nil
}

// tokenRequestError is a 400 answer of the token endpoint with an RFC 6749 §5.2 error code.
func tokenRequestError(code, detail string) *api.Error {
	return &api.Error{Status: http.StatusBadRequest, Detail: detail, OAuthCode: code}
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
		api.WriteJSON(w, http.StatusOK, scope.All)
	}
}
