package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/callback/internal/oauthclients"
	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

const (
	testAppKey   = "0123456789abcdef0123456789abcdef"
	rootClientID = "root-client"
)

// fixture is the callback router over a real embedded NATS, with the buckets the executor and the
// config service write, and sealers keyed as the other services key them.
type fixture struct {
	t        testing.TB
	nats     *testkit.NATS
	js       jetstream.JetStream
	stream   jetstream.Stream
	requests jetstream.KeyValue
	// snapshots holds the plans the records name (plan_snapshots).
	snapshots *plansnapshots.Store
	claims    jetstream.KeyValue
	clients   jetstream.KeyValue
	errored   jetstream.KeyValue
	resume    *token.Sealer // the executor's reply-to-token sealer
	access    *token.Sealer // the config service's access-token sealer
	router    *mux.Router
	// svc is the resume service behind router.
	svc      *resume.Service
	registry *prometheus.Registry
	// list is the request list's index, following requests.
	list *requestlist.Index
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with the resume service publishing through publisher(js) instead
// of js itself (nil: js), so that a test can inject faults.
func newFixtureWith(t testing.TB, publisher func(jetstream.JetStream) resume.Publisher) *fixture {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JS
	f := &fixture{t: t, nats: n, js: js, registry: prometheus.NewRegistry()}
	var err error
	if f.stream, err = js.Stream(context.Background(), event.Stream); err != nil {
		t.Fatal(err)
	}
	f.requests = n.Bucket(t, event.BucketRequests)
	f.claims = n.Bucket(t, event.BucketResumeTokens)
	f.clients = n.Bucket(t, event.BucketClients)
	f.errored = n.Bucket(t, event.BucketErrored)
	f.resume = sealer(t, secret.PurposeResumeTokens)
	f.access = sealer(t, secret.PurposeAccessTokens)
	var pub resume.Publisher = js
	if publisher != nil {
		pub = publisher(js)
	}
	f.snapshots = plansnapshots.New(n.Bucket(t, event.BucketPlanSnapshots))
	f.svc = resume.New(resume.Config{Requests: f.requests, Snapshots: f.snapshots, Claims: f.claims, Errored: f.errored, Publisher: pub,
		Tokens: []*token.Sealer{f.resume}})
	f.list = requestlist.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go requestlist.Follow(ctx, f.requests, f.nats.NC, f.list, zerolog.Nop())
	f.router = NewRouter(Deps{
		Log:      zerolog.Nop(),
		Registry: f.registry,
		Resume:   f.svc,
		List:     f.list,
		Auth:     api.NewAuthorizer(f.access, oauthclients.New(f.clients, rootClientID)),
		Ready:    map[string]api.Check{},
		OpenAPI:  []byte(`{}`),
	})
	return f
}

func sealer(t testing.TB, purpose string) *token.Sealer {
	t.Helper()
	key, err := secret.DeriveKey(testAppKey, purpose)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// pausedRequest is a request paused at its given pause by the two-way pre-webhook "wh-verify", as
// the executor records it.
func pausedRequest(id string, pause int) event.Request {
	started, paused := t0.Add(time.Second), t0.Add(3*time.Second)
	expires := paused.Add(60 * time.Hour)
	return event.Request{
		ID: id, PolicyKey: "my_policy", ExternalID: "ext-" + id,
		Status: event.StatusPaused, Step: event.StepPreWebhooks,
		Plan: event.Plan{PolicyKey: "my_policy", Version: 3, Pre: []event.PlanWebhook{
			{ID: "wh-wake", Key: "wake_up", Name: "Wake up", Direction: event.OneWay, Order: 0, ConnectionKey: "c1", Secrets: "ph1.abcd.SEALEDSECRET"},
			{ID: "wh-verify", Key: "verify", Name: "Verify", Direction: event.TwoWay, Order: 1, ConnectionKey: "c2", Secrets: "ph1.abcd.SEALEDSECRET"},
		}},
		Next: 2, Pause: pause, PausedWebhookID: "wh-verify", PauseExpiresAt: &expires,
		CreatedAt: t0, UpdatedAt: paused, StartedProcessingAt: &started, PausedAt: &paused,
		Timeline: []event.TimelineEntry{
			{Seq: 1, Status: event.StatusPending, At: t0, Step: event.StepPreWebhooks},
			{Seq: 2, Status: event.StatusInProcessing, Previous: ptr(event.StatusPending), At: started, Step: event.StepPreWebhooks},
			{Seq: 3, Status: event.StatusPaused, Previous: ptr(event.StatusInProcessing), At: paused, Step: event.StepPreWebhooks, WebhookKey: "verify"},
		},
		Webhooks: []event.WebhookRecord{
			{ID: "wh-wake", Key: "wake_up", CallbackType: event.Pre, Direction: event.OneWay, Order: 0, Outcome: event.OutcomeSucceeded,
				Attempts: []event.Attempt{{At: t0.Add(2 * time.Second), WebhookID: "msg_1", Status: 200, LatencyMS: 12.5}}},
			{ID: "wh-verify", Key: "verify", CallbackType: event.Pre, Direction: event.TwoWay, Order: 1, Outcome: event.OutcomeHalted,
				Interrupted: 1, Attempts: []event.Attempt{
					{At: t0.Add(2 * time.Second), WebhookID: "msg_2", Error: "connection reset", LatencyMS: 3},
					{At: t0.Add(3 * time.Second), WebhookID: "msg_2", Status: 200, LatencyMS: 8},
				}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// awaitingRequest is the request of pausedRequest one moment earlier: in processing, its call of
// "wh-verify" in flight and not answered yet. pause is the number of the last pause, so the call's
// reply-to-token carries pause+1.
func awaitingRequest(id string, pause int) event.Request {
	req := pausedRequest(id, pause)
	req.Status, req.Next, req.PausedWebhookID, req.PauseExpiresAt, req.PausedAt = event.StatusInProcessing, 1, "", nil, nil
	req.Webhooks[1].Outcome, req.Webhooks[1].Attempts = event.OutcomePending, nil
	return req
}

// putRequest writes req into privacy_requests as the executor does (under event.KVKey, its plan
// stored in plan_snapshots and named by reference) and returns its revision.
func (f *fixture) putRequest(req event.Request) uint64 {
	f.t.Helper()
	planJSON, err := json.Marshal(req.Plan)
	if err != nil {
		f.t.Fatal(err)
	}
	if req.PlanRef, err = f.snapshots.Put(context.Background(), planJSON); err != nil {
		f.t.Fatal(err)
	}
	req.Plan = event.Plan{}
	return f.putStored(req)
}

// putStored writes req into privacy_requests as it is (a plan inline, as the executor wrote records
// before plan_snapshots) and returns its revision.
func (f *fixture) putStored(req event.Request) uint64 {
	f.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		f.t.Fatal(err)
	}
	rev, err := f.requests.Put(context.Background(), event.KVKey(req.ID), b)
	if err != nil {
		f.t.Fatal(err)
	}
	return rev
}

func (f *fixture) revision(id string) uint64 {
	f.t.Helper()
	e, err := f.requests.Get(context.Background(), event.KVKey(id))
	if err != nil {
		f.t.Fatal(err)
	}
	return e.Revision()
}

// replyToken mints a reply-to-token as the executor does.
func (f *fixture) replyToken(id, webhookID string, pause int) (raw, jti string) {
	f.t.Helper()
	return sealResume(f.t, f.resume, token.ResumeClaims{RequestID: id, WebhookID: webhookID, Pause: pause, Scopes: []string{scope.PrivacyRequestResume}}, 60*time.Hour)
}

func sealResume(t testing.TB, s *token.Sealer, c token.ResumeClaims, ttl time.Duration) (raw, jti string) {
	t.Helper()
	raw, err := s.Seal(&c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return raw, c.ID
}

// accessToken mints an OAuth access token as the config service does.
func (f *fixture) accessToken(clientID string, scopes ...string) string {
	f.t.Helper()
	raw, err := f.access.Seal(&token.AccessClaims{ClientID: clientID, Scopes: scopes}, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

// addClient mirrors a client into oauth_clients as the config service does.
func (f *fixture) addClient(clientID string) {
	f.t.Helper()
	if _, err := f.clients.Put(context.Background(), clientID, []byte(`{"scopes":[]}`)); err != nil {
		f.t.Fatal(err)
	}
}

// do sends a request through the router; auth is the whole Authorization value ("" for none).
func (f *fixture) do(method, path, auth, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, r)
	return w
}

// count returns how many messages the stream holds on subject.
func (f *fixture) count(subject string) uint64 {
	f.t.Helper()
	info, err := f.stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// claimCount returns how many messages the resume_tokens bucket holds.
func (f *fixture) claimCount() uint64 {
	f.t.Helper()
	st, err := f.claims.Status(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return st.Values()
}

// events returns, in stream order, every message published on subject.
func (f *fixture) events(subject string) []jetstream.Msg {
	f.t.Helper()
	return f.nats.Msgs(f.t, subject)
}

// resumesOf returns the resume events on the stream that carry token jti.
func (f *fixture) resumesOf(jti string) []event.Resume {
	f.t.Helper()
	var out []event.Resume
	for _, m := range f.events(event.SubjectResume) {
		var r event.Resume
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			f.t.Fatal(err)
		}
		if r.TokenID == jti {
			out = append(out, r)
		}
	}
	return out
}

func detail(t testing.TB, w *httptest.ResponseRecorder) any {
	t.Helper()
	var body struct {
		Detail any `json:"detail"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return body.Detail
}

func bearer(raw string) string { return "Bearer " + raw }
