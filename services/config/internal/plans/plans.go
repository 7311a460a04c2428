// Package plans compiles each policy's webhooks into an event.Plan and keeps the NATS KV bucket
// policy_webhooks, the executor's materialised view, in step with MongoDB: it puts the affected
// plans after every change and, on start and periodically, re-publishes everything and deletes
// the plans of policies that no longer exist, so that a crash between the MongoDB write and the KV
// put heals. A plan carries each connection's sealed secrets exactly as stored, never plaintext.
package plans

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

// Source reads what plans are compiled from.
type Source interface {
	GetPolicy(ctx context.Context, key string) (policy.Policy, error)
	AllPolicies(ctx context.Context) ([]policy.Policy, error)
	GetConnections(ctx context.Context, keys []string) (map[string]connection.Connection, error)
}

// Publisher writes plans into the policy_webhooks bucket. Its writes are serialised, and each
// reads MongoDB after the previous one finished, so a later write never puts older data.
type Publisher struct {
	src Source
	kv  jetstream.KeyValue
	log zerolog.Logger
	now func() time.Time
	mu  sync.Mutex
}

// NewPublisher returns a Publisher over the policy_webhooks bucket kv.
func NewPublisher(src Source, kv jetstream.KeyValue, log zerolog.Logger) *Publisher {
	return &Publisher{src: src, kv: kv, log: log, now: func() time.Time { return time.Now().UTC() }}
}

// Compile returns the plan of p; conns holds the connections its webhooks use. A webhook whose
// connection is missing gets no secrets (calling it is an error in the executor).
func Compile(p policy.Policy, conns map[string]connection.Connection, at time.Time) event.Plan {
	list := func(ws []policy.Webhook) []event.PlanWebhook {
		out := make([]event.PlanWebhook, len(ws))
		for i, w := range ws {
			c := conns[w.ConnectionKey]
			out[i] = event.PlanWebhook{ID: w.ID, Key: w.Key, Name: w.Name, Direction: w.Direction, Order: i,
				ConnectionKey: w.ConnectionKey, ConnectionDisabled: c.Disabled, URL: c.SecretsURL, Secrets: c.Secrets}
		}
		return out
	}
	return event.Plan{PolicyKey: p.Key, Version: p.Version, PublishedAt: at, Pre: list(p.Pre), Post: list(p.Post)}
}

// PublishPolicies puts the current plans of keys; a key whose policy no longer exists has its
// plan deleted.
func (pb *Publisher) PublishPolicies(ctx context.Context, keys ...string) error {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	var errs []error
	for _, key := range keys {
		p, err := pb.src.GetPolicy(ctx, key)
		if errors.Is(err, policy.ErrNotFound) {
			errs = append(errs, pb.delete(ctx, event.KVKey(key)))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, pb.put(ctx, p, false))
	}
	return errors.Join(errs...)
}

// RemovePolicy deletes the plan of a deleted policy.
func (pb *Publisher) RemovePolicy(ctx context.Context, key string) error {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return pb.delete(ctx, event.KVKey(key))
}

// Republish puts every policy's plan whose content differs from the bucket's, and deletes the
// plans of policies that no longer exist.
func (pb *Publisher) Republish(ctx context.Context) error {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	all, err := pb.src.AllPolicies(ctx)
	if err != nil {
		return err
	}
	var errs []error
	exists := map[string]bool{}
	for _, p := range all {
		exists[event.KVKey(p.Key)] = true
		errs = append(errs, pb.put(ctx, p, true))
	}
	lister, err := pb.kv.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("plans: list keys: %w", err))...)
	}
	for k := range lister.Keys() {
		if !exists[k] {
			pb.log.Info().Str("policy", k).Msg("deleting the plan of a policy that no longer exists")
			errs = append(errs, pb.delete(ctx, k))
		}
	}
	return errors.Join(errs...)
}

// Run re-publishes every interval until ctx ends, running each of extra (for example the key
// rotation) before; failures are logged.
func (pb *Publisher) Run(ctx context.Context, interval time.Duration, extra ...func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range extra {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				pb.log.Warn().Err(err).Msg("periodic maintenance failed")
			}
		}
		if err := pb.Republish(ctx); err != nil && ctx.Err() == nil {
			pb.log.Warn().Err(err).Msg("periodic re-publish of the plans failed")
		}
	}
}

func (pb *Publisher) put(ctx context.Context, p policy.Policy, onlyIfChanged bool) error {
	keys := p.ConnectionKeys()
	conns, err := pb.src.GetConnections(ctx, keys)
	if err != nil {
		return err
	}
	plan := Compile(p, conns, pb.now())
	if onlyIfChanged {
		if e, err := pb.kv.Get(ctx, event.KVKey(p.Key)); err == nil {
			var old event.Plan
			if json.Unmarshal(e.Value(), &old) == nil && samePlan(old, plan) {
				return nil
			}
		}
	}
	b, err := json.Marshal(plan)
	if err != nil {
		return fmt.Errorf("plans: encode %q: %w", p.Key, err)
	}
	if _, err := pb.kv.Put(ctx, event.KVKey(p.Key), b); err != nil {
		return fmt.Errorf("plans: put %q: %w", p.Key, err)
	}
	return nil
}

func samePlan(a, b event.Plan) bool {
	a.PublishedAt, b.PublishedAt = time.Time{}, time.Time{}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// delete removes the plan stored under the KV key (event.KVKey of a policy key).
func (pb *Publisher) delete(ctx context.Context, key string) error {
	if err := pb.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("plans: delete %q: %w", key, err)
	}
	return nil
}
