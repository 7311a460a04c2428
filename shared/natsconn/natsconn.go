// Package natsconn opens the NATS connection of a service and creates, idempotently, the stream and
// KV buckets the services share. All topology is declared here so that every service agrees on it.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

// StreamMaxAge is how long events stay in the PRIVACY_REQUESTS stream.
const StreamMaxAge = 14 * 24 * time.Hour

// Connect opens a connection named name with the common settings. It retries the first connect
// until ctx ends, and reconnects forever afterwards.
func Connect(ctx context.Context, c envconfig.Common, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info().Msg("nats reconnected") }),
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.NATSCAFile))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsconn: connect %s: %w", c.NATSURL, err)
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("natsconn: connect %s: %w", c.NATSURL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nc, nil
}

// EnsureStream creates or updates the PRIVACY_REQUESTS stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              event.Stream,
		Description:       "privacy request events (SPEC §5)",
		Subjects:          []string{event.SubjectAll},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		MaxAge:            StreamMaxAge,
		Duplicates:        2 * time.Minute,
		AllowMsgTTL:       true,
		AllowMsgSchedules: true,
	})
	if err != nil {
		return nil, fmt.Errorf("natsconn: stream %s: %w", event.Stream, err)
	}
	return s, nil
}

// PlansBucket creates or opens policy_webhooks.
func PlansBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: event.BucketPlans, Description: "compiled webhook plan per policy", History: 1,
	})
}

// RequestsBucket creates or opens privacy_requests.
func RequestsBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: event.BucketRequests, Description: "privacy request state (no personal data)", History: 1,
	})
}

// IdentitiesBucket creates or opens privacy_identities. Each entry carries its own TTL (IDENTITY_TTL
// when it was written, as a per-message TTL); the bucket's MaxAge is only a backstop: it is ttl for
// a new bucket and never lowered, so lowering IDENTITY_TTL (or replicas set differently) never
// shortens identities stored before, whose records know when they expire.
func IdentitiesBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	maxAge := ttl
	if kv, err := js.KeyValue(ctx, event.BucketIdentities); err == nil {
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("natsconn: bucket %s: %w", event.BucketIdentities, err)
		}
		maxAge = max(maxAge, st.TTL())
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("natsconn: bucket %s: %w", event.BucketIdentities, err)
	}
	return bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: event.BucketIdentities, Description: "sealed identity per privacy request", History: 1, TTL: maxAge,
		LimitMarkerTTL: time.Minute,
	})
}

// ResumeTokensBucket creates or opens resume_tokens; each entry carries its own TTL (the token's
// remaining lifetime), so the bucket allows per-key TTLs.
func ResumeTokensBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: event.BucketResumeTokens, Description: "used resume-token ids", History: 1,
		LimitMarkerTTL: time.Minute,
	})
}

// ClientsBucket creates or opens oauth_clients.
func ClientsBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return bucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: event.BucketClients, Description: "OAuth client ids and scopes (no secrets)", History: 1,
	})
}

func bucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Storage = jetstream.FileStorage
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsconn: bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Ready reports whether the connection is up and JetStream answers.
func Ready(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	if !nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("nats: jetstream: %w", err)
	}
	return nil
}
