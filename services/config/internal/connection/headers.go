package connection

import (
	"fmt"
	"maps"
	"net/http"
	"slices"

	"golang.org/x/net/http/httpguts"
)

// checkHeaders returns an *InvalidError for the first header of h, by name, that is not a valid
// HTTP field (RFC 9110): a name that is not a token (§5.1), a name given twice in different case
// (field names are case-insensitive, §5.1, so only one of them would be sent), or a value with a
// control character other than tab (§5.5: CR, LF, NUL and DEL included). It returns nil when every
// header is valid. The message names the header, never its value, which may be a secret.
func checkHeaders(h map[string]string) error {
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(h)) {
		loc := []any{"body", "headers", name}
		if !httpguts.ValidHeaderFieldName(name) {
			return &InvalidError{Loc: loc, Msg: fmt.Sprintf(
				"%q is not a valid HTTP header name: RFC 9110 allows only letters, digits and !#$%%&'*+-.^_`|~", name)}
		}
		canonical := http.CanonicalHeaderKey(name)
		if other, ok := seen[canonical]; ok {
			return &InvalidError{Loc: loc, Msg: fmt.Sprintf(
				"header %q is also given as %q: HTTP header names are case-insensitive", name, other)}
		}
		seen[canonical] = name
		if !httpguts.ValidHeaderFieldValue(h[name]) {
			return &InvalidError{Loc: loc, Msg: fmt.Sprintf(
				"the value of header %q is not a valid HTTP field value: RFC 9110 allows no control characters other than tab", name)}
		}
	}
	return nil
}

// checkAuthorization returns an *InvalidError when v, sent as the Authorization header, is not a
// valid HTTP field value (RFC 9110 §5.5), and nil otherwise.
func checkAuthorization(v string) error {
	if !httpguts.ValidHeaderFieldValue(v) {
		return &InvalidError{Loc: []any{"body", "authorization"},
			Msg: "not a valid HTTP field value: RFC 9110 allows no control characters other than tab"}
	}
	return nil
}
