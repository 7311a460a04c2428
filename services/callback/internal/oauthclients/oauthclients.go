// Package oauthclients tells whether an OAuth client still exists, from the oauth_clients bucket
// that the config service keeps, so that a deleted client's access tokens stop working at once.
package oauthclients

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Registry answers httpapi.Clients from the oauth_clients bucket.
type Registry struct {
	kv     jetstream.KeyValue
	rootID string
}

// New returns a Registry over kv. The root client rootID (may be empty) exists without an entry.
func New(kv jetstream.KeyValue, rootID string) *Registry { return &Registry{kv: kv, rootID: rootID} }

// ClientExists reports whether clientID has an entry in the bucket or is the root client. An id
// that cannot be a key does not exist.
func (r *Registry) ClientExists(ctx context.Context, clientID string) (bool, error) {
	if clientID == "" {
		return false, nil
	}
	if r.rootID != "" && clientID == r.rootID {
		return true, nil
	}
	_, err := r.kv.Get(ctx, clientID)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrInvalidKey):
		return false, nil
	}
	return false, fmt.Errorf("oauthclients: look up client: %w", err)
}
