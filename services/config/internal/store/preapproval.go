package store

import (
	"context"
	"fmt"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// preApprovalID is the _id of the one document of the pre_approval_webhooks collection.
const preApprovalID = "pre_approval"

// preApprovalDoc holds the ordered pre-approval webhooks as a policy document holds a list: the
// order is the array index, every edit writes the array back whole under a version filter, and
// connection_keys lists the connections it uses.
type preApprovalDoc struct {
	ID             string       `bson:"_id"`
	CreatedAt      time.Time    `bson:"created_at"`
	UpdatedAt      time.Time    `bson:"updated_at"`
	Version        int64        `bson:"version"`
	Webhooks       []webhookDoc `bson:"webhooks"`
	ConnectionKeys []string     `bson:"connection_keys"`
}

func (d preApprovalDoc) domain() policy.Policy {
	return policy.Policy{Key: policy.PreApprovalKey, CreatedAt: utc(d.CreatedAt), UpdatedAt: utc(d.UpdatedAt),
		Version: d.Version, Pre: toWebhooks(d.Webhooks)}
}

// GetPreApproval returns the document of the pre-approval list (see policy.Store), creating it
// empty when there is none.
func (s *Store) GetPreApproval(ctx context.Context) (policy.Policy, error) {
	for range 2 {
		var d preApprovalDoc
		err := s.pre.FindOne(ctx, bson.D{{Key: "_id", Value: preApprovalID}}).Decode(&d)
		if isNoDocs(err) {
			if err := s.ensurePreApproval(ctx); err != nil {
				return policy.Policy{}, err
			}
			continue
		}
		if err != nil {
			return policy.Policy{}, fmt.Errorf("store: get pre-approval webhooks: %w", err)
		}
		return d.domain(), nil
	}
	return policy.Policy{}, fmt.Errorf("store: get pre-approval webhooks: the document was removed as it was created")
}

// ensurePreApproval creates the empty document of the pre-approval list unless it exists.
func (s *Store) ensurePreApproval(ctx context.Context) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	_, err := s.pre.InsertOne(ctx, preApprovalDoc{ID: preApprovalID, CreatedAt: now, UpdatedAt: now, Version: 1,
		Webhooks: []webhookDoc{}, ConnectionKeys: []string{}})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("store: create the pre-approval webhooks: %w", err)
	}
	return nil
}

// SavePreApproval writes the pre-approval list p.Pre, and the connection keys it uses, if the
// stored document is still p.Version of the same life; policy.ErrConflict otherwise.
func (s *Store) SavePreApproval(ctx context.Context, p policy.Policy, now time.Time) (policy.Policy, error) {
	res, err := s.pre.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: preApprovalID}, {Key: "version", Value: p.Version}, {Key: "created_at", Value: p.CreatedAt}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "webhooks", Value: toWebhookDocs(p.Pre)}, {Key: "connection_keys", Value: p.ConnectionKeys()},
			{Key: "updated_at", Value: now}, {Key: "version", Value: p.Version + 1},
		}}})
	if err != nil {
		return policy.Policy{}, fmt.Errorf("store: save pre-approval webhooks: %w", err)
	}
	if res.MatchedCount == 0 {
		// Another version or life: read again (which creates a missing document).
		if _, err := s.GetPreApproval(ctx); err != nil {
			return policy.Policy{}, err
		}
		return policy.Policy{}, policy.ErrConflict
	}
	p.Version++
	p.UpdatedAt = now
	return p, nil
}

// preApprovalUsing returns the pre-approval webhooks that use a connection, as
// "pre_approval.<key>".
func (s *Store) preApprovalUsing(ctx context.Context, connectionKey string) ([]string, error) {
	var d preApprovalDoc
	err := s.pre.FindOne(ctx, bson.D{{Key: "_id", Value: preApprovalID}, {Key: "connection_keys", Value: connectionKey}}).Decode(&d)
	if isNoDocs(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: pre-approval webhooks using %q: %w", connectionKey, err)
	}
	var names []string
	for _, w := range d.Webhooks {
		if w.ConnectionKey == connectionKey {
			names = append(names, fmt.Sprintf("%s.%s", policy.PreApproval, w.Key))
		}
	}
	return names, nil
}

// policyKeys returns the key of every policy, in order.
func (s *Store) policyKeys(ctx context.Context) ([]string, error) {
	docs, err := findAll[struct {
		Key string `bson:"_id"`
	}](ctx, s.pols, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("store: policy keys: %w", err)
	}
	keys := make([]string, len(docs))
	for i, d := range docs {
		keys[i] = d.Key
	}
	return keys, nil
}
