package policy

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

// maxAttempts bounds the retries of a webhook list edit that keeps meeting concurrent edits.
const maxAttempts = 200

// Store persists policies. Its errors are NotFoundError, KeyTakenError and ErrConflict where
// they apply.
type Store interface {
	GetPolicy(ctx context.Context, key string) (Policy, error)
	ListPolicies(ctx context.Context, skip, limit int) ([]Policy, int, error)
	UpsertPolicy(ctx context.Context, in Input, now time.Time) (Policy, error)
	DeletePolicy(ctx context.Context, key string) error
	// SaveWebhooks writes both webhook lists of p if the stored document is still p.Version (of
	// the policy created at p.CreatedAt), and returns the document with its new version;
	// ErrConflict otherwise.
	SaveWebhooks(ctx context.Context, p Policy, now time.Time) (Policy, error)
	// ClaimConnections marks the connections keys as about to be used by the next version of p
	// (p as read), so that they are neither deleted nor changed to another type until that
	// version is saved or known not to be: a connection that does not exist is a
	// *connection.NotFoundError, one that is not https a *NotHTTPSError. It returns the claim.
	ClaimConnections(ctx context.Context, p Policy, keys []string) (string, error)
	// DropClaim removes a claim whose version was not saved from the connections keys.
	DropClaim(ctx context.Context, claim string, keys []string) error
	// ReleaseConnections drops the claims of p (as just saved) up to its version from the
	// connections keys, which it no longer uses.
	ReleaseConnections(ctx context.Context, p Policy, keys []string) error
	// GetPreApproval returns the document of the pre-approval list: Key PreApprovalKey, the
	// webhooks in Pre, and a life (CreatedAt) and Version as a policy's.
	GetPreApproval(ctx context.Context) (Policy, error)
	// SavePreApproval writes the pre-approval list p.Pre as SaveWebhooks writes a policy's lists:
	// only if the stored document is still p.Version of that life, else ErrConflict.
	SavePreApproval(ctx context.Context, p Policy, now time.Time) (Policy, error)
}

// Connections reads the connections webhooks use.
type Connections interface {
	GetConnection(ctx context.Context, key string) (connection.Connection, error)
	GetConnections(ctx context.Context, keys []string) (map[string]connection.Connection, error)
}

// Publisher puts and removes the compiled plans of policies.
type Publisher interface {
	PublishPolicies(ctx context.Context, keys ...string) error
	RemovePolicy(ctx context.Context, key string) error
	// Republish puts every policy's plan that differs from the bucket's: every plan carries the
	// pre-approval list.
	Republish(ctx context.Context) error
}

// Service applies the policy and webhook rules.
type Service struct {
	store Store
	conns Connections
	pub   Publisher
	log   zerolog.Logger
	now   func() time.Time
}

// NewService returns a Service.
func NewService(store Store, conns Connections, pub Publisher, log zerolog.Logger) *Service {
	return &Service{store: store, conns: conns, pub: pub, log: log,
		now: func() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }}
}

// Failed is an item of a bulk upsert that was not applied.
type Failed struct {
	// Err is why: a *KeyTakenError.
	Err  error
	Data Input
}

// Upsert creates or updates each policy by key; conflicting items go to failed.
func (s *Service) Upsert(ctx context.Context, items []Input) ([]Policy, []Failed, error) {
	succeeded, failed := []Policy{}, []Failed{}
	for _, in := range items {
		p, err := s.store.UpsertPolicy(ctx, in, s.now())
		if errors.Is(err, ErrKeyTaken) {
			failed = append(failed, Failed{Err: err, Data: in})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		succeeded = append(succeeded, p)
		s.publish(ctx, p.Key)
	}
	return succeeded, failed, nil
}

// Get returns one policy.
func (s *Service) Get(ctx context.Context, key string) (Policy, error) {
	return s.store.GetPolicy(ctx, key)
}

// List returns a page of policies, newest first, and the total.
func (s *Service) List(ctx context.Context, skip, limit int) ([]Policy, int, error) {
	return s.store.ListPolicies(ctx, skip, limit)
}

// Delete removes a policy with its webhooks and its plan.
func (s *Service) Delete(ctx context.Context, key string) error {
	if err := s.store.DeletePolicy(ctx, key); err != nil {
		return err
	}
	if err := s.pub.RemovePolicy(ctx, key); err != nil {
		s.log.Warn().Err(err).Str("policy", key).Msg("removing the plan failed; the periodic re-publish will retry")
	}
	return nil
}

// WebhookView is the webhook API resource.
type WebhookView struct {
	ID               string                 `json:"id"`
	Key              string                 `json:"key"`
	Name             string                 `json:"name"`
	Direction        event.Direction        `json:"direction"`
	Order            int                    `json:"order"`
	ConnectionConfig *connection.Connection `json:"connection_config"`
}

// Webhooks returns the list of kind, in order.
func (s *Service) Webhooks(ctx context.Context, policyKey string, kind Kind) ([]WebhookView, error) {
	p, err := s.store.GetPolicy(ctx, policyKey)
	if err != nil {
		return nil, err
	}
	return s.views(ctx, p.Webhooks(kind))
}

// Webhook returns one webhook.
func (s *Service) Webhook(ctx context.Context, policyKey string, kind Kind, key string) (WebhookView, error) {
	p, err := s.store.GetPolicy(ctx, policyKey)
	if err != nil {
		return WebhookView{}, err
	}
	views, err := s.views(ctx, p.Webhooks(kind))
	if err != nil {
		return WebhookView{}, err
	}
	for _, v := range views {
		if v.Key == key {
			return v, nil
		}
	}
	return WebhookView{}, &WebhookNotFoundError{Kind: kind, Key: key, Policy: policyKey}
}

// ReplaceWebhooks replaces the whole list of kind, all or nothing.
func (s *Service) ReplaceWebhooks(ctx context.Context, policyKey string, kind Kind, items []WebhookInput) ([]WebhookView, error) {
	if _, err := s.store.GetPolicy(ctx, policyKey); err != nil {
		return nil, err
	}
	if _, err := Replace(nil, items); err != nil {
		return nil, err
	}
	for _, in := range items {
		if err := s.checkConnection(ctx, in.ConnectionKey); err != nil {
			return nil, err
		}
	}
	p, err := s.edit(ctx, policyKey, func(p *Policy) error {
		ws, err := Replace(p.Webhooks(kind), items)
		if err != nil {
			return err
		}
		p.SetWebhooks(kind, ws)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.views(ctx, p.Webhooks(kind))
}

// PatchWebhook changes one webhook and returns it with new_order (every webhook's order when its
// order changed, else empty).
func (s *Service) PatchWebhook(ctx context.Context, policyKey string, kind Kind, key string, ch Change) (WebhookView, []OrderEntry, error) {
	if _, err := s.store.GetPolicy(ctx, policyKey); err != nil {
		return WebhookView{}, nil, err
	}
	if ch.ConnectionKey != nil {
		if err := s.checkConnection(ctx, *ch.ConnectionKey); err != nil {
			return WebhookView{}, nil, err
		}
	}
	var index int
	var moved bool
	p, err := s.edit(ctx, policyKey, func(p *Policy) error {
		ws, i, m, err := Patch(p.Webhooks(kind), kind, policyKey, key, ch)
		if err != nil {
			return err
		}
		index, moved = i, m
		p.SetWebhooks(kind, ws)
		return nil
	})
	if err != nil {
		return WebhookView{}, nil, err
	}
	ws := p.Webhooks(kind)
	views, err := s.views(ctx, ws[index:index+1])
	if err != nil {
		return WebhookView{}, nil, err
	}
	views[0].Order = index
	newOrder := []OrderEntry{}
	if moved {
		newOrder = Orders(ws)
	}
	return views[0], newOrder, nil
}

// DeleteWebhook removes one webhook and returns new_order (the remaining webhooks' orders when any
// moved up, else empty).
func (s *Service) DeleteWebhook(ctx context.Context, policyKey string, kind Kind, key string) ([]OrderEntry, error) {
	var moved bool
	p, err := s.edit(ctx, policyKey, func(p *Policy) error {
		ws, m, err := Remove(p.Webhooks(kind), kind, policyKey, key)
		if err != nil {
			return err
		}
		moved = m
		p.SetWebhooks(kind, ws)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !moved {
		return []OrderEntry{}, nil
	}
	return Orders(p.Webhooks(kind)), nil
}

func (s *Service) checkConnection(ctx context.Context, key string) error {
	c, err := s.conns.GetConnection(ctx, key)
	if err != nil {
		return err
	}
	if c.Type != connection.HTTPS {
		return &NotHTTPSError{Key: key, Type: string(c.Type)}
	}
	return nil
}

// edit reads the policy key (or the pre-approval list, PreApprovalKey), applies fn and saves it
// under a version check, retrying on conflict. The connections the edit starts to use are claimed
// before the save (the claim fails for a connection that is missing or not https, and keeps it
// from being deleted or changed meanwhile); those it stops using are released after it. A
// successful edit re-publishes the plans that carry the list.
func (s *Service) edit(ctx context.Context, key string, fn func(*Policy) error) (Policy, error) {
	for attempt := range maxAttempts {
		p, err := s.load(ctx, key)
		if err != nil {
			return Policy{}, err
		}
		before := p.ConnectionKeys()
		if err := fn(&p); err != nil {
			return Policy{}, err
		}
		added := without(p.ConnectionKeys(), before)
		var claim string
		if len(added) > 0 {
			if claim, err = s.store.ClaimConnections(ctx, p, added); err != nil {
				return Policy{}, err
			}
		}
		saved, err := s.save(ctx, p)
		if err != nil && claim != "" {
			if err := s.store.DropClaim(ctx, claim, added); err != nil {
				s.log.Warn().Err(err).Str("policy", key).Msg("dropping the claim of an unsaved edit failed; a connection delete drops it")
			}
		}
		if errors.Is(err, ErrConflict) {
			wait := time.Duration(rand.IntN(min(attempt+1, 20))+1) * time.Millisecond
			select {
			case <-ctx.Done():
				return Policy{}, ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		if err != nil {
			return Policy{}, err
		}
		if removed := without(before, saved.ConnectionKeys()); len(removed) > 0 {
			if err := s.store.ReleaseConnections(ctx, saved, removed); err != nil {
				s.log.Warn().Err(err).Str("policy", key).Msg("releasing connections failed; a connection delete drops the claims")
			}
		}
		s.publish(ctx, key)
		return saved, nil
	}
	return Policy{}, errTooBusy
}

// without returns the keys of a that are not in b.
func without(a, b []string) []string {
	var out []string
	for _, k := range a {
		if !slices.Contains(b, k) {
			out = append(out, k)
		}
	}
	return out
}

// load reads the document of key: a policy, or the pre-approval list.
func (s *Service) load(ctx context.Context, key string) (Policy, error) {
	if key == PreApprovalKey {
		return s.store.GetPreApproval(ctx)
	}
	return s.store.GetPolicy(ctx, key)
}

// save writes the webhook lists of p, a document load returned, under its version check.
func (s *Service) save(ctx context.Context, p Policy) (Policy, error) {
	if p.Key == PreApprovalKey {
		return s.store.SavePreApproval(ctx, p, s.now())
	}
	return s.store.SaveWebhooks(ctx, p, s.now())
}

// publish puts the plan of the policy key; for the pre-approval list, which every plan carries,
// every plan.
func (s *Service) publish(ctx context.Context, key string) {
	var err error
	if key == PreApprovalKey {
		err = s.pub.Republish(ctx)
	} else {
		err = s.pub.PublishPolicies(ctx, key)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("policy", key).Msg("publishing the plan failed; the periodic re-publish will retry")
	}
}

func (s *Service) views(ctx context.Context, ws []Webhook) ([]WebhookView, error) {
	keys := make([]string, 0, len(ws))
	for _, w := range ws {
		keys = append(keys, w.ConnectionKey)
	}
	conns, err := s.conns.GetConnections(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]WebhookView, len(ws))
	for i, w := range ws {
		out[i] = WebhookView{ID: w.ID, Key: w.Key, Name: w.Name, Direction: w.Direction, Order: i}
		if c, ok := conns[w.ConnectionKey]; ok {
			out[i].ConnectionConfig = &c
		}
	}
	return out, nil
}
