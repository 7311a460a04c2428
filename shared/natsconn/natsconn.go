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

// StreamMaxAge is how long events stay in the PRIVACY_REQUESTS stream unless EVENT_RETENTION says
// otherwise.
const StreamMaxAge = envconfig.DefaultEventRetention

// Connect opens a connection named name with the common settings (NATS_URL may list every server
// of a cluster). It retries the first connect until ctx ends, and reconnects forever afterwards.
func Connect(ctx context.Context, c envconfig.Common, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		// The defaults (2 minutes, 2 outstanding) take minutes to notice a half-open connection
		// to a dead node; these notice it within about a minute and move to another server.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
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

// EnsureStream creates or updates the PRIVACY_REQUESTS stream with one replica (tests and tools;
// the services use Assets, which applies NATS_REPLICAS and rides over a cluster's start).
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	return Assets{JS: js}.Stream(ctx)
}

// PlansBucket creates or opens policy_webhooks with one replica (see EnsureStream).
func PlansBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Plans(ctx)
}

// RequestsBucket creates or opens privacy_requests with one replica (see EnsureStream).
func RequestsBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Requests(ctx)
}

// IdentitiesBucket creates or opens privacy_identities with one replica (see EnsureStream).
func IdentitiesBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Identities(ctx, ttl)
}

// PlanSnapshotsBucket creates or opens plan_snapshots with one replica (see EnsureStream).
func PlanSnapshotsBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.PlanSnapshots(ctx)
}

// ResumeTokensBucket creates or opens resume_tokens with one replica (see EnsureStream).
func ResumeTokensBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.ResumeTokens(ctx)
}

// ErroredBucket creates or opens errored_requests with one replica (see EnsureStream).
func ErroredBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Errored(ctx)
}

// HealthBucket creates or opens connection_health with one replica (see EnsureStream).
func HealthBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Health(ctx)
}

// ClientsBucket creates or opens oauth_clients with one replica (see EnsureStream).
func ClientsBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return Assets{JS: js}.Clients(ctx)
}

// The configurations of the stream and the buckets (SPEC §5), all in one place. Assets sets the
// storage and the replicas.

func streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              event.Stream,
		Description:       "privacy request events (SPEC §5)",
		Subjects:          []string{event.SubjectAll, event.SubjectConnectionAll},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		MaxAge:            StreamMaxAge,
		Duplicates:        2 * time.Minute,
		AllowMsgTTL:       true,
		AllowMsgSchedules: true,
	}
}

func plansConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketPlans, Description: "compiled webhook plan per policy", History: 1}
}

// requestsConfig: a finished request's record carries its own TTL (REQUEST_RETENTION, set by the
// executor on every write of a complete record), so the bucket allows per-key TTLs.
func requestsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketRequests, Description: "privacy request state (no personal data)", History: 1,
		LimitMarkerTTL: time.Minute}
}

// planSnapshotsConfig: a snapshot is written once and never changed or removed (a record kept for
// REQUEST_RETENTION may name it); there is one per distinct plan.
func planSnapshotsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketPlanSnapshots, Description: "plan snapshots of requests, by reference", History: 1}
}

// resumeTokensConfig: each entry carries its own TTL (the token's remaining lifetime), so the bucket
// allows per-key TTLs.
func resumeTokensConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketResumeTokens, Description: "used resume-token ids", History: 1,
		LimitMarkerTTL: time.Minute}
}

// erroredConfig: an entry lives while its request is in error (the executor removes it as the
// request finishes, and its sweep removes those of requests retried since).
func erroredConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketErrored, Description: "requests in error, for scoped retries (no personal data)", History: 1,
		LimitMarkerTTL: time.Minute}
}

// healthConfig: one circuit breaker per connection that has failed (SPEC §6.3); config removes a
// connection's entry when the connection is deleted.
func healthConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketHealth, Description: "circuit breaker per connection (no secrets)", History: 1}
}

func clientsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: event.BucketClients, Description: "OAuth client ids and scopes (no secrets)", History: 1}
}

const identitiesBucketName = event.BucketIdentities

// identitiesConfig: each entry carries its own TTL (IDENTITY_TTL when it was written, as a
// per-message TTL); the bucket's MaxAge is only a backstop (see identitiesMaxAge).
func identitiesConfig(maxAge time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: identitiesBucketName, Description: "sealed identity per privacy request",
		History: 1, TTL: maxAge, LimitMarkerTTL: time.Minute}
}

// identitiesMaxAge is ttl for a new bucket and never lowers an existing bucket's MaxAge, so
// lowering IDENTITY_TTL (or replicas set differently) never shortens identities stored before,
// whose records know when they expire.
func identitiesMaxAge(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (time.Duration, error) {
	kv, err := js.KeyValue(ctx, identitiesBucketName)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ttl, nil
	}
	if err != nil {
		return 0, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	return max(ttl, st.TTL()), nil
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

// StreamUsable returns a readiness check that the stream answers: its leader is elected and
// reachable (an Info request).
func StreamUsable(s jetstream.Stream) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := s.Info(ctx); err != nil {
			return fmt.Errorf("stream %s: %w", s.CachedInfo().Config.Name, err)
		}
		return nil
	}
}

// BucketUsable returns a readiness check that the bucket answers: its stream's leader is elected
// and reachable (a Status request).
func BucketUsable(kv jetstream.KeyValue) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := kv.Status(ctx); err != nil {
			return fmt.Errorf("bucket %s: %w", kv.Bucket(), err)
		}
		return nil
	}
}
