package natsconn_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestAssetsIdempotent creates every asset twice on one server: the second pass changes nothing
// and every asset has the replicas asked for.
func TestAssetsIdempotent(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := natsconn.Assets{JS: n.JS, Replicas: 1}
	for pass := range 2 {
		s, err := a.Stream(ctx)
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 1 {
			t.Fatalf("stream replicas %d, want 1", r)
		}
		for _, create := range []func(context.Context) (jetstream.KeyValue, error){
			a.Plans, a.Requests, a.PlanSnapshots, a.ResumeTokens, a.Clients,
			func(ctx context.Context) (jetstream.KeyValue, error) { return a.Identities(ctx, time.Hour) },
		} {
			kv, err := create(ctx)
			if err != nil {
				t.Fatalf("pass %d: %v", pass, err)
			}
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 1 {
				t.Fatalf("bucket %s replicas %d, want 1", kv.Bucket(), r)
			}
		}
	}
}

// TestAssetsRefuseReplicasWithoutCluster: NATS_REPLICAS=3 against a single server is an operator
// error that no retry fixes; it is reported at once, naming the asset.
func TestAssetsRefuseReplicasWithoutCluster(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := natsconn.Assets{JS: n.JS, Replicas: 3}.Stream(ctx)
	if err == nil || !strings.Contains(err.Error(), "stream") || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v, want a prompt error naming the stream", err, time.Since(start))
	}
}

// TestAssetsWaitForJetStream: with no server answering yet, creation retries until one does, as
// when the services start before a cluster has elected its leaders.
func TestAssetsWaitForJetStream(t *testing.T) {
	n := testkit.StartNATS(t)
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// An API prefix nobody serves: every request finds no responder, as before a cluster has a
	// meta leader; the operation switches to the right prefix after a few attempts.
	js, err := jetstream.NewWithAPIPrefix(nc, "$NOWHERE.API")
	if err != nil {
		t.Fatal(err)
	}
	good, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &switching{JetStream: js, after: 3, then: good}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := (natsconn.Assets{JS: flaky, Attempt: time.Second}).Plans(ctx); err != nil {
		t.Fatalf("Plans: %v", err)
	}
	if flaky.calls < 4 {
		t.Fatalf("%d attempts, want the failed ones retried", flaky.calls)
	}
}

// switching answers through JetStream for the first after calls, then through then.
type switching struct {
	jetstream.JetStream
	after, calls int
	then         jetstream.JetStream
}

func (s *switching) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	s.calls++
	if s.calls <= s.after {
		return s.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return s.then.CreateOrUpdateKeyValue(ctx, cfg)
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("wrapped: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{jetstream.ErrJetStreamNotEnabled, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{&jetstream.APIError{Code: 503}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}, false},
		{errors.New("other"), false},
		{context.Canceled, false},
	} {
		if got := natsconn.Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestAssetsUpdateInPlace: a bucket and a stream made by an earlier version are brought to today's
// settings at start. privacy_requests gains per-key TTLs (REQUEST_RETENTION), and the stream takes
// EVENT_RETENTION as its MaxAge, lowered or raised.
func TestAssetsUpdateInPlace(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old, err := n.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "privacy_requests", History: 1,
		Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Put(ctx, "pri_old", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	kv, err := natsconn.Assets{JS: n.JS, Replicas: 1}.Requests(ctx)
	if err != nil {
		t.Fatalf("Requests over a bucket without per-key TTLs: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config; !cfg.AllowMsgTTL || cfg.SubjectDeleteMarkerTTL <= 0 {
		t.Fatalf("privacy_requests: AllowMsgTTL %v, SubjectDeleteMarkerTTL %v; want per-key TTLs allowed", cfg.AllowMsgTTL, cfg.SubjectDeleteMarkerTTL)
	}
	if e, err := kv.Get(ctx, "pri_old"); err != nil || string(e.Value()) != `{}` {
		t.Fatalf("the record written before: %v, %v", e, err)
	}
	if _, err := kv.Create(ctx, "pri_ttl", []byte(`{}`), jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatalf("a write with a TTL: %v", err)
	}

	for _, maxAge := range []time.Duration{48 * time.Hour, 2 * time.Hour, 30 * 24 * time.Hour, 0} {
		s, err := natsconn.Assets{JS: n.JS, Replicas: 1, MaxAge: maxAge}.Stream(ctx)
		if err != nil {
			t.Fatalf("MaxAge %v: %v", maxAge, err)
		}
		want := maxAge
		if want == 0 {
			want = natsconn.StreamMaxAge
		}
		if got := s.CachedInfo().Config.MaxAge; got != want {
			t.Fatalf("stream MaxAge %v, want %v", got, want)
		}
	}
}
