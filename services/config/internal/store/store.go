// Package store keeps the configuration in MongoDB (or FerretDB v1): the collections connections
// (with the claims of the webhook edits that use them, see claims.go), policies (one document per
// policy with its webhook arrays, a version and the keys of the connections its webhooks use),
// pre_approval_webhooks (one document holding the ordered pre-approval webhooks the same way) and
// oauth_clients. It implements the Store interfaces of the
// connection, policy and oauth packages and returns their sentinel errors.
//
// It uses only what FerretDB v1 supports: no transactions, change streams, positional updates or
// aggregation stages beyond counting; webhook arrays are built in Go and written back whole under a
// version filter.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// Collection names.
const (
	Connections         = "connections"
	Policies            = "policies"
	PreApprovalWebhooks = "pre_approval_webhooks"
	OAuthClients        = "oauth_clients"
)

// Store is the MongoDB-backed configuration store.
type Store struct {
	client *mongo.Client
	db     *mongo.Database
	conns  *mongo.Collection
	pols   *mongo.Collection
	pre    *mongo.Collection
	oauth  *mongo.Collection
}

// clientOptions are the driver options for uri. On a replica set a write is acknowledged once a
// majority holds it (it survives the primary's loss), and reads see only majority-committed data,
// so a failover never rolls back what a client was told; writes and reads are retried once across a
// primary change. Options in uri (w=, readConcernLevel=, retryWrites=) win. FerretDB v1 accepts and
// ignores them.
func clientOptions(uri string) *options.ClientOptions {
	return options.Client().
		SetWriteConcern(writeconcern.Majority()).
		SetReadConcern(readconcern.Majority()).
		SetRetryWrites(true).
		SetRetryReads(true).
		ApplyURI(uri).
		SetAppName("policyhooks-config")
}

// Open connects to uri, checks the server answers and creates the indexes of database.
func Open(ctx context.Context, uri, database string) (*Store, error) {
	client, err := mongo.Connect(clientOptions(uri))
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	db := client.Database(database)
	s := &Store{client: client, db: db, conns: db.Collection(Connections), pols: db.Collection(Policies),
		pre: db.Collection(PreApprovalWebhooks), oauth: db.Collection(OAuthClients)}
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	for _, c := range []*mongo.Collection{s.conns, s.pols} {
		_, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{
			Keys: bson.D{{Key: "name", Value: 1}}, Options: options.Index().SetUnique(true).SetName("name_unique"),
		})
		if err != nil {
			_ = client.Disconnect(context.Background())
			return nil, fmt.Errorf("store: index %s.name: %w", c.Name(), err)
		}
	}
	if err := s.scrubSecretURLs(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	return s, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Close disconnects.
func (s *Store) Close(ctx context.Context) error { return s.client.Disconnect(ctx) }

// Collection returns a collection of the store's database; for tests that inspect what is stored.
func (s *Store) Collection(name string) *mongo.Collection { return s.db.Collection(name) }

func utc(t time.Time) time.Time { return t.UTC() }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func findAll[T any](ctx context.Context, c *mongo.Collection, filter any, opts ...options.Lister[options.FindOptions]) ([]T, error) {
	cur, err := c.Find(ctx, filter, opts...)
	if err != nil {
		return nil, err
	}
	var out []T
	if err := cur.All(ctx, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func isNoDocs(err error) bool { return errors.Is(err, mongo.ErrNoDocuments) }
