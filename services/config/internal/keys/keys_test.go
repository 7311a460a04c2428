package keys

import (
	"regexp"
	"strings"
	"testing"

	"github.com/policyhooks/policyhooks/shared/event"
)

func TestFromName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"Poke Snowflake Webhook", "poke_snowflake_webhook"},
		{"Wake up Snowflake DB Webhook", "wake_up_snowflake_db_webhook"},
		{"  Crème brûlée - Señor  ", "creme_brulee_senor"},
		{"a--b  c", "a_b_c"},
		{"keep_under_score", "keep_under_score"},
		{"Drop! these? (chars)", "drop_these_chars"},
		{"Ünïcödé 42", "unicode_42"},
		{"日本", ""},
		{"tab\tand\nnewline", "tab_and_newline"},
		{"..", ""},
		{"v1.2 / ../etc", "v12_etc"},
		{"100%", "100"},
	}
	for _, tc := range tests {
		if got := FromName(tc.name); got != tc.want {
			t.Errorf("FromName(%q): got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// specPattern is the key rule as SPEC §1 and the OpenAPI document write it; Valid must agree.
var specPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$`)

func TestProblem(t *testing.T) {
	tests := []struct {
		key  string
		want string
	}{
		{"abc", ""}, {"a.b-c_D9", ""}, {"a.b.c", ""}, {"-", ""}, {"_", ""},
		{"", Invalid}, {"a b", Invalid}, {"a/b", Invalid}, {"é", Invalid}, {"a*", Invalid},
		{"a%2e", Invalid}, {`a\b`, Invalid}, {"/", Invalid},
		{".", InvalidDots}, {"..", InvalidDots}, {"...", InvalidDots}, {".a", InvalidDots},
		{"a.", InvalidDots}, {"a..b", InvalidDots}, {".env", InvalidDots},
	}
	for _, tc := range tests {
		if got := Problem(tc.key); got != tc.want {
			t.Errorf("Problem(%q): got %q, want %q", tc.key, got, tc.want)
		}
		if got := Valid(tc.key); got != (tc.want == "") || got != specPattern.MatchString(tc.key) {
			t.Errorf("Valid(%q): got %v, want %v (the SPEC pattern says %v)", tc.key, got, tc.want == "", specPattern.MatchString(tc.key))
		}
	}
}

// FuzzKeyFromName checks that a key derived from any name is empty or valid, never has path
// meaning, is also a valid NATS KV key, and derives to itself; and that Valid agrees with the SPEC
// pattern and accepts only valid NATS KV keys on any input.
func FuzzKeyFromName(f *testing.F) {
	for _, s := range []string{"Poke Snowflake Webhook", "", ".", "..", "../..", "a/b", "100%", `a\b`,
		"  Crème brûlée - Señor  ", "日本", "ﬁ ligature", "Ⅻ roman", "a\u00a0b", "x..y", "-_-", "K\u212a", "a.b", ".a", "a.", "a\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if Valid(name) != specPattern.MatchString(name) {
			t.Fatalf("Valid(%q) = %v, but the SPEC pattern says %v", name, Valid(name), !Valid(name))
		}
		if Valid(name) && !event.ValidKVKey(name) {
			t.Fatalf("Valid(%q) but it is not a valid KV key", name)
		}
		k := FromName(name)
		if k == "" {
			return
		}
		if !Valid(k) {
			t.Fatalf("FromName(%q) = %q: %s", name, k, Problem(k))
		}
		if strings.Trim(k, ".") == "" || strings.ContainsAny(k, `/\%`) || strings.Contains(k, "..") ||
			strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
			t.Fatalf("FromName(%q) = %q has path meaning", name, k)
		}
		if !event.ValidKVKey(k) {
			t.Fatalf("FromName(%q) = %q is not a valid KV key", name, k)
		}
		if again := FromName(k); again != k {
			t.Fatalf("FromName(FromName(%q)) = %q, want %q", name, again, k)
		}
	})
}
