// Package scope names every OAuth scope of the API (SPEC §1.1), once: config's routes and client
// checks, callback's routes and the resume tokens the executor issues all use these names.
package scope

// The scopes, by the resource they guard.
const (
	ClientCreate = "client:create"
	ClientDelete = "client:delete"
	ScopeRead    = "scope:read"

	ConnectionRead           = "connection:read"
	ConnectionCreateOrUpdate = "connection:create_or_update"
	ConnectionDelete         = "connection:delete"

	PolicyRead           = "policy:read"
	PolicyCreateOrUpdate = "policy:create_or_update"
	PolicyDelete         = "policy:delete"

	WebhookRead           = "webhook:read"
	WebhookCreateOrUpdate = "webhook:create_or_update"
	WebhookDelete         = "webhook:delete"

	// PrivacyRequestRead reads a request's state (callback GET).
	PrivacyRequestRead = "privacy-request:read"
	// PrivacyRequestResume resumes or retries a request: held by reply-to tokens and by clients
	// allowed to retry.
	PrivacyRequestResume = "privacy-request:resume"
	// PrivacyRequestReview approves or denies a request in the pre-approval stage: held by
	// operators' clients and, for the pre-approve replies, by pre-approval reply-to tokens.
	PrivacyRequestReview = "privacy-request:review"
)

// All is every scope, in the order GET /oauth/scope lists them.
var All = []string{
	ClientCreate, ClientDelete, ScopeRead,
	ConnectionRead, ConnectionCreateOrUpdate, ConnectionDelete,
	PolicyRead, PolicyCreateOrUpdate, PolicyDelete,
	WebhookRead, WebhookCreateOrUpdate, WebhookDelete,
	PrivacyRequestRead, PrivacyRequestResume, PrivacyRequestReview,
}
