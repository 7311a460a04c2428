// Package policy holds policies and their ordered pre- and post-execution webhooks (SPEC §3, §4),
// and the global ordered list of pre-approval webhooks: the list edits (replace, patch with
// reorder, delete with renumbering) as pure functions over a webhook array, and a Service that
// applies them to the document holding the list with a version check, retried on conflict, then
// re-publishes the plans that carry the list.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Kind is a webhook list of a policy.
type Kind string

// Kinds.
const (
	Pre  Kind = "pre_execution"
	Post Kind = "post_execution"
	// PreApproval is the global list of pre-approval webhooks (fides's PreApprovalWebhook). It is
	// no list of a policy: its document (PreApprovalKey) holds it where a policy holds Pre.
	PreApproval Kind = "pre_approval"
)

// PreApprovalKey stands for the document of the pre-approval list where a policy key stands for a
// policy's: the edits and the connection claims (see the store) treat it as a policy document with
// one list. It holds '#', which no policy key can hold, so it never names a policy.
const PreApprovalKey = "#pre_approval"

// ParseKind accepts pre_execution, post_execution and the hyphenated aliases.
func ParseKind(s string) (Kind, bool) {
	switch s {
	case "pre_execution", "pre-execution":
		return Pre, true
	case "post_execution", "post-execution":
		return Post, true
	}
	return "", false
}

// DRPActions are the accepted drp_action values.
var DRPActions = []string{"access", "deletion", "sale:opt_out", "sale:opt_in", "access:categories", "access:specific"}

// Action returns fides's action type of the policy (the policy_action webhook calls carry), from
// its drp_action: the access actions are "access", deletion is "erasure", the sale opt-outs and
// opt-ins are "consent"; "" without a drp_action.
func (p *Policy) Action() string {
	switch {
	case p.DRPAction == nil:
		return ""
	case *p.DRPAction == "deletion":
		return "erasure"
	case strings.HasPrefix(*p.DRPAction, "sale:"):
		return "consent"
	case strings.HasPrefix(*p.DRPAction, "access"):
		return "access"
	}
	return ""
}

// Policy is a policy document. Its JSON form is the API resource.
type Policy struct {
	Key                string    `json:"key"`
	Name               string    `json:"name"`
	DRPAction          *string   `json:"drp_action"`
	ExecutionTimeframe *int      `json:"execution_timeframe"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`

	// Version grows with every change of the document.
	Version int64     `json:"-"`
	Pre     []Webhook `json:"-"`
	Post    []Webhook `json:"-"`
}

// Webhooks returns the list of kind; the order of a webhook is its index. The list of the
// pre-approval document (PreApproval) is its Pre.
func (p *Policy) Webhooks(k Kind) []Webhook {
	if k == Post {
		return p.Post
	}
	return p.Pre
}

// SetWebhooks replaces the list of kind.
func (p *Policy) SetWebhooks(k Kind, ws []Webhook) {
	if k == Post {
		p.Post = ws
	} else {
		p.Pre = ws
	}
}

// ConnectionKeys returns the distinct connection keys of both lists.
func (p *Policy) ConnectionKeys() []string {
	seen := map[string]bool{}
	out := []string{}
	for _, w := range append(append([]Webhook{}, p.Pre...), p.Post...) {
		if !seen[w.ConnectionKey] {
			seen[w.ConnectionKey] = true
			out = append(out, w.ConnectionKey)
		}
	}
	return out
}

// Webhook is one webhook of a list.
type Webhook struct {
	ID            string
	Key           string
	Name          string
	Direction     event.Direction
	ConnectionKey string
}

// Input is one validated item of the policy bulk upsert, defaults filled.
type Input struct {
	Name               string  `json:"name"`
	Key                string  `json:"key"`
	DRPAction          *string `json:"drp_action"`
	ExecutionTimeframe *int    `json:"execution_timeframe"`
}

// WebhookInput is one validated item of a webhook list replacement (key derived when missing).
type WebhookInput struct {
	Key           string
	Name          string
	Direction     event.Direction
	ConnectionKey string
}

// Change is a validated webhook PATCH; nil fields stay as they are.
type Change struct {
	Name          *string
	Direction     *event.Direction
	ConnectionKey *string
	Order         *int
}

// OrderEntry is one item of new_order.
type OrderEntry struct {
	Key   string `json:"key"`
	Order int    `json:"order"`
}

// Errors.
var (
	ErrNotFound        = errors.New("policy not found")
	ErrWebhookNotFound = errors.New("webhook not found")
	ErrKeyTaken        = errors.New("policy key or name taken")
	// ErrDuplicate reports two webhooks of one list whose keys or names are the same.
	ErrDuplicate = errors.New("policy: webhooks with the same key or name")
	// ErrConflict reports a version mismatch: the document changed since it was read.
	ErrConflict = errors.New("policy changed concurrently")
	ErrBadOrder = errors.New("order out of range")
	ErrNotHTTPS = errors.New("connection is not https")
	errTooBusy  = errors.New("policy: too many concurrent edits, giving up")
)

// NotFoundError is ErrNotFound for one key.
type NotFoundError struct{ Key string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("policy: no policy %q", e.Key) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// WebhookNotFoundError is ErrWebhookNotFound for one webhook (Policy is empty for PreApproval).
type WebhookNotFoundError struct {
	Kind   Kind
	Key    string
	Policy string
}

func (e *WebhookNotFoundError) Error() string {
	if e.Kind == PreApproval {
		return fmt.Sprintf("policy: no pre-approval webhook %q", e.Key)
	}
	return fmt.Sprintf("policy: no %s webhook %q on policy %q", e.Kind, e.Key, e.Policy)
}

// Is makes errors.Is(err, ErrWebhookNotFound) true.
func (e *WebhookNotFoundError) Is(target error) bool { return target == ErrWebhookNotFound }

// KeyTakenError is ErrKeyTaken for one key.
type KeyTakenError struct{ Key string }

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("policy: key or name of %q taken by another policy", e.Key)
}

// Is makes errors.Is(err, ErrKeyTaken) true.
func (e *KeyTakenError) Is(target error) bool { return target == ErrKeyTaken }

// OrderError is ErrBadOrder with the requested order and the list length.
type OrderError struct {
	Kind  Kind
	Order int
	Count int
}

func (e *OrderError) Error() string {
	return fmt.Sprintf("policy: order %d out of range for %d %s webhooks", e.Order, e.Count, e.Kind)
}

// Is makes errors.Is(err, ErrBadOrder) true.
func (e *OrderError) Is(target error) bool { return target == ErrBadOrder }

// NotHTTPSError is ErrNotHTTPS for one connection.
type NotHTTPSError struct {
	Key  string
	Type string
}

func (e *NotHTTPSError) Error() string {
	return fmt.Sprintf("policy: connection %q is of type %s, not https", e.Key, e.Type)
}

// Is makes errors.Is(err, ErrNotHTTPS) true.
func (e *NotHTTPSError) Is(target error) bool { return target == ErrNotHTTPS }
