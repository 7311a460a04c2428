package keys

import "testing"

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
	}
	for _, tc := range tests {
		if got := FromName(tc.name); got != tc.want {
			t.Errorf("FromName(%q): got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"abc", true}, {"a.b-c_D9", true}, {"", false}, {"a b", false}, {"a/b", false}, {"é", false}, {"a*", false},
	}
	for _, tc := range tests {
		if got := Valid(tc.key); got != tc.want {
			t.Errorf("Valid(%q): got %v, want %v", tc.key, got, tc.want)
		}
	}
}
