// Package plans compiles each policy's webhooks, and the pre-approval webhooks when config's
// PRE_APPROVAL is on, into an event.Plan and keeps the NATS KV bucket
// policy_webhooks, the executor's materialised view, in step with MongoDB: it puts the affected
// plans after every change and, on start and periodically, re-publishes everything and deletes
// the plans of policies that no longer exist, so that a crash between the MongoDB write and the KV
// put heals. A plan carries each connection's sealed secrets exactly as stored, never plaintext,
// and of the connection's URL only its scheme and host.
//
// Several config replicas publish into one bucket, each from its own reads of MongoDB. Every write
// of a key is a compare-and-set on the revision the publisher read before it read MongoDB: a put
// or delete that lands carries data read after whatever the key held, so an older plan never
// overwrites a newer one and a plan is deleted only when MongoDB said, after that revision, that
// its policy is gone.
package plans

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/rs/zerolog"
)

// maxAttempts bounds the compare-and-set retries of one key that keeps changing under a publisher.
const maxAttempts = 50

// Source reads what plans are compiled from.
type Source interface {
	GetPolicy(ctx context.Context, key string) (policy.Policy, error)
	AllPolicies(ctx context.Context) ([]policy.Policy, error)
	// GetPreApproval returns the document of the pre-approval list, its webhooks in Pre.
	GetPreApproval(ctx context.Context) (policy.Policy, error)
	GetConnections(ctx context.Context, keys []string) (map[string]connection.Connection, error)
}

// Publisher writes plans into the policy_webhooks bucket. It is safe for concurrent use, also by
// several replicas over one bucket: see the package comment.
type Publisher struct {
	src         Source
	kv          jetstream.KeyValue
	preApproval bool
	log         zerolog.Logger
	now         func() time.Time
}

// NewPublisher returns a Publisher over the policy_webhooks bucket kv. With preApproval (config's
// PRE_APPROVAL) every plan carries the pre-approval stage.
func NewPublisher(src Source, kv jetstream.KeyValue, preApproval bool, log zerolog.Logger) *Publisher {
	return &Publisher{src: src, kv: kv, preApproval: preApproval, log: log, now: func() time.Time { return time.Now().UTC() }}
}

// Compile returns the plan of p; preApproval is the pre-approval stage of every plan (nil: none),
// and conns holds the connections the webhooks of both use. A webhook whose connection is missing
// gets no secrets (calling it is an error in the executor).
func Compile(p policy.Policy, preApproval *event.PreApproval, conns map[string]connection.Connection, at time.Time) event.Plan {
	plan := event.Plan{PolicyKey: p.Key, Version: p.Version, PolicyCreatedAt: p.CreatedAt, PublishedAt: at,
		PolicyAction: p.Action(), Pre: planWebhooks(p.Pre, conns), Post: planWebhooks(p.Post, conns),
		PreApproval: preApproval}
	if p.ExecutionTimeframe != nil {
		plan.ExecutionTimeframe = *p.ExecutionTimeframe
	}
	return plan
}

// CompilePreApproval returns the pre-approval stage of the plans from the document of the
// pre-approval list (its webhooks in Pre, two-way), nil when list is nil (PRE_APPROVAL off). A list
// without webhooks gives a stage with an empty (not nil) list: every request waits for an operator.
func CompilePreApproval(list *policy.Policy, conns map[string]connection.Connection) *event.PreApproval {
	if list == nil {
		return nil
	}
	return &event.PreApproval{Webhooks: planWebhooks(list.Pre, conns)}
}

// planWebhooks returns the plan's form of the list ws: the order is the index, and each carries
// its connection's state, display URL and sealed secrets.
func planWebhooks(ws []policy.Webhook, conns map[string]connection.Connection) []event.PlanWebhook {
	out := make([]event.PlanWebhook, len(ws))
	for i, w := range ws {
		c := conns[w.ConnectionKey]
		out[i] = event.PlanWebhook{ID: w.ID, Key: w.Key, Name: w.Name, Direction: w.Direction, Order: i,
			ConnectionKey: w.ConnectionKey, ConnectionDisabled: c.Disabled, URL: connection.DisplayURL(c.SecretsURL),
			Secrets: c.Secrets}
	}
	return out
}

// read returns what the plans of policies are compiled from besides the policies: the pre-approval
// list when PRE_APPROVAL is on (else nil), and the connections of policies and of that list.
func (pb *Publisher) read(ctx context.Context, policies ...policy.Policy) (*policy.Policy, map[string]connection.Connection, error) {
	var keys []string
	for _, p := range policies {
		keys = append(keys, p.ConnectionKeys()...)
	}
	var list *policy.Policy
	if pb.preApproval {
		l, err := pb.src.GetPreApproval(ctx)
		if err != nil {
			return nil, nil, err
		}
		list = &l
		keys = append(keys, l.ConnectionKeys()...)
	}
	conns, err := pb.src.GetConnections(ctx, keys)
	if err != nil {
		return nil, nil, err
	}
	return list, conns, nil
}

// PublishPolicies puts the current plans of keys; a key whose policy no longer exists has its
// plan deleted.
func (pb *Publisher) PublishPolicies(ctx context.Context, keys ...string) error {
	var errs []error
	for _, key := range keys {
		errs = append(errs, pb.sync(ctx, key))
	}
	return errors.Join(errs...)
}

// RemovePolicy deletes the plan of a deleted policy (or, when the policy exists again, puts its
// new plan).
func (pb *Publisher) RemovePolicy(ctx context.Context, key string) error {
	return pb.sync(ctx, key)
}

// Republish puts every policy's plan whose content differs from the bucket's, and deletes the
// plans of policies that no longer exist. What it read in one pass is only a hint: each key it
// would change is settled by sync, from MongoDB read again after the key's revision.
func (pb *Publisher) Republish(ctx context.Context) error {
	all, err := pb.src.AllPolicies(ctx)
	if err != nil {
		return err
	}
	list, conns, err := pb.read(ctx, all...)
	if err != nil {
		return err
	}
	pre := CompilePreApproval(list, conns)
	var errs []error
	exists := map[string]bool{}
	for _, p := range all {
		exists[event.KVKey(p.Key)] = true
		if e, err := pb.kv.Get(ctx, event.KVKey(p.Key)); err == nil {
			var old event.Plan
			if json.Unmarshal(e.Value(), &old) == nil && samePlan(old, Compile(p, pre, conns, time.Time{})) {
				continue
			}
		}
		errs = append(errs, pb.sync(ctx, p.Key))
	}
	lister, err := pb.kv.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("plans: list keys: %w", err))...)
	}
	for k := range lister.Keys() {
		if !exists[k] {
			errs = append(errs, pb.sync(ctx, policyKeyOf(k)))
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

// sync makes the plan of policyKey what MongoDB says: it reads the key's revision, then the policy,
// the pre-approval list (with PRE_APPROVAL) and their connections, and writes the compiled plan (or deletes the plan of a policy that is gone)
// only if the key is still at that revision, retrying otherwise. A plan in the bucket that is
// already the same, or a newer version of the same policy, is left alone.
func (pb *Publisher) sync(ctx context.Context, policyKey string) error {
	key := event.KVKey(policyKey)
	for range maxAttempts {
		cur, rev, err := natsconn.Latest(ctx, pb.kv, key)
		if err != nil {
			return fmt.Errorf("plans: read %q: %w", key, err)
		}
		p, err := pb.src.GetPolicy(ctx, policyKey)
		if errors.Is(err, policy.ErrNotFound) {
			if cur == nil {
				return nil
			}
			err := pb.kv.Delete(ctx, key, jetstream.LastRevision(rev))
			if natsconn.IsConflict(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("plans: delete %q: %w", key, err)
			}
			pb.log.Info().Str("policy", policyKey).Msg("deleted the plan of a policy that no longer exists")
			return nil
		}
		if err != nil {
			return err
		}
		list, conns, err := pb.read(ctx, p)
		if err != nil {
			return err
		}
		plan := Compile(p, CompilePreApproval(list, conns), conns, pb.now())
		if cur != nil {
			var old event.Plan
			if json.Unmarshal(cur.Value(), &old) == nil {
				if samePlan(old, plan) {
					return nil
				}
				if old.Supersedes(plan) {
					pb.log.Debug().Str("policy", policyKey).Int64("version", plan.Version).Int64("stored", old.Version).
						Msg("the bucket holds a newer plan; leaving it")
					return nil
				}
			}
		}
		b, err := json.Marshal(plan)
		if err != nil {
			return fmt.Errorf("plans: encode %q: %w", policyKey, err)
		}
		// Revision 0 expects no message at all under the key.
		_, err = pb.kv.Update(ctx, key, b, rev)
		if natsconn.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("plans: put %q: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("plans: %q kept changing: gave up after %d attempts", key, maxAttempts)
}

// policyKeyOf inverts event.KVKey; policy keys never hold '=' (SPEC §1), so it is exact.
func policyKeyOf(kvKey string) string {
	return strings.NewReplacer("=3A", ":", "=2E", ".").Replace(kvKey)
}

// samePlan reports whether a and b hold the same plan, PublishedAt aside: every other field, the
// pre-approval stage included, is compared in its JSON form.
func samePlan(a, b event.Plan) bool {
	a.PublishedAt, b.PublishedAt = time.Time{}, time.Time{}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
