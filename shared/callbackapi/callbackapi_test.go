package callbackapi

import "testing"

func TestPaths(t *testing.T) {
	tests := []struct{ got, want string }{
		{ResumePath("pri_1"), "/api/v1/privacy-request/pri_1/resume"},
		{ResumePath("a:b.c"), "/api/v1/privacy-request/a:b.c/resume"},
		{ResumePath("a/b"), "/api/v1/privacy-request/a%2Fb/resume"},
		{RetryPath("pri_1"), "/api/v1/privacy-request/pri_1/retry"},
		{RequestPath("pri 1"), "/api/v1/privacy-request/pri%201"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
