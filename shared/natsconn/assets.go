package natsconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/rs/zerolog"
)

// Assets creates or updates, idempotently, the stream and the buckets the services share, each with
// Replicas replicas (NATS_REPLICAS). With more than one replica, the buckets it returns read from
// their stream's leader (LeaderReads). An asset that exists with another replica count is updated in
// place, so raising NATS_REPLICAS on a running cluster takes effect at the next start.
//
// Every call retries while JetStream cannot answer yet: right after a cluster starts, before its
// meta leader is elected (timeouts, no responders), or while it has no peers to place an asset on.
// It gives up only when ctx ends, or at once on an error that a retry cannot fix.
type Assets struct {
	JS       jetstream.JetStream
	Replicas int
	// MaxAge is how long the stream keeps its messages (EVENT_RETENTION; zero: StreamMaxAge).
	MaxAge time.Duration
	// Log receives one warning per retried attempt; zero value: none.
	Log zerolog.Logger
	// Attempt bounds one attempt (default 5 s, above a graceful leader change, below the
	// election timeout of a crashed leader, so that a retry goes to the new leader).
	Attempt time.Duration
}

// NewAssets returns the Assets of a service's settings: NATS_REPLICAS and EVENT_RETENTION.
func NewAssets(js jetstream.JetStream, c envconfig.Common, log zerolog.Logger) Assets {
	return Assets{JS: js, Replicas: c.NATSReplicas, MaxAge: c.EventRetention, Log: log}
}

// Stream creates or updates the PRIVACY_REQUESTS stream.
func (a Assets) Stream(ctx context.Context) (jetstream.Stream, error) {
	cfg := streamConfig()
	cfg.Replicas = a.replicas()
	if a.MaxAge > 0 {
		cfg.MaxAge = a.MaxAge
	}
	return retry(ctx, a, "stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return a.JS.CreateOrUpdateStream(ctx, cfg)
	})
}

// Plans creates or updates policy_webhooks.
func (a Assets) Plans(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, plansConfig())
}

// Requests creates or updates privacy_requests.
func (a Assets) Requests(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, requestsConfig())
}

// PlanSnapshots creates or updates plan_snapshots.
func (a Assets) PlanSnapshots(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, planSnapshotsConfig())
}

// ResumeTokens creates or updates resume_tokens.
func (a Assets) ResumeTokens(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, resumeTokensConfig())
}

// Errored creates or updates errored_requests.
func (a Assets) Errored(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, erroredConfig())
}

// Health creates or updates connection_health.
func (a Assets) Health(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, healthConfig())
}

// Clients creates or updates oauth_clients.
func (a Assets) Clients(ctx context.Context) (jetstream.KeyValue, error) {
	return a.bucket(ctx, clientsConfig())
}

// Identities creates or updates privacy_identities with ttl as the backstop MaxAge for a new bucket;
// see identitiesConfig for why an existing bucket's MaxAge is never lowered.
func (a Assets) Identities(ctx context.Context, ttl time.Duration) (jetstream.KeyValue, error) {
	maxAge, err := retry(ctx, a, "bucket "+identitiesBucketName, func(ctx context.Context) (time.Duration, error) {
		return identitiesMaxAge(ctx, a.JS, ttl)
	})
	if err != nil {
		return nil, err
	}
	return a.bucket(ctx, identitiesConfig(maxAge))
}

func (a Assets) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Storage = jetstream.FileStorage
	cfg.Replicas = a.replicas()
	kv, err := retry(ctx, a, "bucket "+cfg.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return a.JS.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, err
	}
	if a.replicas() == 1 {
		// One replica answers direct gets, and it is the leader: nothing to gain, and a leader
		// read costs the server about a tenth more CPU per request (docs/performance.md).
		return kv, nil
	}
	return LeaderReads(a.JS, kv), nil
}

func (a Assets) replicas() int { return max(a.Replicas, 1) }

// retry runs op with a per-attempt timeout until it succeeds, ctx ends, or it fails permanently.
func retry[T any](ctx context.Context, a Assets, what string, op func(context.Context) (T, error)) (T, error) {
	attempt := a.Attempt
	if attempt <= 0 {
		attempt = 5 * time.Second
	}
	wait := 100 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, attempt)
		v, err := op(actx)
		cancel()
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil || !Transient(err) {
			var zero T
			return zero, fmt.Errorf("natsconn: %s: %w", what, err)
		}
		a.Log.Warn().Err(err).Int("attempt", n).Str("asset", what).Msg("jetstream not ready, retrying")
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("natsconn: %s: %w (last attempt: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// Transient reports an error of a JetStream request that a retry may fix: the request timed out or
// found no responder (no meta or asset leader yet, a node going down; nats.go says "JetStream not
// enabled" for it), JetStream was temporarily
// unavailable (10008), or it had too few peers to place an asset (10005, right after a cluster
// starts). A replica count the server cannot have (10074, more than one on a single server) is not.
func Transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		// nats.go reports a request that found no responder as "JetStream not enabled" (10076):
		// no server in reach answers JetStream yet. On a server without JetStream this retries
		// for good, logging each attempt.
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, // JSClusterNotAvailErr: JetStream system temporarily unavailable
			10005: // JSClusterNoPeersErrF: no suitable peers for placement
			return true
		}
		return apiErr.ErrorCode == 0 && (apiErr.Code == 503 || apiErr.Code == 408)
	}
	return false
}
