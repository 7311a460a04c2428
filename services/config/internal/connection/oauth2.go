package connection

import (
	"fmt"
	"net/http"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Bounds of the oauth2 client credentials of https secrets (SPEC §2).
const (
	// MaxOAuth2ClientID is the longest client_id, in bytes.
	MaxOAuth2ClientID = 256
	// MaxOAuth2ClientSecret is the longest client_secret, in bytes.
	MaxOAuth2ClientSecret = 1024
	// MaxOAuth2Scopes is the most scopes.
	MaxOAuth2Scopes = 32
	// MaxOAuth2Scope is the longest scope, in bytes.
	MaxOAuth2Scope = 128
)

// checkOAuth2 returns an *InvalidError for the first field of o that is not acceptable, and nil
// when o is nil or every field is: token_url is checked by checkURL (the same check as the url of
// the secrets), client_id and client_secret must be non-empty and bounded, and the scopes bounded
// in number and length and made of the characters of an RFC 6749 §3.3 scope-token (printable
// ASCII without space, '"' or '\'), since they are sent space-separated. The messages name the
// field, never its value.
func checkOAuth2(o *event.OAuth2, checkURL func(string) error) error {
	if o == nil {
		return nil
	}
	loc := func(p ...any) []any { return append([]any{"body", "oauth2"}, p...) }
	if o.TokenURL == "" {
		return &InvalidError{Loc: loc("token_url"), Msg: "field required"}
	}
	if err := checkURL(o.TokenURL); err != nil {
		return &InvalidError{Loc: loc("token_url"), Msg: err.Error()}
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"client_id", o.ClientID, MaxOAuth2ClientID},
		{"client_secret", o.ClientSecret, MaxOAuth2ClientSecret},
	} {
		switch {
		case f.value == "":
			return &InvalidError{Loc: loc(f.name), Msg: "field required"}
		case len(f.value) > f.max:
			return &InvalidError{Loc: loc(f.name), Msg: fmt.Sprintf("ensure this value has at most %d bytes", f.max)}
		}
	}
	if len(o.Scopes) > MaxOAuth2Scopes {
		return &InvalidError{Loc: loc("scopes"), Msg: fmt.Sprintf("ensure this value has at most %d items", MaxOAuth2Scopes)}
	}
	for i, s := range o.Scopes {
		switch {
		case s == "":
			return &InvalidError{Loc: loc("scopes", i), Msg: "a scope may not be empty"}
		case len(s) > MaxOAuth2Scope:
			return &InvalidError{Loc: loc("scopes", i), Msg: fmt.Sprintf("ensure this value has at most %d bytes", MaxOAuth2Scope)}
		case !scopeToken(s):
			return &InvalidError{Loc: loc("scopes", i),
				Msg: "not a scope token (RFC 6749 §3.3): printable ASCII without spaces, '\"' or '\\'"}
		}
	}
	return nil
}

// scopeToken reports whether s is made of the characters of an RFC 6749 §3.3 scope-token:
// %x21 / %x23-5B / %x5D-7E.
func scopeToken(s string) bool {
	for i := range len(s) {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// checkAuthorizationSource returns an *InvalidError when sec says in two ways what its calls'
// Authorization header is: an authorization value, or an Authorization header among the headers,
// together with oauth2 credentials, whose token the executor sends as that header.
func checkAuthorizationSource(sec event.HTTPSSecrets) error {
	if sec.OAuth2 == nil {
		return nil
	}
	if sec.Authorization != "" {
		return &InvalidError{Loc: []any{"body", "oauth2"}, Msg: "give either authorization or oauth2, not both: the oauth2 token is sent as the Authorization header"}
	}
	for name := range sec.Headers {
		if http.CanonicalHeaderKey(name) == "Authorization" {
			return &InvalidError{Loc: []any{"body", "headers", name},
				Msg: "an Authorization header cannot be given with oauth2: the oauth2 token is sent as the Authorization header"}
		}
	}
	return nil
}
