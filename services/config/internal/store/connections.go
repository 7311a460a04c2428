package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

type connDoc struct {
	Key               string     `bson:"_id"`
	Name              string     `bson:"name"`
	Description       *string    `bson:"description"`
	Type              string     `bson:"connection_type"`
	Access            string     `bson:"access"`
	Disabled          bool       `bson:"disabled"`
	DisabledAt        *time.Time `bson:"disabled_at"`
	CreatedAt         time.Time  `bson:"created_at"`
	UpdatedAt         time.Time  `bson:"updated_at"`
	LastTestTimestamp *time.Time `bson:"last_test_timestamp"`
	LastTestSucceeded *bool      `bson:"last_test_succeeded"`
	Secrets           string     `bson:"secrets,omitempty"`
	SecretsURL        string     `bson:"secrets_url,omitempty"`
	// SigningKeys are the public keys of the secrets' Ed25519 signing keys (not secret); absent
	// or null without one.
	SigningKeys *signingKeysDoc `bson:"signing_public_keys,omitempty"`
	// UsedBy holds the claims of webhook edits on the connection (see claims.go); absent in
	// documents written before claims existed.
	UsedBy []string `bson:"used_by,omitempty"`
}

func (d connDoc) domain() connection.Connection {
	return connection.Connection{
		Key: d.Key, Name: d.Name, Description: d.Description, Type: connection.Type(d.Type), Access: d.Access,
		Disabled: d.Disabled, DisabledAt: utcPtr(d.DisabledAt), CreatedAt: utc(d.CreatedAt), UpdatedAt: utc(d.UpdatedAt),
		LastTestTimestamp: utcPtr(d.LastTestTimestamp), LastTestSucceeded: d.LastTestSucceeded,
		// A document written before DisplayURL kept only scheme and host may hold a path.
		Secrets: d.Secrets, SecretsURL: connection.DisplayURL(d.SecretsURL), SigningKeys: d.SigningKeys.domain(),
	}
}

// signingKeysDoc is the stored form of connection.SigningKeys.
type signingKeysDoc struct {
	Current       string     `bson:"current"`
	Previous      string     `bson:"previous,omitempty"`
	PreviousUntil *time.Time `bson:"previous_until,omitempty"`
}

// newSigningKeysDoc returns the document of k, nil for none.
func newSigningKeysDoc(k *connection.SigningKeys) *signingKeysDoc {
	if k == nil {
		return nil
	}
	d := &signingKeysDoc{Current: k.Current, Previous: k.Previous}
	if !k.PreviousUntil.IsZero() {
		until := k.PreviousUntil.UTC()
		d.PreviousUntil = &until
	}
	return d
}

// domain returns the public keys the document holds, nil for none.
func (d *signingKeysDoc) domain() *connection.SigningKeys {
	if d == nil {
		return nil
	}
	k := &connection.SigningKeys{Current: d.Current, Previous: d.Previous}
	if d.PreviousUntil != nil {
		k.PreviousUntil = utc(*d.PreviousUntil)
	}
	return k
}

// GetConnection returns the connection key or a *connection.NotFoundError.
func (s *Store) GetConnection(ctx context.Context, key string) (connection.Connection, error) {
	var d connDoc
	err := s.conns.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
	if isNoDocs(err) {
		return connection.Connection{}, &connection.NotFoundError{Key: key}
	}
	if err != nil {
		return connection.Connection{}, fmt.Errorf("store: get connection %q: %w", key, err)
	}
	return d.domain(), nil
}

// GetConnections returns the connections among keys that exist, by key.
func (s *Store) GetConnections(ctx context.Context, keys []string) (map[string]connection.Connection, error) {
	out := map[string]connection.Connection{}
	if len(keys) == 0 {
		return out, nil
	}
	docs, err := findAll[connDoc](ctx, s.conns, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}})
	if err != nil {
		return nil, fmt.Errorf("store: get connections: %w", err)
	}
	for _, d := range docs {
		out[d.Key] = d.domain()
	}
	return out, nil
}

// AllConnections returns every connection.
func (s *Store) AllConnections(ctx context.Context) ([]connection.Connection, error) {
	docs, err := findAll[connDoc](ctx, s.conns, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("store: all connections: %w", err)
	}
	out := make([]connection.Connection, len(docs))
	for i, d := range docs {
		out[i] = d.domain()
	}
	return out, nil
}

// ListConnections returns a page of the connections matching f, by name, and their total.
func (s *Store) ListConnections(ctx context.Context, f connection.Filter, skip, limit int) ([]connection.Connection, int, error) {
	filter := bson.D{}
	if len(f.Types) > 0 {
		types := make([]string, len(f.Types))
		for i, t := range f.Types {
			types[i] = string(t)
		}
		filter = append(filter, bson.E{Key: "connection_type", Value: bson.D{{Key: "$in", Value: types}}})
	}
	if f.Disabled != nil {
		filter = append(filter, bson.E{Key: "disabled", Value: *f.Disabled})
	}
	if f.Search != "" {
		re := bson.Regex{Pattern: regexp.QuoteMeta(f.Search), Options: "i"}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "_id", Value: re}}, bson.D{{Key: "name", Value: re}}, bson.D{{Key: "description", Value: re}},
		}})
	}
	total, err := s.conns.CountDocuments(ctx, filter)
	if err != nil {
		return nil, 0, fmt.Errorf("store: count connections: %w", err)
	}
	docs, err := findAll[connDoc](ctx, s.conns, filter,
		options.Find().SetSort(bson.D{{Key: "name", Value: 1}, {Key: "_id", Value: 1}}).SetSkip(int64(skip)).SetLimit(int64(limit)))
	if err != nil {
		return nil, 0, fmt.Errorf("store: list connections: %w", err)
	}
	out := make([]connection.Connection, len(docs))
	for i, d := range docs {
		out[i] = d.domain()
	}
	return out, int(total), nil
}

// maxUpsertAttempts bounds the retries of an upsert whose document keeps being created and
// deleted under it.
const maxUpsertAttempts = 20

// UpsertConnection creates or updates in.Key. A name that belongs to another connection is a
// *connection.KeyTakenError. Another type than https is written only while no webhook uses or
// claims the connection (else a *connection.InUseError). A connection created or deleted
// meanwhile (by another request or replica) is updated or created instead.
func (s *Store) UpsertConnection(ctx context.Context, in connection.Input, now time.Time) (connection.Connection, error) {
	taken := &connection.KeyTakenError{Key: in.Key}
	for range maxUpsertAttempts {
		n, err := s.conns.CountDocuments(ctx, bson.D{{Key: "name", Value: in.Name}, {Key: "_id", Value: bson.D{{Key: "$ne", Value: in.Key}}}})
		if err != nil {
			return connection.Connection{}, fmt.Errorf("store: check connection name: %w", err)
		}
		if n > 0 {
			return connection.Connection{}, taken
		}
		old, err := s.GetConnection(ctx, in.Key)
		switch {
		case isNotFound(err):
			d := connDoc{Key: in.Key, Name: in.Name, Description: in.Description, Type: string(in.Type), Access: in.Access,
				Disabled: in.Disabled, CreatedAt: now, UpdatedAt: now}
			if in.Disabled {
				d.DisabledAt = &now
			}
			_, err := s.conns.InsertOne(ctx, d)
			if mongo.IsDuplicateKeyError(err) {
				continue // created meanwhile, or the name was taken meanwhile: check again
			}
			if err != nil {
				return connection.Connection{}, fmt.Errorf("store: insert connection %q: %w", in.Key, err)
			}
			return d.domain(), nil
		case err != nil:
			return connection.Connection{}, err
		}
		var disabledAt *time.Time
		if in.Disabled {
			disabledAt = &now
			if old.Disabled && old.DisabledAt != nil {
				disabledAt = old.DisabledAt
			}
		}
		set := bson.D{{Key: "$set", Value: bson.D{
			{Key: "name", Value: in.Name}, {Key: "description", Value: in.Description},
			{Key: "connection_type", Value: string(in.Type)}, {Key: "access", Value: in.Access},
			{Key: "disabled", Value: in.Disabled}, {Key: "disabled_at", Value: disabledAt}, {Key: "updated_at", Value: now},
		}}}
		if in.Type == connection.HTTPS {
			var res *mongo.UpdateResult
			res, err = s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: in.Key}}, set)
			if err == nil && res.MatchedCount == 0 {
				continue // deleted meanwhile: create it
			}
		} else {
			err = s.whileUnused(ctx, in.Key, func(filter bson.D) (bool, error) {
				res, err := s.conns.UpdateOne(ctx, filter, set)
				return err == nil && res.MatchedCount == 1, err
			})
			if isNotFound(err) {
				continue
			}
			if errors.Is(err, connection.ErrInUse) {
				return connection.Connection{}, err
			}
		}
		if mongo.IsDuplicateKeyError(err) {
			return connection.Connection{}, taken
		}
		if err != nil {
			return connection.Connection{}, fmt.Errorf("store: update connection %q: %w", in.Key, err)
		}
		c := old
		c.Name, c.Description, c.Type, c.Access, c.Disabled, c.DisabledAt, c.UpdatedAt =
			in.Name, in.Description, in.Type, in.Access, in.Disabled, utcPtr(disabledAt), utc(now)
		return c, nil
	}
	return connection.Connection{}, fmt.Errorf("store: connection %q kept being created and deleted: gave up after %d attempts", in.Key, maxUpsertAttempts)
}

// DeleteConnection removes key, only while no webhook uses or claims it: a
// *connection.InUseError names the webhooks using it, a *connection.NotFoundError reports an
// unknown key.
func (s *Store) DeleteConnection(ctx context.Context, key string) error {
	return s.whileUnused(ctx, key, func(filter bson.D) (bool, error) {
		res, err := s.conns.DeleteOne(ctx, filter)
		if err != nil {
			return false, fmt.Errorf("store: delete connection %q: %w", key, err)
		}
		return res.DeletedCount == 1, nil
	})
}

// SetSecrets stores the sealed secrets of key with the public keys of their signing keys (null
// when nil) and, when test is set, the verification outcome, in one update.
func (s *Store) SetSecrets(ctx context.Context, key, sealed, displayURL string, keys *connection.SigningKeys,
	test *connection.TestResult) (connection.Connection, error) {
	set := bson.D{{Key: "secrets", Value: sealed}, {Key: "secrets_url", Value: displayURL},
		{Key: "signing_public_keys", Value: newSigningKeysDoc(keys)}}
	if test != nil {
		set = append(set, bson.E{Key: "last_test_timestamp", Value: test.At}, bson.E{Key: "last_test_succeeded", Value: test.Succeeded})
	}
	res, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: key}}, bson.D{{Key: "$set", Value: set}})
	if err != nil {
		return connection.Connection{}, fmt.Errorf("store: set secrets of %q: %w", key, err)
	}
	if res.MatchedCount == 0 {
		return connection.Connection{}, &connection.NotFoundError{Key: key}
	}
	return s.GetConnection(ctx, key)
}

// scrubSecretURLs rewrites the secrets_url of documents written before it kept only the scheme and
// host of the URL; a value changed meanwhile is left alone.
func (s *Store) scrubSecretURLs(ctx context.Context) error {
	docs, err := findAll[connDoc](ctx, s.conns, bson.D{{Key: "secrets_url", Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil {
		return fmt.Errorf("store: scrub secret urls: %w", err)
	}
	for _, d := range docs {
		if clean := connection.DisplayURL(d.SecretsURL); clean != d.SecretsURL {
			if _, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: d.Key}, {Key: "secrets_url", Value: d.SecretsURL}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "secrets_url", Value: clean}}}}); err != nil {
				return fmt.Errorf("store: scrub secret url of %q: %w", d.Key, err)
			}
		}
	}
	return nil
}

// ResealSecrets replaces the sealed secrets of key when they still equal old.
func (s *Store) ResealSecrets(ctx context.Context, key, old, sealed string) error {
	_, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: key}, {Key: "secrets", Value: old}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "secrets", Value: sealed}}}})
	if err != nil {
		return fmt.Errorf("store: reseal secrets of %q: %w", key, err)
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, connection.ErrNotFound) }
