package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

// opTimeout bounds each NATS operation of the kit.
const opTimeout = 10 * time.Second

// NATS is an embedded nats-server with JetStream, a client connected to it and the
// PRIVACY_REQUESTS stream. Its methods are called from the test's goroutine.
type NATS struct {
	// NC is the kit's client. It reconnects by itself after Restart.
	NC *nats.Conn
	// JS is JetStream over NC.
	JS  jetstream.JetStream
	srv *devstack.NATS
}

// StartNATS starts nats-server with JetStream through devstack on a random loopback port with its
// store in t.TempDir(), connects a client and ensures the stream through natsconn. The client and
// the server stop when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	srv, err := devstack.StartNATS(t.TempDir(), "127.0.0.1", -1)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	n := &NATS{srv: srv}
	// Registered first, so it runs last: the client closes before the server goes.
	t.Cleanup(func() { n.srv.Shutdown() })
	n.NC, err = nats.Connect(srv.URL(), nats.Name("testkit"), nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("testkit: connect %s: %v", srv.URL(), err)
	}
	t.Cleanup(n.NC.Close)
	if n.JS, err = jetstream.New(n.NC); err != nil {
		t.Fatalf("testkit: jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := natsconn.EnsureStream(ctx, n.JS); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return n
}

// URL returns the client URL of the server; it stays the same across Restart.
func (n *NATS) URL() string { return n.srv.URL() }

// Shutdown stops the server, as a crash of NATS would; the client keeps trying to reconnect.
func (n *NATS) Shutdown() { n.srv.Shutdown() }

// Restart stops the server and starts a new one on the same port and store, as a restart of the
// NATS server would, and waits until the kit's client is connected again.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	before := n.NC.Stats().Reconnects
	srv, err := n.srv.Restart()
	if err != nil {
		t.Fatalf("testkit: restart: %v", err)
	}
	n.srv = srv
	Eventually(t, opTimeout, "the testkit client to reconnect after the restart", func() bool {
		return n.NC.Stats().Reconnects > before && n.NC.IsConnected()
	})
}

// Bucket opens the KV bucket name (one of the event.Bucket* names) through natsconn, creating it
// when absent. privacy_identities, whose TTL is the executor's setting, is opened as it is when it
// exists and created without a TTL otherwise.
func (n *NATS) Bucket(t testing.TB, name string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var kv jetstream.KeyValue
	var err error
	switch name {
	case event.BucketRequests:
		kv, err = natsconn.RequestsBucket(ctx, n.JS)
	case event.BucketPlans:
		kv, err = natsconn.PlansBucket(ctx, n.JS)
	case event.BucketPlanSnapshots:
		kv, err = natsconn.PlanSnapshotsBucket(ctx, n.JS)
	case event.BucketResumeTokens:
		kv, err = natsconn.ResumeTokensBucket(ctx, n.JS)
	case event.BucketClients:
		kv, err = natsconn.ClientsBucket(ctx, n.JS)
	case event.BucketErrored:
		kv, err = natsconn.ErroredBucket(ctx, n.JS)
	case event.BucketHealth:
		kv, err = natsconn.HealthBucket(ctx, n.JS)
	case event.BucketIdentities:
		kv, err = n.JS.KeyValue(ctx, name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = natsconn.IdentitiesBucket(ctx, n.JS, 0)
		}
	default:
		t.Fatalf("testkit: no bucket %q in natsconn", name)
	}
	if err != nil {
		t.Fatalf("testkit: bucket %s: %v", name, err)
	}
	return kv
}

// Msgs returns, in stream order, every message the stream holds on subjects matching filter
// ("" for all of them).
func (n *NATS) Msgs(t testing.TB, filter string) []jetstream.Msg {
	t.Helper()
	if filter == "" {
		filter = event.SubjectAll
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s, err := n.JS.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatalf("testkit: stream %s: %v", event.Stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatalf("testkit: stream %s info for %s: %v", event.Stream, filter, err)
	}
	want := 0
	for _, c := range info.State.Subjects {
		want += int(c)
	}
	if want == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatalf("testkit: ordered consumer on %s: %v", filter, err)
	}
	out := make([]jetstream.Msg, 0, want)
	for len(out) < want && ctx.Err() == nil {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("testkit: fetch %s: %v", filter, err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
	}
	if len(out) < want {
		t.Fatalf("testkit: read %d messages on %s, the stream holds %d", len(out), filter, want)
	}
	return out
}

// StatusEvents returns the status events the stream holds on subjects matching filter, in stream
// order; a message that is not a status event (on another subject, or undecodable) fails the test.
func (n *NATS) StatusEvents(t testing.TB, filter string) []event.StatusChanged {
	t.Helper()
	msgs := n.Msgs(t, filter)
	out := make([]event.StatusChanged, 0, len(msgs))
	for _, m := range msgs {
		if !strings.HasPrefix(m.Subject(), event.SubjectStatusPrefix) {
			t.Fatalf("testkit: %s: not a status event", m.Subject())
		}
		var ev event.StatusChanged
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("testkit: %s: not a status event: %v: %s", m.Subject(), err, m.Data())
		}
		out = append(out, ev)
	}
	return out
}
