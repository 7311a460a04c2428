package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

// ReadStatusEvents reads every privacy.request.status.> message in the PRIVACY_REQUESTS stream,
// grouped by request id, in stream order; a read that meets a transient error (a cluster node
// just restarted: "no responders") starts again (retryRead).
func ReadStatusEvents(ctx context.Context, js jetstream.JetStream) (map[string][]StatusEvent, error) {
	return retryRead(ctx, func() (map[string][]StatusEvent, error) { return readStatusEvents(ctx, js) })
}

func readStatusEvents(ctx context.Context, js jetstream.JetStream) (map[string][]StatusEvent, error) {
	stream, err := js.Stream(ctx, event.Stream)
	if err != nil {
		return nil, fmt.Errorf("status events: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{event.SubjectStatusPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("status events: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("status events: %w", err)
	}
	want := info.NumPending
	out := map[string][]StatusEvent{}
	var got uint64
	for got < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("status events: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			got++
			var ev event.StatusChanged
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				return nil, fmt.Errorf("status event on %s: %w", msg.Subject(), err)
			}
			md, _ := msg.Metadata()
			var seq uint64
			if md != nil {
				seq = md.Sequence.Stream
			}
			out[ev.ID] = append(out[ev.ID], StatusEvent{Subject: msg.Subject(), Seq: seq, Event: ev})
		}
		if n == 0 {
			if err := batch.Error(); err != nil {
				return nil, fmt.Errorf("status events after %d of %d: %w", got, want, err)
			}
			return nil, fmt.Errorf("status events: only %d of %d arrived", got, want)
		}
	}
	return out, nil
}

// ReadStoredIdentities returns, by KV key (event.KVKey of a request id), how many entries
// privacy_identities holds of each request: its identity and its derived identities (keys
// <key>.patch.<name>); a transient error starts the read again (retryRead).
func ReadStoredIdentities(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	return retryRead(ctx, func() (map[string]int, error) { return readStoredIdentities(ctx, js) })
}

func readStoredIdentities(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	kv, err := js.KeyValue(ctx, event.BucketIdentities)
	if err != nil {
		return nil, fmt.Errorf("stored identities: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("stored identities: %w", err)
	}
	out := map[string]int{}
	for key := range lister.Keys() {
		if i := strings.Index(key, ".patch."); i >= 0 {
			key = key[:i]
		}
		out[key]++
	}
	return out, nil
}

// BreakerEvents counts the privacy.connection.unhealthy and .healthy events in the stream: how
// often the run's circuit breakers opened and closed.
func BreakerEvents(ctx context.Context, js jetstream.JetStream) (opened, closed uint64, err error) {
	stream, err := js.Stream(ctx, event.Stream)
	if err != nil {
		return 0, 0, fmt.Errorf("breaker events: %w", err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(event.SubjectConnectionAll))
	if err != nil {
		return 0, 0, fmt.Errorf("breaker events: %w", err)
	}
	return info.State.Subjects[event.SubjectConnectionUnhealthy], info.State.Subjects[event.SubjectConnectionHealthy], nil
}

// retryRead runs read until it succeeds, fails with an error that is not transient
// (natsconn.Transient), or has failed five times; it waits a second between attempts. The
// suite's evidence is read right after a cluster's nodes were killed and restarted: a fresh
// consumer may land where no server answers for a moment, which says nothing of the requests.
func retryRead[T any](ctx context.Context, read func() (T, error)) (T, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		v, err := read()
		if err == nil || attempt == 5 || !natsconn.Transient(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return zero, err
		case <-time.After(time.Second):
		}
	}
}
