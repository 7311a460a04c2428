package store

import (
	"context"
	"fmt"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"go.mongodb.org/mongo-driver/v2/bson"
)

type clientDoc struct {
	ID         string    `bson:"_id"`
	SecretHash string    `bson:"secret_hash"`
	Scopes     []string  `bson:"scopes"`
	CreatedAt  time.Time `bson:"created_at"`
}

func (d clientDoc) domain() oauth.Client {
	return oauth.Client{ID: d.ID, SecretHash: d.SecretHash, Scopes: d.Scopes, CreatedAt: utc(d.CreatedAt)}
}

// InsertClient stores a new client.
func (s *Store) InsertClient(ctx context.Context, c oauth.Client) error {
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	_, err := s.oauth.InsertOne(ctx, clientDoc{ID: c.ID, SecretHash: c.SecretHash, Scopes: c.Scopes, CreatedAt: c.CreatedAt})
	if err != nil {
		return fmt.Errorf("store: insert client: %w", err)
	}
	return nil
}

// GetClient returns a client or oauth.ErrNotFound.
func (s *Store) GetClient(ctx context.Context, id string) (oauth.Client, error) {
	var d clientDoc
	err := s.oauth.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if isNoDocs(err) {
		return oauth.Client{}, oauth.ErrNotFound
	}
	if err != nil {
		return oauth.Client{}, fmt.Errorf("store: get client: %w", err)
	}
	return d.domain(), nil
}

// DeleteClient removes a client or returns oauth.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	res, err := s.oauth.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return fmt.Errorf("store: delete client: %w", err)
	}
	if res.DeletedCount == 0 {
		return oauth.ErrNotFound
	}
	return nil
}

// AllClients returns every stored client.
func (s *Store) AllClients(ctx context.Context) ([]oauth.Client, error) {
	docs, err := findAll[clientDoc](ctx, s.oauth, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("store: all clients: %w", err)
	}
	out := make([]oauth.Client, len(docs))
	for i, d := range docs {
		out[i] = d.domain()
	}
	return out, nil
}
