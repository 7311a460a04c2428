// Package keys validates resource keys and derives a key from a name (SPEC §1): keys match
// ^[a-zA-Z0-9_.-]+$ without path meaning (no leading or trailing '.', no ".."), and a missing key
// is the ASCII-folded, lower-cased, snake-cased name.
package keys

import (
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

var pattern = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)

// The messages of an invalid key.
const (
	// Invalid is the message of a key with a character outside the pattern (fidesops's text).
	Invalid = "FidesKey must only contain alphanumeric characters, '.', '_' or '-'."
	// InvalidDots is the message of a key that a URL path would read as a path step: ".", "..",
	// a leading or trailing '.', or ".." inside.
	InvalidDots = "FidesKey must not start or end with '.' or contain '..'."
)

// Problem returns the message saying why key is not a valid key, or "" when it is valid. The
// pattern keeps out '/', '\', '%' and whitespace; the dot rules keep out "." and "..", which a
// router cleans away from a URL path (such a resource could never be read or deleted), and the
// keys that a NATS KV bucket would refuse as they are.
func Problem(key string) string {
	switch {
	case !pattern.MatchString(key):
		return Invalid
	case strings.HasPrefix(key, "."), strings.HasSuffix(key, "."), strings.Contains(key, ".."):
		return InvalidDots
	}
	return ""
}

// Valid reports whether key is a valid key (Problem(key) is "").
func Valid(key string) bool { return Problem(key) == "" }

// FromName derives a key from name: ASCII-fold (decompose and drop combining marks and other
// non-ASCII characters), lower-case, drop characters other than letters, digits, '_', whitespace
// and '-', then turn each run of whitespace and '-' into '_'. "Poke Snowflake Webhook" gives
// "poke_snowflake_webhook". The result holds only [a-z0-9_], so it is valid unless it is empty (a
// name without any usable character); the caller then reports the key as invalid.
func FromName(name string) string {
	var b strings.Builder
	sep := false
	for _, r := range norm.NFKD.String(name) {
		switch {
		case r > unicode.MaxASCII:
			if unicode.IsSpace(r) {
				sep = true
			}
			continue
		case unicode.IsSpace(r) || r == '-':
			sep = true
			continue
		case r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
		default:
			continue
		}
		if sep && b.Len() > 0 {
			b.WriteByte('_')
		}
		sep = false
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
