package connection

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCheckHeaders(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		wantLoc string // the header named by the error, "" when valid
		wantMsg string // a part of the message
	}{
		{"none", nil, "", ""},
		{"valid", map[string]string{"X-Tenant": "acme", "x-trace_id": "a b\tc", "!#$%&'*+-.^_`|~09": "v"}, "", ""},
		{"empty value", map[string]string{"X-Empty": ""}, "", ""},
		{"obs-text value", map[string]string{"X-Name": "Se\xf1or"}, "", ""},
		{"empty name", map[string]string{"": "v"}, "", "not a valid HTTP header name"},
		{"space in name", map[string]string{"X Tenant": "v"}, "X Tenant", "not a valid HTTP header name"},
		{"colon in name", map[string]string{"X-Tenant:": "v"}, "X-Tenant:", "not a valid HTTP header name"},
		{"non-ASCII name", map[string]string{"X-Tenänt": "v"}, "X-Tenänt", "not a valid HTTP header name"},
		{"separator in name", map[string]string{"X(Tenant)": "v"}, "X(Tenant)", "not a valid HTTP header name"},
		{"SOH in value", map[string]string{"X-Tenant": "secret\x01b"}, "X-Tenant", "not a valid HTTP field value"},
		{"DEL in value", map[string]string{"X-Tenant": "secret\x7fb"}, "X-Tenant", "not a valid HTTP field value"},
		{"CR LF in value", map[string]string{"X-Tenant": "secret\r\nX-Evil: 1"}, "X-Tenant", "not a valid HTTP field value"},
		{"NUL in value", map[string]string{"X-Tenant": "secret\x00"}, "X-Tenant", "not a valid HTTP field value"},
		{"same name in two cases", map[string]string{"X-Tenant": "secret-a", "x-tenant": "secret-b"}, "x-tenant", "case-insensitive"},
		{"first bad header by name", map[string]string{"B-Bad": "secret\x01", "A-Bad": "secret\x01", "C-Good": "v"}, "A-Bad", "A-Bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkHeaders(tt.headers)
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkHeaders(%q) = %v, want nil", tt.headers, err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("checkHeaders(%q) = %v, want an *InvalidError", tt.headers, err)
			}
			if got, want := fmt.Sprint(inv.Loc), fmt.Sprint([]any{"body", "headers", tt.wantLoc}); got != want {
				t.Errorf("loc = %s, want %s", got, want)
			}
			if !strings.Contains(inv.Msg, tt.wantMsg) {
				t.Errorf("msg = %q, want it to contain %q", inv.Msg, tt.wantMsg)
			}
			if strings.Contains(inv.Msg, "secret") {
				t.Errorf("msg = %q echoes a header value", inv.Msg)
			}
		})
	}
}

func TestCheckAuthorization(t *testing.T) {
	tests := []struct {
		value string
		valid bool
	}{
		{"Bearer abc.def", true}, {"Basic dXNlcjpwYXNz", true}, {"token\twith tab", true},
		{"a\x01b", false}, {"a\x7f", false}, {"a\r\nb", false}, {"a\x00", false},
	}
	for _, tt := range tests {
		err := checkAuthorization(tt.value)
		var inv *InvalidError
		switch {
		case tt.valid && err != nil:
			t.Errorf("checkAuthorization(%q) = %v, want nil", tt.value, err)
		case !tt.valid && (!errors.As(err, &inv) || fmt.Sprint(inv.Loc) != "[body authorization]"):
			t.Errorf("checkAuthorization(%q) = %v, want an *InvalidError at body.authorization", tt.value, err)
		}
	}
}
