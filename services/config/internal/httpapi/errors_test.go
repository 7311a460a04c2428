package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
)

// TestDetail checks the fidesops-compatible text of each policy and connection error, wrapped or
// not, and that any other error keeps its own message.
func TestDetail(t *testing.T) {
	inUse := &connection.InUseError{Key: "c", Webhooks: []string{"p.pre_execution.a", "p.post_execution.b"}}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"policy not found", &policy.NotFoundError{Key: "p"}, "No Policy found for key p."},
		{"pre-execution webhook not found", &policy.WebhookNotFoundError{Kind: policy.Pre, Key: "w", Policy: "p"},
			"No Pre-Execution Webhook found for key 'w' on Policy 'p'."},
		{"post-execution webhook not found", &policy.WebhookNotFoundError{Kind: policy.Post, Key: "w", Policy: "p"},
			"No Post-Execution Webhook found for key 'w' on Policy 'p'."},
		{"policy key taken", &policy.KeyTakenError{Key: "other"},
			"Key other already exists in Policy. Keys will be snake-cased names if not provided. " +
				"If you are seeing this error without providing a key, please provide a key or a different name."},
		{"pre-execution order out of range", &policy.OrderError{Kind: policy.Pre, Order: 3, Count: 3},
			"Cannot set order to 3: there are only 3 PolicyPreWebhook(s) defined on this Policy."},
		{"post-execution order out of range", &policy.OrderError{Kind: policy.Post, Order: -1, Count: 2},
			"Cannot set order to -1: there are only 2 PolicyPostWebhook(s) defined on this Policy."},
		{"connection not https", &policy.NotHTTPSError{Key: "c", Type: "postgres"},
			"ConnectionConfig 'c' is of type postgres: only https connections can back webhooks."},
		{"connection not found", &connection.NotFoundError{Key: "c"}, "No connection configuration found with key 'c'."},
		{"connection without a signing key", &connection.NoSigningKeyError{Key: "c"}, "ConnectionConfig 'c' has no Ed25519 signing key."},
		{"connection key taken", &connection.KeyTakenError{Key: "wh2"},
			"Key wh2 already exists in ConnectionConfig. Keys will be snake-cased names if not provided. " +
				"If you are seeing this error without providing a key, please provide a key or a different name."},
		{"connection in use", inUse,
			"Cannot delete ConnectionConfig 'c': it is used by the webhook(s) p.pre_execution.a, p.post_execution.b. Remove them first."},
		{"connection type change", &connection.TypeChangeError{Type: "postgres", InUse: inUse},
			"ConnectionConfig 'c' is used by the webhook(s) p.pre_execution.a, p.post_execution.b and must stay of type https."},
		{"wrapped", fmt.Errorf("store: get policy: %w", &policy.NotFoundError{Key: "p"}), "No Policy found for key p."},
		{"other error", errors.New("something else"), "something else"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := detail(tc.err); got != tc.want {
				t.Errorf("detail(%v):\n got %q\nwant %q", tc.err, got, tc.want)
			}
		})
	}
}
