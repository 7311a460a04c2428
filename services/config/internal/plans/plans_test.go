package plans_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/plans"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// pausing is the store as a replica's Republish sees it: its AllPolicies returns what it read,
// but only after telling read and waiting for resume, so that another replica can change the store
// and the bucket in between.
type pausing struct {
	*store.Store
	read   chan struct{}
	resume chan struct{}
}

func (p *pausing) AllPolicies(ctx context.Context) ([]policy.Policy, error) {
	all, err := p.Store.AllPolicies(ctx)
	close(p.read)
	select {
	case <-p.resume:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return all, err
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	uri string
	kv  jetstream.KeyValue
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	uri := ferret.ForTest(t)
	st, err := store.Open(ctx, uri, "planstest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	kv := testkit.StartNATS(t).Bucket(t, event.BucketPlans)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := st.UpsertConnection(ctx, connection.Input{Key: "c", Name: "C", Type: connection.HTTPS, Access: "read"}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetSecrets(ctx, "c", "sealed-c", "https://hooks.example", nil, nil); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, st: st, uri: uri, kv: kv}
}

// policy creates key (or updates it) and gives it the pre-execution webhooks hooks.
func (f *fixture) policy(key string, hooks ...string) policy.Policy {
	f.t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	p, err := f.st.UpsertPolicy(f.ctx, policy.Input{Key: key, Name: "Policy " + key}, now)
	if err != nil {
		f.t.Fatal(err)
	}
	p.Pre = nil
	for _, h := range hooks {
		p.Pre = append(p.Pre, policy.Webhook{ID: "id-" + h, Key: h, Name: h, Direction: event.OneWay, ConnectionKey: "c"})
	}
	saved, err := f.st.SaveWebhooks(f.ctx, p, now)
	if err != nil {
		f.t.Fatal(err)
	}
	return saved
}

// plan reads the plan of key from the bucket; ok is false when there is none.
func (f *fixture) plan(key string) (event.Plan, bool) {
	f.t.Helper()
	e, err := f.kv.Get(f.ctx, event.KVKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return event.Plan{}, false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var p event.Plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		f.t.Fatal(err)
	}
	return p, true
}

// TestRepublishRacingAnotherReplica (D7): replica A's periodic Republish reads the store, then
// replica B edits p, creates q and deletes r, publishing each; when A goes on it must neither put
// its older p back, nor delete q's plan, nor put r's plan back.
func TestRepublishRacingAnotherReplica(t *testing.T) {
	f := newFixture(t)
	log := zerolog.Nop()
	f.policy("p", "one")
	f.policy("r", "one")
	b := plans.NewPublisher(f.st, f.kv, false, log)
	if err := b.PublishPolicies(f.ctx, "p", "r"); err != nil {
		t.Fatal(err)
	}

	src := &pausing{Store: f.st, read: make(chan struct{}), resume: make(chan struct{})}
	a := plans.NewPublisher(src, f.kv, false, log)
	done := make(chan error, 1)
	go func() { done <- a.Republish(f.ctx) }()
	select {
	case <-src.read:
	case <-time.After(30 * time.Second):
		t.Fatal("replica A's Republish did not read the store")
	}

	edited := f.policy("p", "one", "two")
	if err := b.PublishPolicies(f.ctx, "p"); err != nil {
		t.Fatal(err)
	}
	created := f.policy("q", "one")
	if err := b.PublishPolicies(f.ctx, "q"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.DeletePolicy(f.ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if err := b.RemovePolicy(f.ctx, "r"); err != nil {
		t.Fatal(err)
	}

	close(src.resume)
	if err := <-done; err != nil {
		t.Fatalf("replica A's Republish: %v", err)
	}
	if p, ok := f.plan("p"); !ok || p.Version != edited.Version || len(p.Pre) != 2 {
		t.Errorf("plan of p: got version %d with %d webhooks (present %v), want version %d with 2", p.Version, len(p.Pre), ok, edited.Version)
	}
	if q, ok := f.plan("q"); !ok || q.Version != created.Version {
		t.Errorf("plan of q: got %+v (present %v), want version %d", q, ok, created.Version)
	}
	if r, ok := f.plan("r"); ok {
		t.Errorf("plan of the deleted r: got %+v, want none", r)
	}
}

// TestOlderPlanNeverOverwritesNewer: a plan already in the bucket with a higher version of the same
// policy is left alone by a publisher that compiles an older one.
func TestOlderPlanNeverOverwritesNewer(t *testing.T) {
	f := newFixture(t)
	p := f.policy("p", "one")
	newer := plans.Compile(p, nil, nil, time.Now())
	newer.Version = p.Version + 5
	b, _ := json.Marshal(newer)
	if _, err := f.kv.Put(f.ctx, "p", b); err != nil {
		t.Fatal(err)
	}
	pub := plans.NewPublisher(f.st, f.kv, false, zerolog.Nop())
	if err := pub.PublishPolicies(f.ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Republish(f.ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.plan("p"); got.Version != newer.Version {
		t.Fatalf("plan version: got %d, want the newer %d kept", got.Version, newer.Version)
	}
}

// TestPlanURLKeepsOnlySchemeAndHost (D9): the plan's informational url is the scheme and host of
// the connection's URL, never its path or query (the credential of Slack-style hooks), also for a
// connection stored before the store kept only those; re-opening the store scrubs such a document.
func TestPlanURLKeepsOnlySchemeAndHost(t *testing.T) {
	f := newFixture(t)
	const secretURL = "https://hooks.slack.example:8443/services/T0001/B0001/S3cr3tPath?token=S3cr3tQuery#frag"
	if _, err := f.st.SetSecrets(f.ctx, "c", "sealed-c", connection.DisplayURL(secretURL), nil, nil); err != nil {
		t.Fatal(err)
	}
	f.policy("p", "one")
	pub := plans.NewPublisher(f.st, f.kv, false, zerolog.Nop())
	if err := pub.PublishPolicies(f.ctx, "p"); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		e, err := f.kv.Get(f.ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"S3cr3t", "services/T0001", "frag"} {
			if strings.Contains(string(e.Value()), s) {
				t.Errorf("the plan holds %q: %s", s, e.Value())
			}
		}
		if p, _ := f.plan("p"); len(p.Pre) != 1 || p.Pre[0].URL != want {
			t.Errorf("informational url: got %+v, want %q", p.Pre, want)
		}
	}
	check("https://hooks.slack.example:8443")

	// A document written by an earlier version, with the path in secrets_url.
	if _, err := f.st.Collection(store.Connections).UpdateOne(f.ctx, bson.D{{Key: "_id", Value: "c"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "secrets_url", Value: "https://legacy.example/hooks/S3cr3tPath"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Republish(f.ctx); err != nil {
		t.Fatal(err)
	}
	check("https://legacy.example")
	reopened, err := store.Open(f.ctx, f.uri, "planstest")
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close(context.Background())
	raw, err := f.st.Collection(store.Connections).FindOne(f.ctx, bson.D{{Key: "_id", Value: "c"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw.String(), "S3cr3t") {
		t.Fatalf("the stored connection still holds the path after the store was opened again: %s", raw)
	}
}

// TestCompileCarriesPolicyActionAndTimeframe: the plan carries fides's action type of the policy,
// from its drp_action, and its execution timeframe, for the webhook calls' policy_action and due
// date; a policy without them has neither.
func TestCompileCarriesPolicyActionAndTimeframe(t *testing.T) {
	days := 45
	for _, tc := range []struct {
		drp       *string
		timeframe *int
		action    string
		days      int
	}{
		{nil, nil, "", 0},
		{ptr("access"), &days, "access", 45},
		{ptr("access:categories"), nil, "access", 0},
		{ptr("access:specific"), nil, "access", 0},
		{ptr("deletion"), &days, "erasure", 45},
		{ptr("sale:opt_out"), nil, "consent", 0},
		{ptr("sale:opt_in"), nil, "consent", 0},
	} {
		p := plans.Compile(policy.Policy{Key: "p", DRPAction: tc.drp, ExecutionTimeframe: tc.timeframe}, nil, nil, time.Now())
		if p.PolicyAction != tc.action || p.ExecutionTimeframe != tc.days {
			t.Errorf("drp_action %v, timeframe %v: plan action %q, timeframe %d; want %q, %d", tc.drp, tc.timeframe,
				p.PolicyAction, p.ExecutionTimeframe, tc.action, tc.days)
		}
	}
	if len(policy.DRPActions) != 6 {
		t.Errorf("DRPActions has %d values; every one needs a row above", len(policy.DRPActions))
	}
}

func ptr[T any](v T) *T { return &v }

// TestPreApprovalStage: with PRE_APPROVAL every plan carries the pre-approval stage (an empty, not
// nil, list without webhooks; the webhooks two-way, in order, with their connection's sealed
// secrets), a change of the list alone re-publishes the plans, and without PRE_APPROVAL no plan
// carries a stage.
func TestPreApprovalStage(t *testing.T) {
	f := newFixture(t)
	f.policy("p", "a")
	on := plans.NewPublisher(f.st, f.kv, true, zerolog.Nop())
	off := plans.NewPublisher(f.st, f.kv, false, zerolog.Nop())

	if err := on.Republish(f.ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.plan("p"); p.PreApproval == nil || p.PreApproval.Webhooks == nil || len(p.PreApproval.Webhooks) != 0 {
		t.Fatalf("no pre-approval webhook: got %+v, want a stage with an empty list", p.PreApproval)
	}
	e, err := f.kv.Get(f.ctx, "p")
	if err != nil || !strings.Contains(string(e.Value()), `"pre_approval":{"webhooks":[]}`) {
		t.Fatalf("stored plan %s (%v), want \"pre_approval\":{\"webhooks\":[]}", e.Value(), err)
	}

	list, err := f.st.GetPreApproval(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	list.Pre = []policy.Webhook{
		{ID: "id-x", Key: "x", Name: "X", Direction: event.TwoWay, ConnectionKey: "c"},
		{ID: "id-y", Key: "y", Name: "Y", Direction: event.TwoWay, ConnectionKey: "gone"},
	}
	if _, err := f.st.SavePreApproval(f.ctx, list, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	before, _ := f.plan("p")
	if err := on.Republish(f.ctx); err != nil {
		t.Fatal(err)
	}
	p, _ := f.plan("p")
	want := []event.PlanWebhook{
		{ID: "id-x", Key: "x", Name: "X", Direction: event.TwoWay, Order: 0, ConnectionKey: "c", URL: "https://hooks.example", Secrets: "sealed-c"},
		{ID: "id-y", Key: "y", Name: "Y", Direction: event.TwoWay, Order: 1, ConnectionKey: "gone"},
	}
	if p.PreApproval == nil || !reflect.DeepEqual(p.PreApproval.Webhooks, want) {
		t.Fatalf("stage after the list changed: got %+v, want %+v", p.PreApproval, want)
	}
	if p.Version != before.Version || len(p.Pre) != 1 || p.Pre[0].Key != "a" {
		t.Fatalf("the policy's part changed: got version %d pre %+v, want version %d with a", p.Version, p.Pre, before.Version)
	}

	if err := off.Republish(f.ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.plan("p"); p.PreApproval != nil {
		t.Fatalf("PRE_APPROVAL off: got stage %+v, want none", p.PreApproval)
	}
}
