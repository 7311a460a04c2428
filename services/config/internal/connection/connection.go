// Package connection holds connection configurations (SPEC §2): their fields, the rules of the
// bulk upsert, the https secrets (validated, sealed, verified by a TLS handshake) and the errors the
// API maps to status codes.
package connection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Type is a connection_type value.
type Type string

// HTTPS is the only connection type that can back webhooks.
const HTTPS Type = "https"

// Types are the accepted connection_type values (fidesops's).
var Types = []Type{"postgres", "mongodb", "mysql", HTTPS, "saas", "redshift", "snowflake", "mssql",
	"mariadb", "bigquery", "manual", "email", "manual_webhook", "timescale"}

// ValidType reports whether t is an accepted connection_type.
func ValidType(t Type) bool { return slices.Contains(Types, t) }

// Access levels.
const (
	AccessRead  = "read"
	AccessWrite = "write"
)

// Connection is a connection configuration. Its JSON form is the API resource; the sealed secrets
// never leave the service.
type Connection struct {
	Key               string     `json:"key"`
	Name              string     `json:"name"`
	Description       *string    `json:"description"`
	Type              Type       `json:"connection_type"`
	Access            string     `json:"access"`
	Disabled          bool       `json:"disabled"`
	DisabledAt        *time.Time `json:"disabled_at"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
	LastTestTimestamp *time.Time `json:"last_test_timestamp"`
	LastTestSucceeded *bool      `json:"last_test_succeeded"`

	// Secrets is the sealed HTTPSSecrets JSON (empty when none were set).
	Secrets string `json:"-"`
	// SecretsURL is the scheme and host of the secrets' URL (DisplayURL), kept for the
	// informational URL of the compiled plans; never its path, query or user information.
	SecretsURL string `json:"-"`
	// SigningKeys are the public keys of the secrets' Ed25519 signing keys, nil without one.
	SigningKeys *SigningKeys `json:"-"`
}

// Input is one validated item of the bulk upsert, defaults filled. Its JSON form is the "data" of
// a failed item.
type Input struct {
	Name        string  `json:"name"`
	Key         string  `json:"key"`
	Type        Type    `json:"connection_type"`
	Access      string  `json:"access"`
	Disabled    bool    `json:"disabled"`
	Description *string `json:"description"`
}

// Filter selects connections in a list.
type Filter struct {
	// Search is a case-insensitive substring of key, name or description.
	Search   string
	Types    []Type
	Disabled *bool
}

// ErrNotFound reports an unknown connection key.
var ErrNotFound = errors.New("connection not found")

// NotFoundError is ErrNotFound for one key.
type NotFoundError struct{ Key string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("connection: no connection %q", e.Key) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ErrKeyTaken reports a new item whose key or name belongs to another connection.
var ErrKeyTaken = errors.New("connection key or name taken")

// KeyTakenError is ErrKeyTaken for one key.
type KeyTakenError struct{ Key string }

func (e *KeyTakenError) Error() string {
	return fmt.Sprintf("connection: key or name of %q taken by another connection", e.Key)
}

// Is makes errors.Is(err, ErrKeyTaken) true.
func (e *KeyTakenError) Is(target error) bool { return target == ErrKeyTaken }

// ErrInUse reports a connection that webhooks still use.
var ErrInUse = errors.New("connection in use")

// InUseError is ErrInUse naming the webhooks ("<policy>.<kind>.<webhook>").
type InUseError struct {
	Key      string
	Webhooks []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("connection: %q is used by webhooks %s", e.Key, strings.Join(e.Webhooks, ", "))
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// TypeChangeError is a bulk upsert item that would change a connection that webhooks use to
// another type than https; it wraps the store's *InUseError, so errors.Is(err, ErrInUse) is true.
type TypeChangeError struct {
	Type  Type
	InUse *InUseError
}

func (e *TypeChangeError) Error() string {
	return fmt.Sprintf("connection: change to type %s refused: %v", e.Type, e.InUse)
}

// Unwrap returns the *InUseError.
func (e *TypeChangeError) Unwrap() error { return e.InUse }

// ErrNotHTTPS reports secrets for, or a type change of, a connection where only https fits.
var ErrNotHTTPS = errors.New("connection is not https")

// Store persists connections. Its errors are NotFoundError and KeyTakenError where they apply.
type Store interface {
	GetConnection(ctx context.Context, key string) (Connection, error)
	ListConnections(ctx context.Context, f Filter, skip, limit int) ([]Connection, int, error)
	// UpsertConnection creates or updates the connection in.Key at time now. Changing the type of
	// a connection that webhooks use (or that a webhook edit in flight claims) to another than
	// https is an *InUseError, decided in the same conditional write that changes it.
	UpsertConnection(ctx context.Context, in Input, now time.Time) (Connection, error)
	// DeleteConnection removes key; an *InUseError while webhooks use it (or a webhook edit in
	// flight claims it), decided in the same conditional write that deletes it.
	DeleteConnection(ctx context.Context, key string) error
	// SetSecrets stores sealed secrets with the public keys of their signing keys (nil: none)
	// and, when test is not nil, the verification result, in one write.
	SetSecrets(ctx context.Context, key, sealed, displayURL string, keys *SigningKeys, test *TestResult) (Connection, error)
	// ResealSecrets replaces the sealed secrets of key when they still equal old.
	ResealSecrets(ctx context.Context, key, old, sealed string) error
	AllConnections(ctx context.Context) ([]Connection, error)
}

// Users finds the webhooks that use a connection.
type Users interface {
	// WebhooksUsing returns "<policy>.<kind>.<webhook>" names and the policy keys.
	WebhooksUsing(ctx context.Context, connectionKey string) (names []string, policies []string, err error)
}

// Publisher re-publishes the compiled plans of the policies that use a connection.
type Publisher interface {
	PublishPolicies(ctx context.Context, policyKeys ...string) error
}
