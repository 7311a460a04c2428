package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/plansnapshots"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/rs/zerolog"
)

const appKey = "0123456789abcdef0123456789abcdef"

// testSigningSecret is "whsec_" + base64("test-signing-key-0123456789").
var testSigningSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("test-signing-key-0123456789"))

// bodyOf decodes the JSON object body of a webhook call.
func bodyOf(t *testing.T, c testkit.Call) map[string]any {
	t.Helper()
	var m map[string]any
	c.Decode(t, &m)
	return m
}

// seq answers the n-th call of a path with answers[n], and every later call with the last one.
func seq(answers ...testkit.Answer) func(int, testkit.Call) testkit.Answer {
	return func(n int, _ testkit.Call) testkit.Answer {
		if n < len(answers) {
			return answers[n]
		}
		return answers[len(answers)-1]
	}
}

func ok(body string) testkit.Answer { return testkit.Answer{Status: 200, Body: body} }

// hook describes a webhook of a test plan.
type hook struct {
	Key       string
	Direction event.Direction
	URL       string
	Secrets   *event.HTTPSSecrets // default: URL + "Bearer test"
	Disabled  bool
	NoSecrets bool
}

// env is one embedded NATS (testkit) with a webhook receiver and helpers. Executors started from it
// trust the certificates of its receivers.
type env struct {
	t    *testing.T
	nats *testkit.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	rc   *testkit.Receiver
	// caFile is the PEM file of the receivers' certificates given as WEBHOOK_CA_FILE.
	caFile string
	// receivers are the receivers whose certificates caFile holds.
	receivers []*testkit.Receiver
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	rc := testkit.NewReceiver(t)
	return &env{t: t, nats: n, nc: n.NC, js: n.JS, rc: rc, caFile: rc.CAFile(), receivers: []*testkit.Receiver{rc}}
}

// addReceiver starts another receiver (another webhook host); executors started after it trust it.
func (e *env) addReceiver() *testkit.Receiver {
	e.t.Helper()
	rc := testkit.NewReceiver(e.t)
	e.receivers = append(e.receivers, rc)
	var bundle []byte
	for _, r := range e.receivers {
		b, err := os.ReadFile(r.CAFile())
		if err != nil {
			e.t.Fatal(err)
		}
		bundle = append(bundle, b...)
	}
	e.caFile = filepath.Join(e.t.TempDir(), "receivers-ca.pem")
	if err := os.WriteFile(e.caFile, bundle, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return rc
}

// config returns a test configuration: short timeouts and backoffs, the receivers trusted.
func (e *env) config(mutate ...func(*app.Config)) app.Config {
	e.t.Helper()
	getenv := func(k string) string {
		return map[string]string{
			"NATS_URL":                       e.nats.URL(),
			"APP_ENCRYPTION_KEY":             appKey,
			"HTTP_ADDR":                      "127.0.0.1:0",
			"WEBHOOK_TIMEOUT":                "2s",
			"WEBHOOK_MAX_ATTEMPTS":           "3",
			"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
			"WEBHOOK_CA_FILE":                e.caFile,
			"WEBHOOK_RETRY_BASE_DELAY":       "50ms",
			"WEBHOOK_RETRY_MAX_DELAY":        "1500ms",
			"EXECUTION_STAGE":                "skip",
			"CALLBACK_PUBLIC_URL":            "https://callback.example.com",
			"EXECUTOR_CONCURRENCY":           "64",
		}[k]
	}
	cfg, err := app.LoadConfig(getenv)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.AckWait = 2 * time.Second
	cfg.LeaseMargin = time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	return cfg
}

// executor is an executor started by env.start.
type executor struct {
	// addr is the host:port of its health/readiness/metrics listener.
	addr string
	// stop cancels its context (a soft stop) and waits until it stopped; later calls do nothing.
	stop func()
}

// start starts an executor; it is stopped when the test ends.
func (e *env) start(cfg app.Config) *executor {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := zerolog.New(zerolog.NewTestWriter(e.t)).Level(testLogLevel())
	s, err := app.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	var once sync.Once
	x := &executor{addr: s.Addr(), stop: func() {
		once.Do(func() {
			cancel()
			if err := s.Wait(); err != nil {
				e.t.Errorf("executor stopped with %v", err)
			}
		})
	}}
	e.t.Cleanup(x.stop)
	return x
}

func keyring(t *testing.T) *secret.Keyring {
	t.Helper()
	k, err := secret.NewKeyring(appKey, "", secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// putPlan writes a plan into policy_webhooks as config would, secrets sealed.
func (e *env) putPlan(policy string, pre, post []hook) event.Plan {
	e.t.Helper()
	return e.putPlanApproval(policy, pre, post, nil)
}

// putPlanApproval is putPlan with a pre-approval stage of webhooks approval (none: no stage; an
// empty, non-nil list: a stage without webhooks).
func (e *env) putPlanApproval(policy string, pre, post, approval []hook) event.Plan {
	e.t.Helper()
	kv := e.nats.Bucket(e.t, event.BucketPlans)
	k := keyring(e.t)
	build := func(hs []hook, kind string) []event.PlanWebhook {
		out := []event.PlanWebhook{}
		for i, h := range hs {
			if h.Direction == "" {
				h.Direction = event.OneWay
			}
			conn := "conn_" + policy + "_" + h.Key
			w := event.PlanWebhook{ID: "wh_" + policy + "_" + kind + "_" + h.Key, Key: h.Key, Name: h.Key,
				Direction: h.Direction, Order: i, ConnectionKey: conn, ConnectionDisabled: h.Disabled, URL: h.URL}
			if !h.NoSecrets {
				s := h.Secrets
				if s == nil {
					s = &event.HTTPSSecrets{URL: h.URL, Authorization: "Bearer test", SigningSecret: testSigningSecret}
				}
				b, _ := json.Marshal(s)
				sealed, err := k.Seal(b, []byte(conn))
				if err != nil {
					e.t.Fatal(err)
				}
				w.Secrets = sealed
			}
			out = append(out, w)
		}
		return out
	}
	p := event.Plan{PolicyKey: policy, Version: time.Now().UnixNano(), PublishedAt: time.Now(),
		Pre: build(pre, "pre"), Post: build(post, "post")}
	if approval != nil {
		for i := range approval {
			approval[i].Direction = event.TwoWay
		}
		p.PreApproval = &event.PreApproval{Webhooks: build(approval, "pre_approval")}
	}
	b, _ := json.Marshal(p)
	if _, err := kv.Put(context.Background(), event.KVKey(policy), b); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func strp(s string) *string { return &s }

// submit publishes a submitted event (Nats-Msg-Id: the id) and returns its stream sequence.
func (e *env) submit(id, policy string, ident event.Identity) uint64 {
	e.t.Helper()
	b, _ := json.Marshal(event.Submitted{ID: id, PolicyKey: policy, Identity: ident})
	return e.publish(event.SubjectSubmitted, b, id)
}

// publish publishes data on subject (with Nats-Msg-Id msgID unless empty) and returns its stream
// sequence.
func (e *env) publish(subject string, data []byte, msgID string) uint64 {
	e.t.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := e.js.Publish(context.Background(), subject, data, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

func (e *env) publishJSON(subject string, v any) uint64 {
	e.t.Helper()
	b, _ := json.Marshal(v)
	return e.publish(subject, b, "")
}

// record reads the state of id; nil when absent.
func (e *env) record(id string) *lifecycle.Record {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), event.BucketRequests)
	if err != nil {
		return nil
	}
	ent, err := kv.Get(context.Background(), event.KVKey(id))
	if err != nil {
		return nil
	}
	var r lifecycle.Record
	if err := json.Unmarshal(ent.Value(), &r); err != nil {
		e.t.Fatal(err)
	}
	if r.PlanRef != "" {
		// The stored record names its plan in plan_snapshots (SPEC §5).
		p, err := plansnapshots.New(e.nats.Bucket(e.t, event.BucketPlanSnapshots)).Get(context.Background(), r.PlanRef)
		if err != nil {
			e.t.Fatalf("the plan snapshot of %s: %v", id, err)
		}
		r.Plan = p
	}
	return &r
}

// shown prints a record as its JSON in failure messages.
type shown struct{ r *lifecycle.Record }

func (s shown) String() string { return describe(s.r) }

// waitFor waits until cond holds for the record of id.
func (e *env) waitFor(id string, within time.Duration, what string, cond func(*lifecycle.Record) bool) *lifecycle.Record {
	e.t.Helper()
	return testkit.WaitFor(e.t, within, fmt.Sprintf("request %s: %s", id, what), func() (shown, bool) {
		r := e.record(id)
		return shown{r}, r != nil && cond(r)
	}).r
}

// waitStatus waits until the record of id is in one of statuses with its outbox published.
func (e *env) waitStatus(id string, within time.Duration, statuses ...event.Status) *lifecycle.Record {
	e.t.Helper()
	return e.waitFor(id, within, fmt.Sprintf("status in %v, outbox empty", statuses), func(r *lifecycle.Record) bool {
		for _, s := range statuses {
			if r.Status == s && len(r.Outbox) == 0 {
				return true
			}
		}
		return false
	})
}

func describe(r *lifecycle.Record) string {
	if r == nil {
		return "no record"
	}
	b, _ := json.Marshal(r)
	return string(b)
}

// consumerInfo returns the state of the executor's durable consumer name.
func (e *env) consumerInfo(name string) *jetstream.ConsumerInfo {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := e.js.Consumer(ctx, event.Stream, name)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", name, err)
	}
	return info
}

// consumerState is what failure messages show of a consumer.
type consumerState struct {
	Delivered, Pending, AckPending, Redelivered uint64
}

func stateOf(info *jetstream.ConsumerInfo) consumerState {
	return consumerState{Delivered: info.Delivered.Stream, Pending: info.NumPending,
		AckPending: uint64(info.NumAckPending), Redelivered: uint64(info.NumRedelivered)}
}

// settled waits until the executor's consumer name has been delivered every message up to stream
// sequence seq and holds none unacknowledged: each was handled to its end.
func (e *env) settled(name string, seq uint64, within time.Duration) *jetstream.ConsumerInfo {
	e.t.Helper()
	var info *jetstream.ConsumerInfo
	testkit.WaitFor(e.t, within, fmt.Sprintf("consumer %s to handle everything up to stream sequence %d", name, seq),
		func() (consumerState, bool) {
			info = e.consumerInfo(name)
			return stateOf(info), info.Delivered.Stream >= seq && info.NumPending == 0 && info.NumAckPending == 0
		})
	return info
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func identity(email, phone string) event.Identity {
	var id event.Identity
	if email != "" {
		id.Email = strp(email)
	}
	if phone != "" {
		id.PhoneNumber = strp(phone)
	}
	return id
}

func testLogLevel() zerolog.Level {
	if l, err := zerolog.ParseLevel(os.Getenv("EXECUTOR_TEST_LOG")); err == nil && os.Getenv("EXECUTOR_TEST_LOG") != "" {
		return l
	}
	return zerolog.WarnLevel
}
