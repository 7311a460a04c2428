// Package keys validates resource keys and derives a key from a name (SPEC §1): keys match
// ^[a-zA-Z0-9_.-]+$, and a missing key is the ASCII-folded, lower-cased, snake-cased name.
package keys

import (
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

var pattern = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)

// Invalid is the message of a key that does not match the pattern.
const Invalid = "FidesKey must only contain alphanumeric characters, '.', '_' or '-'."

// Valid reports whether key matches ^[a-zA-Z0-9_.-]+$.
func Valid(key string) bool { return pattern.MatchString(key) }

// FromName derives a key from name: ASCII-fold (decompose and drop combining marks and other
// non-ASCII characters), lower-case, drop characters other than letters, digits, '_', whitespace
// and '-', then turn each run of whitespace and '-' into '_'. "Poke Snowflake Webhook" gives
// "poke_snowflake_webhook". The result may be empty (a name without any usable character); the
// caller then reports the key as invalid.
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
