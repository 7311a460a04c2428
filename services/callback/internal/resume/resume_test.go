package resume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

type env struct {
	js       jetstream.JetStream
	requests jetstream.KeyValue
	claims   jetstream.KeyValue
}

func newEnv(t *testing.T) env {
	t.Helper()
	n := testkit.StartNATS(t)
	return env{js: n.JS, requests: n.Bucket(t, event.BucketRequests), claims: n.Bucket(t, event.BucketResumeTokens)}
}

func newSealer(t *testing.T, appKey string) *token.Sealer {
	t.Helper()
	key, err := secret.DeriveKey(appKey, secret.PurposeResumeTokens)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e env) put(t *testing.T, req event.Request) {
	t.Helper()
	b, _ := json.Marshal(req)
	if _, err := e.requests.Put(context.Background(), req.ID, b); err != nil {
		t.Fatal(err)
	}
}

// TestPreviousKeyTokens: a token issued before APP_ENCRYPTION_KEY was rotated still resumes while
// the old key is configured as the previous one.
func TestPreviousKeyTokens(t *testing.T) {
	e := newEnv(t)
	oldKey, newKey := "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	e.put(t, event.Request{ID: "pri_rot", Status: event.StatusPaused, Pause: 1, PausedWebhookID: "wh"})
	raw, err := newSealer(t, oldKey).Seal(&token.ResumeClaims{RequestID: "pri_rot", WebhookID: "wh", Pause: 1,
		Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	current := New(Config{Requests: e.requests, Claims: e.claims, Publisher: e.js, Tokens: []*token.Sealer{newSealer(t, newKey)}})
	if _, err := current.Check(ctx, "pri_rot", raw); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("without the previous key: err = %v, want ErrNotAuthorized", err)
	}
	rotated := New(Config{Requests: e.requests, Claims: e.claims, Publisher: e.js,
		Tokens: []*token.Sealer{newSealer(t, newKey), newSealer(t, oldKey)}})
	ticket, err := rotated.Check(ctx, "pri_rot", raw)
	if err != nil {
		t.Fatalf("with the previous key: err = %v, want nil", err)
	}
	if _, err := rotated.Resume(ctx, ticket, nil); err != nil {
		t.Fatalf("Resume = %v, want nil", err)
	}
}

// TestClaimExpiresWithToken checks that the claim of either kind of reply-to-token carries a TTL
// covering the token's remaining life, and names the request, the webhook and the pause or run.
func TestClaimExpiresWithToken(t *testing.T) {
	e := newEnv(t)
	sealer := newSealer(t, "0123456789abcdef0123456789abcdef")
	svc := New(Config{Requests: e.requests, Claims: e.claims, Publisher: e.js, Tokens: []*token.Sealer{sealer}})
	ctx := context.Background()
	due := time.Now().Add(2 * time.Hour)
	e.put(t, event.Request{ID: "pri_ttl", Status: event.StatusPaused, Pause: 3, PausedWebhookID: "wh"})
	e.put(t, event.Request{ID: "pri_ttl_pa", Status: event.StatusAwaitingPreApproval, Step: event.StepPreApproval, Run: 2,
		ApprovalDue: &due, Plan: event.Plan{PreApproval: &event.PreApproval{Webhooks: []event.PlanWebhook{{ID: "wh-pa", Key: "pa"}}}}})

	tests := []struct {
		name string
		// seal mints the token, to expire in two hours.
		seal func() (raw, jti string, err error)
		// use checks the token and uses it.
		use  func(raw string) (View, error)
		want claim
	}{
		{"resume", func() (string, string, error) {
			c := token.ResumeClaims{RequestID: "pri_ttl", WebhookID: "wh", Pause: 3, Scopes: []string{scope.PrivacyRequestResume}}
			raw, err := sealer.Seal(&c, 2*time.Hour)
			return raw, c.ID, err
		},
			func(raw string) (View, error) {
				ticket, err := svc.Check(ctx, "pri_ttl", raw)
				if err != nil {
					return View{}, err
				}
				return svc.Resume(ctx, ticket, nil)
			}, claim{RequestID: "pri_ttl", WebhookID: "wh", Pause: 3}},
		{"pre-approval", func() (string, string, error) {
			c := token.PreApprovalClaims{Claims: token.Claims{ID: "msg_ttl_pa"}, RequestID: "pri_ttl_pa", WebhookID: "wh-pa", Run: 2,
				Scopes: []string{scope.PrivacyRequestReview}}
			raw, err := sealer.Seal(&c, 2*time.Hour)
			return raw, c.ID, err
		},
			func(raw string) (View, error) {
				ticket, err := svc.CheckPreApproval(ctx, "pri_ttl_pa", raw)
				if err != nil {
					return View{}, err
				}
				return svc.Reply(ctx, ticket, true)
			}, claim{RequestID: "pri_ttl_pa", WebhookID: "wh-pa", Run: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, jti, err := tt.seal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tt.use(raw); err != nil {
				t.Fatal(err)
			}

			stream, err := e.js.Stream(ctx, "KV_"+event.BucketResumeTokens)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+event.BucketResumeTokens+"."+jti)
			if err != nil {
				t.Fatal(err)
			}
			ttl, err := time.ParseDuration(msg.Header.Get("Nats-TTL"))
			if err != nil {
				secs, serr := strconv.Atoi(msg.Header.Get("Nats-TTL"))
				if serr != nil {
					t.Fatalf("Nats-TTL = %q: %v", msg.Header.Get("Nats-TTL"), err)
				}
				ttl = time.Duration(secs) * time.Second
			}
			if ttl < 2*time.Hour || ttl > 2*time.Hour+2*time.Minute {
				t.Errorf("claim TTL = %v, want the token's remaining 2h plus a little slack", ttl)
			}
			var got claim
			if err := json.Unmarshal(msg.Data, &got); err != nil {
				t.Fatal(err)
			}
			got.ClaimedAt = time.Time{}
			if got != tt.want {
				t.Errorf("claim = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestResumeView: a resume answers the request as it is being resumed.
func TestResumeView(t *testing.T) {
	e := newEnv(t)
	sealer := newSealer(t, "0123456789abcdef0123456789abcdef")
	e.put(t, event.Request{ID: "pri_view", Status: event.StatusPaused, Pause: 1, PausedWebhookID: "wh"})
	raw, err := sealer.Seal(&token.ResumeClaims{RequestID: "pri_view", WebhookID: "wh", Pause: 1, Scopes: []string{scope.PrivacyRequestResume}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{Requests: e.requests, Claims: e.claims, Publisher: e.js, Tokens: []*token.Sealer{sealer}})
	ctx := context.Background()
	ticket, err := svc.Check(ctx, "pri_view", raw)
	if err != nil {
		t.Fatal(err)
	}
	view, err := svc.Resume(ctx, ticket, nil)
	if err != nil {
		t.Fatal(err)
	}
	if view.Status != event.StatusInProcessing || view.ResumeEndpoint != nil {
		t.Errorf("view status %s endpoint %v, want in_processing and none", view.Status, view.ResumeEndpoint)
	}
}

// failingCreate is a resume_tokens bucket whose Create fails with err.
type failingCreate struct {
	jetstream.KeyValue
	err error
}

func (f failingCreate) Create(context.Context, string, []byte, ...jetstream.KVCreateOpt) (uint64, error) {
	return 0, f.err
}

// TestResumeClaimFailsAfterPublish: when the resume is published but the claim cannot be written
// (for another reason than a concurrent claim), the resume stands: no error, the event is on the
// stream, and a warning is logged without the token.
func TestResumeClaimFailsAfterPublish(t *testing.T) {
	e := newEnv(t)
	sealer := newSealer(t, "0123456789abcdef0123456789abcdef")
	e.put(t, event.Request{ID: "pri_noclaim", Status: event.StatusPaused, Pause: 2, PausedWebhookID: "wh"})
	c := token.ResumeClaims{RequestID: "pri_noclaim", WebhookID: "wh", Pause: 2, Scopes: []string{scope.PrivacyRequestResume}}
	raw, err := sealer.Seal(&c, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{Requests: e.requests, Claims: failingCreate{KeyValue: e.claims, err: errors.New("injected: kv unavailable")},
		Publisher: e.js, Tokens: []*token.Sealer{sealer}})
	var logs bytes.Buffer
	ctx := zerolog.New(&logs).WithContext(context.Background())
	ticket, err := svc.Check(ctx, "pri_noclaim", raw)
	if err != nil {
		t.Fatal(err)
	}
	view, err := svc.Resume(ctx, ticket, nil)
	if err != nil || view.Status != event.StatusInProcessing {
		t.Fatalf("Resume = %s, %v; want in_processing, nil", view.Status, err)
	}

	stream, err := e.js.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, event.SubjectResume)
	if err != nil {
		t.Fatalf("resume event: %v, want one on %s", err, event.SubjectResume)
	}
	var got event.Resume
	if err := json.Unmarshal(msg.Data, &got); err != nil || got.RequestID != "pri_noclaim" || got.TokenID != c.ID || got.Pause != 2 {
		t.Errorf("event = %+v (%v), want request pri_noclaim, jti %s, pause 2", got, err, c.ID)
	}
	if _, err := e.claims.Get(ctx, c.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("claim Get error = %v, want ErrKeyNotFound", err)
	}
	var warned bool
	for line := range strings.Lines(logs.String()) {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err == nil && entry["level"] == "warn" && entry["privacy_request_id"] == "pri_noclaim" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming the request in the logs:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), raw) {
		t.Errorf("the logs carry the token")
	}
}

func TestClaimTTL(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := &Service{now: func() time.Time { return now }}
	tests := []struct {
		exp  int64
		want time.Duration
	}{
		{now.Unix() + 3600, time.Hour + time.Second + claimSlack},
		{now.Unix(), time.Second + claimSlack},
		{now.Unix() - 7200, time.Second},
	}
	for _, tt := range tests {
		if got := s.claimTTL(tt.exp); got != tt.want {
			t.Errorf("claimTTL(now%+ds) = %v, want %v", tt.exp-now.Unix(), got, tt.want)
		}
	}
}
