// Package secrets opens the sealed connection secrets carried by plan webhooks, keeping the opened
// ones in a bounded cache: a sealed value opens to the same secrets every time, and every request
// of a policy carries the same sealed values.
package secrets

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
)

// maxOpened bounds the cache; it is emptied when full.
const maxOpened = 1024

// Opener opens plan webhooks' secrets.
type Opener struct {
	keyring *secret.Keyring
	mu      sync.Mutex
	opened  map[string]opened
}

type opened struct {
	secrets event.HTTPSSecrets
	msg     string
}

// NewOpener returns an Opener over keyring (secret.PurposeSecrets).
func NewOpener(keyring *secret.Keyring) *Opener {
	return &Opener{keyring: keyring, opened: map[string]opened{}}
}

// Open returns the secrets of w, or why they cannot be used (the message a failed request records).
// Callers only read the returned secrets: they are shared.
func (o *Opener) Open(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	key := w.ConnectionKey + "\x00" + w.Secrets
	o.mu.Lock()
	op, ok := o.opened[key]
	o.mu.Unlock()
	if ok {
		return op.secrets, op.msg
	}
	op.secrets, op.msg = o.open(w)
	o.mu.Lock()
	if len(o.opened) >= maxOpened {
		clear(o.opened)
	}
	o.opened[key] = op
	o.mu.Unlock()
	return op.secrets, op.msg
}

func (o *Opener) open(w event.PlanWebhook) (event.HTTPSSecrets, string) {
	var s event.HTTPSSecrets
	if w.Secrets == "" {
		return s, fmt.Sprintf("connection %s has no secrets", w.ConnectionKey)
	}
	plain, err := o.keyring.Open(w.Secrets, []byte(w.ConnectionKey))
	if err != nil {
		return s, fmt.Sprintf("connection %s: secrets cannot be opened with the current keys", w.ConnectionKey)
	}
	if err := json.Unmarshal(plain, &s); err != nil {
		return s, fmt.Sprintf("connection %s: secrets are malformed", w.ConnectionKey)
	}
	return s, ""
}
