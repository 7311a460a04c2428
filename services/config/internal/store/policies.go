package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/shared/event"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

type webhookDoc struct {
	ID            string `bson:"id"`
	Key           string `bson:"key"`
	Name          string `bson:"name"`
	Direction     string `bson:"direction"`
	ConnectionKey string `bson:"connection_key"`
}

type policyDoc struct {
	Key                string       `bson:"_id"`
	Name               string       `bson:"name"`
	DRPAction          *string      `bson:"drp_action"`
	ExecutionTimeframe *int         `bson:"execution_timeframe"`
	CreatedAt          time.Time    `bson:"created_at"`
	UpdatedAt          time.Time    `bson:"updated_at"`
	Version            int64        `bson:"version"`
	Pre                []webhookDoc `bson:"pre_execution"`
	Post               []webhookDoc `bson:"post_execution"`
	// ConnectionKeys lists the connections the webhooks use, so that "who uses this connection"
	// is one query ({connection_keys: key}).
	ConnectionKeys []string `bson:"connection_keys"`
}

func toWebhooks(ds []webhookDoc) []policy.Webhook {
	out := make([]policy.Webhook, len(ds))
	for i, d := range ds {
		out[i] = policy.Webhook{ID: d.ID, Key: d.Key, Name: d.Name, Direction: event.Direction(d.Direction), ConnectionKey: d.ConnectionKey}
	}
	return out
}

func toWebhookDocs(ws []policy.Webhook) []webhookDoc {
	out := make([]webhookDoc, len(ws))
	for i, w := range ws {
		out[i] = webhookDoc{ID: w.ID, Key: w.Key, Name: w.Name, Direction: string(w.Direction), ConnectionKey: w.ConnectionKey}
	}
	return out
}

func (d policyDoc) domain() policy.Policy {
	return policy.Policy{Key: d.Key, Name: d.Name, DRPAction: d.DRPAction, ExecutionTimeframe: d.ExecutionTimeframe,
		CreatedAt: utc(d.CreatedAt), UpdatedAt: utc(d.UpdatedAt), Version: d.Version, Pre: toWebhooks(d.Pre), Post: toWebhooks(d.Post)}
}

// GetPolicy returns the policy key or a *policy.NotFoundError.
func (s *Store) GetPolicy(ctx context.Context, key string) (policy.Policy, error) {
	var d policyDoc
	err := s.pols.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	if isNoDocs(err) {
		return policy.Policy{}, &policy.NotFoundError{Key: key}
	}
	if err != nil {
		return policy.Policy{}, fmt.Errorf("store: get policy %q: %w", key, err)
	}
	return d.domain(), nil
}

// ListPolicies returns a page of policies, newest first, and their total.
func (s *Store) ListPolicies(ctx context.Context, skip, limit int) ([]policy.Policy, int, error) {
	total, err := s.pols.CountDocuments(ctx, bson.D{})
	if err != nil {
		return nil, 0, fmt.Errorf("store: count policies: %w", err)
	}
	docs, err := findAll[policyDoc](ctx, s.pols, bson.D{},
		options.Find().SetSort(bson.D{{Key: "created_at", Value: -1}, {Key: "_id", Value: 1}}).SetSkip(int64(skip)).SetLimit(int64(limit)))
	if err != nil {
		return nil, 0, fmt.Errorf("store: list policies: %w", err)
	}
	out := make([]policy.Policy, len(docs))
	for i, d := range docs {
		out[i] = d.domain()
	}
	return out, int(total), nil
}

// AllPolicies returns every policy.
func (s *Store) AllPolicies(ctx context.Context) ([]policy.Policy, error) {
	docs, err := findAll[policyDoc](ctx, s.pols, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("store: all policies: %w", err)
	}
	out := make([]policy.Policy, len(docs))
	for i, d := range docs {
		out[i] = d.domain()
	}
	return out, nil
}

// UpsertPolicy creates or updates in.Key; a name that belongs to another policy is a
// *policy.KeyTakenError. A policy created or deleted meanwhile (by another request or replica) is
// updated or created instead.
func (s *Store) UpsertPolicy(ctx context.Context, in policy.Input, now time.Time) (policy.Policy, error) {
	taken := &policy.KeyTakenError{Key: in.Key}
	for range maxUpsertAttempts {
		n, err := s.pols.CountDocuments(ctx, bson.D{{Key: "name", Value: in.Name}, {Key: "_id", Value: bson.D{{Key: "$ne", Value: in.Key}}}})
		if err != nil {
			return policy.Policy{}, fmt.Errorf("store: check policy name: %w", err)
		}
		if n > 0 {
			return policy.Policy{}, taken
		}
		_, err = s.GetPolicy(ctx, in.Key)
		switch {
		case errors.Is(err, policy.ErrNotFound):
			d := policyDoc{Key: in.Key, Name: in.Name, DRPAction: in.DRPAction, ExecutionTimeframe: in.ExecutionTimeframe,
				CreatedAt: now, UpdatedAt: now, Version: 1, Pre: []webhookDoc{}, Post: []webhookDoc{}, ConnectionKeys: []string{}}
			_, err := s.pols.InsertOne(ctx, d)
			if mongo.IsDuplicateKeyError(err) {
				continue // created meanwhile, or the name was taken meanwhile: check again
			}
			if err != nil {
				return policy.Policy{}, fmt.Errorf("store: insert policy %q: %w", in.Key, err)
			}
			return d.domain(), nil
		case err != nil:
			return policy.Policy{}, err
		}
		var d policyDoc
		err = s.pols.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: in.Key}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "name", Value: in.Name}, {Key: "drp_action", Value: in.DRPAction},
				{Key: "execution_timeframe", Value: in.ExecutionTimeframe}, {Key: "updated_at", Value: now}}},
			{Key: "$inc", Value: bson.D{{Key: "version", Value: int64(1)}}},
		}, options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&d)
		if isNoDocs(err) {
			continue // deleted meanwhile: create it
		}
		if mongo.IsDuplicateKeyError(err) {
			return policy.Policy{}, taken
		}
		if err != nil {
			return policy.Policy{}, fmt.Errorf("store: update policy %q: %w", in.Key, err)
		}
		return d.domain(), nil
	}
	return policy.Policy{}, fmt.Errorf("store: policy %q kept being created and deleted: gave up after %d attempts", in.Key, maxUpsertAttempts)
}

// DeletePolicy removes key with its webhooks, then drops the claims of that life of the policy
// from the connections it used (best effort: a claim left behind is judged stale by the next
// delete or type change of the connection).
func (s *Store) DeletePolicy(ctx context.Context, key string) error {
	old, err := s.GetPolicy(ctx, key)
	if err != nil {
		return err
	}
	res, err := s.pols.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}})
	if err != nil {
		return fmt.Errorf("store: delete policy %q: %w", key, err)
	}
	if res.DeletedCount == 0 {
		return &policy.NotFoundError{Key: key}
	}
	gone := old
	gone.Version = math.MaxInt64
	_ = s.ReleaseConnections(ctx, gone, old.ConnectionKeys())
	return nil
}

// SaveWebhooks writes both webhook lists of p, and the connection keys they use, if the stored
// document is still p.Version of the same life (created_at) of the policy; policy.ErrConflict
// otherwise.
func (s *Store) SaveWebhooks(ctx context.Context, p policy.Policy, now time.Time) (policy.Policy, error) {
	res, err := s.pols.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: p.Key}, {Key: "version", Value: p.Version}, {Key: "created_at", Value: p.CreatedAt}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "pre_execution", Value: toWebhookDocs(p.Pre)}, {Key: "post_execution", Value: toWebhookDocs(p.Post)},
			{Key: "connection_keys", Value: p.ConnectionKeys()}, {Key: "updated_at", Value: now},
			{Key: "version", Value: p.Version + 1},
		}}})
	if err != nil {
		return policy.Policy{}, fmt.Errorf("store: save webhooks of %q: %w", p.Key, err)
	}
	if res.MatchedCount == 0 {
		if _, err := s.GetPolicy(ctx, p.Key); err != nil {
			return policy.Policy{}, err
		}
		return policy.Policy{}, policy.ErrConflict
	}
	p.Version++
	p.UpdatedAt = now
	return p, nil
}

// WebhooksUsing returns the webhooks that use a connection, as "<policy>.<kind>.<key>" (and
// "pre_approval.<key>" for pre-approval webhooks), and the keys of the policies whose plans may
// carry it: every policy when a pre-approval webhook uses it, since every plan carries those.
func (s *Store) WebhooksUsing(ctx context.Context, connectionKey string) ([]string, []string, error) {
	docs, err := findAll[policyDoc](ctx, s.pols, bson.D{{Key: "connection_keys", Value: connectionKey}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, nil, fmt.Errorf("store: webhooks using %q: %w", connectionKey, err)
	}
	var names, policies []string
	for _, d := range docs {
		policies = append(policies, d.Key)
		for _, list := range []struct {
			kind policy.Kind
			ws   []webhookDoc
		}{{policy.Pre, d.Pre}, {policy.Post, d.Post}} {
			for _, w := range list.ws {
				if w.ConnectionKey == connectionKey {
					names = append(names, fmt.Sprintf("%s.%s.%s", d.Key, list.kind, w.Key))
				}
			}
		}
	}
	pre, err := s.preApprovalUsing(ctx, connectionKey)
	if err != nil || len(pre) == 0 {
		return names, policies, err
	}
	if policies, err = s.policyKeys(ctx); err != nil {
		return nil, nil, err
	}
	return append(names, pre...), policies, nil
}
