package event

import "time"

// Direction of a webhook call.
type Direction string

// Directions.
const (
	OneWay Direction = "one_way"
	TwoWay Direction = "two_way"
)

// CallbackType says whether a webhook runs before ("pre") or after ("post") execution.
type CallbackType string

// Callback types.
const (
	Pre  CallbackType = "pre"
	Post CallbackType = "post"
	// PreApprovalCallback is a pre-approval webhook's call (SPEC §6.3).
	PreApprovalCallback CallbackType = "pre_approval"
)

// Plan is the compiled webhook plan of one policy: the value of its key in policy_webhooks. The
// executor snapshots it into a request when the request starts.
type Plan struct {
	PolicyKey string `json:"policy_key"`
	// Version is the policy document's version; it grows with every change of the document (not
	// with a change of a connection it uses).
	Version int64 `json:"version"`
	// PolicyCreatedAt is when the policy document was created: with PolicyKey it names one life of
	// the policy, so that a higher Version of the same life is known to be newer (a policy deleted
	// and created again starts at version 1). Zero in plans published before it existed.
	PolicyCreatedAt time.Time `json:"policy_created_at,omitzero"`
	PublishedAt     time.Time `json:"published_at"`
	// PolicyAction is fides's action type of the policy ("access", "erasure", "consent"), from its
	// drp_action; empty when the policy has none. Webhook calls carry it as policy_action.
	PolicyAction string `json:"policy_action,omitempty"`
	// ExecutionTimeframe is the policy's execution_timeframe in days (0: none): a request is due
	// that long after it was created, and webhook calls carry its due date.
	ExecutionTimeframe int           `json:"execution_timeframe,omitempty"`
	Pre                []PlanWebhook `json:"pre_execution"`
	Post               []PlanWebhook `json:"post_execution"`
	// PreApproval is the pre-approval stage every request of the policy goes through first: nil
	// when config's PRE_APPROVAL is false. Its webhooks are the global pre-approval webhooks, the
	// same in every policy's plan.
	PreApproval *PreApproval `json:"pre_approval,omitempty"`
}

// PreApproval is the pre-approval stage of a plan (SPEC §5.2): every webhook is called, in order,
// and the request goes on when each replied eligible. With no webhook, an operator approves or
// denies every request.
type PreApproval struct {
	Webhooks []PlanWebhook `json:"webhooks"`
}

// Supersedes reports whether p is known to be a newer plan than o: the same life of the same policy
// (PolicyKey and PolicyCreatedAt, both set) at a higher Version. Plans of different lives, or
// without PolicyCreatedAt, are not ordered by it.
func (p Plan) Supersedes(o Plan) bool {
	return p.PolicyKey == o.PolicyKey && !p.PolicyCreatedAt.IsZero() && p.PolicyCreatedAt.Equal(o.PolicyCreatedAt) &&
		p.Version > o.Version
}

// PlanWebhook is one webhook of a plan with what is needed to call it.
type PlanWebhook struct {
	// ID is stable while the key stays on the policy; resume tokens name it.
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Name      string    `json:"name"`
	Direction Direction `json:"direction"`
	Order     int       `json:"order"`

	ConnectionKey string `json:"connection_key"`
	// ConnectionDisabled makes the executor skip the webhook (outcome "skipped").
	ConnectionDisabled bool `json:"connection_disabled,omitempty"`
	// URL is informational (for operators reading the bucket): the scheme and host (with port) of
	// the connection's URL, never its path, query or user information, which can be the credential
	// of the hook. The executor calls the URL inside Secrets.
	URL string `json:"url,omitempty"`
	// Secrets is the connection's HTTPSSecrets as JSON, sealed with the secret keyring
	// (purpose secret.PurposeSecrets) and the connection key as associated data. Empty when the
	// connection has no secrets yet: calling it is an error.
	Secrets string `json:"secrets,omitempty"`
}

// HTTPSSecrets are the secrets of an https connection (SPEC §2).
type HTTPSSecrets struct {
	URL string `json:"url"`
	// Authorization is sent verbatim as the Authorization header; empty when OAuth2 is set.
	Authorization string            `json:"authorization"`
	Headers       map[string]string `json:"headers,omitempty"`
	SigningSecret string            `json:"signing_secret,omitempty"`
	// SigningSecretPrevious is the HMAC signing secret being rotated out: until
	// SigningSecretPreviousUntil, by the executor's clock at each attempt, calls carry its v1
	// signature after the current one (SPEC §6). Without an until it is not used.
	SigningSecretPrevious      string    `json:"signing_secret_previous,omitempty"`
	SigningSecretPreviousUntil time.Time `json:"signing_secret_previous_until,omitzero"`
	// SigningKey is the Ed25519 secret key ("whsk_<base64>") of the calls' v1a signature;
	// SigningKeyPrevious is the one being rotated out, used as SigningSecretPrevious is.
	SigningKey              string    `json:"signing_key,omitempty"`
	SigningKeyPrevious      string    `json:"signing_key_previous,omitempty"`
	SigningKeyPreviousUntil time.Time `json:"signing_key_previous_until,omitzero"`
	// OAuth2, when set, makes the executor obtain a token by the client credentials grant and send
	// it as "Authorization: Bearer <token>" in place of Authorization.
	OAuth2 *OAuth2 `json:"oauth2,omitempty"`
	// ClientCertificate (a PEM certificate chain, leaf first) and ClientKey (its PEM private key),
	// set together or not at all, are presented in the TLS handshakes of the calls and token
	// requests (mutual TLS).
	ClientCertificate string `json:"client_certificate,omitempty"`
	ClientKey         string `json:"client_key,omitempty"`
}

// OAuth2 are the client credentials (RFC 6749 §4.4) with which the executor obtains the access
// token of an https connection (SPEC §2, §6).
type OAuth2 struct {
	TokenURL     string   `json:"token_url"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	Scopes       []string `json:"scopes,omitempty"`
}
