package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/policyhooks/policyhooks/shared/token"
)

// The details of the authorization answers of SPEC §1.1, the same in every service.
const (
	// DetailUnauthenticated is the detail of a 401: no credentials, or credentials that are not
	// accepted.
	DetailUnauthenticated = "Failed to authenticate"
	// DetailNotAuthorized is the detail of a 403: a token that does not open, is expired, belongs
	// to a deleted client or lacks the scope.
	DetailNotAuthorized = "Not Authorized for this action"
)

// Clients tells whether an OAuth client still exists; a deleted client's tokens stop working at
// once.
type Clients interface {
	ClientExists(ctx context.Context, clientID string) (bool, error)
}

// Authorizer checks OAuth access tokens (SPEC §1.1).
type Authorizer struct {
	tokens  *token.Sealer
	clients Clients
}

// NewAuthorizer returns an Authorizer opening tokens with sealer (the access-token key) and
// checking their client with clients.
func NewAuthorizer(sealer *token.Sealer, clients Clients) *Authorizer {
	return &Authorizer{tokens: sealer, clients: clients}
}

type claimsKey struct{}

// ClaimsFrom returns the access claims of an authorized request.
func ClaimsFrom(ctx context.Context) (token.AccessClaims, bool) {
	c, ok := ctx.Value(claimsKey{}).(token.AccessClaims)
	return c, ok
}

// Unauthenticated is the 401 answer to a request without a bearer token.
func Unauthenticated(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", "Bearer")
	WriteJSON(w, http.StatusUnauthorized, map[string]any{"detail": DetailUnauthenticated})
}

// Forbidden is the 403 answer to a token that does not open, is expired, or lacks the scope.
func Forbidden(w http.ResponseWriter) {
	WriteJSON(w, http.StatusForbidden, map[string]any{"detail": DetailNotAuthorized})
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// Require wraps next so that it runs only for a valid access token carrying scope.
func (a *Authorizer) Require(scope string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, ok := BearerToken(r)
		if !ok {
			Unauthenticated(w)
			return
		}
		var c token.AccessClaims
		if err := a.tokens.Open(raw, &c); err != nil {
			Forbidden(w)
			return
		}
		if !c.HasScope(scope) {
			Forbidden(w)
			return
		}
		exists, err := a.clients.ClientExists(r.Context(), c.ClientID)
		if err != nil {
			WriteError(w, r, errors.Join(errors.New("auth: client lookup"), err))
			return
		}
		if !exists {
			Forbidden(w)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	}
}
