package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/rs/zerolog"
)

const appKey = "0123456789abcdef0123456789abcdef"

// testSigningSecret is "whsec_" + base64("test-signing-key-0123456789").
var testSigningSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("test-signing-key-0123456789"))

// call is one request a receiver got.
type call struct {
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time
}

func (c call) body(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.Body, &m); err != nil {
		t.Fatalf("call body %q: %v", c.Body, err)
	}
	return m
}

// answer is what a receiver answers; Sleep delays it.
type answer struct {
	Status int
	Body   string
	Header map[string]string
	Sleep  time.Duration
}

// receiver is a real HTTPS server whose answers are scripted per path.
type receiver struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	calls  []call
	script map[string]func(n int, c call) answer // n: calls of this path for this request, from 0
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{script: map[string]func(int, call) answer{}}
	rc.srv = httptest.NewTLSServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	rc.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.srv.Certificate().Raw})
	if err := os.WriteFile(rc.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c := call{Path: r.URL.Path, Header: r.Header.Clone(), Body: b, At: time.Now()}
	var id struct {
		ID string `json:"privacy_request_id"`
	}
	_ = json.Unmarshal(b, &id)
	rc.mu.Lock()
	n := 0
	for _, prev := range rc.calls {
		if prev.Path == c.Path && strings.Contains(string(prev.Body), `"privacy_request_id":"`+id.ID+`"`) {
			n++
		}
	}
	rc.calls = append(rc.calls, c)
	fn := rc.script[c.Path]
	rc.mu.Unlock()
	a := answer{Status: 200}
	if fn != nil {
		a = fn(n, c)
	}
	if a.Sleep > 0 {
		select {
		case <-time.After(a.Sleep):
		case <-r.Context().Done():
		}
	}
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.Status)
	_, _ = io.WriteString(w, a.Body)
}

func (rc *receiver) on(path string, fn func(n int, c call) answer) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.script[path] = fn
}

func (rc *receiver) url(path string) string { return rc.srv.URL + path }

// callsOf returns the calls made for request id, in order, optionally only for path.
func (rc *receiver) callsOf(id, path string) []call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []call
	for _, c := range rc.calls {
		if strings.Contains(string(c.Body), `"privacy_request_id":"`+id+`"`) && (path == "" || c.Path == path) {
			out = append(out, c)
		}
	}
	return out
}

func (rc *receiver) allCalls() []call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]call(nil), rc.calls...)
}

// hook describes a webhook of a test plan.
type hook struct {
	Key       string
	Direction event.Direction
	URL       string
	Secrets   *event.HTTPSSecrets // default: URL + "Bearer test"
	Disabled  bool
	NoSecrets bool
}

// env is one embedded NATS with a client and helpers.
type env struct {
	t    *testing.T
	nats *devstack.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	rc   *receiver
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := devstack.NATSForTest(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := natsconn.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nats: n, nc: nc, js: js, rc: newReceiver(t)}
}

// config returns a test configuration: short timeouts and backoffs, the receiver trusted.
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
			"WEBHOOK_CA_FILE":                e.rc.caFile,
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

// startService starts an executor and returns its HTTP address.
func startService(t *testing.T, e *env) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := app.Start(ctx, e.config(), zerolog.New(zerolog.NewTestWriter(t)).Level(testLogLevel()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = s.Wait() })
	return s.Addr()
}

// start starts an executor; the returned stop cancels it and waits.
func (e *env) start(cfg app.Config) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := zerolog.New(zerolog.NewTestWriter(e.t)).Level(testLogLevel())
	s, err := app.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := s.Wait(); err != nil {
				e.t.Errorf("executor stopped with %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
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
	ctx := context.Background()
	kv, err := natsconn.PlansBucket(ctx, e.js)
	if err != nil {
		e.t.Fatal(err)
	}
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
	b, _ := json.Marshal(p)
	if _, err := kv.Put(ctx, policy, b); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func strp(s string) *string { return &s }

// submit publishes a submitted event.
func (e *env) submit(id, policy string, ident event.Identity) {
	e.t.Helper()
	b, _ := json.Marshal(event.Submitted{ID: id, PolicyKey: policy, Identity: ident})
	e.publish(event.SubjectSubmitted, b, id)
}

func (e *env) publish(subject string, data []byte, msgID string) {
	e.t.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.js.Publish(context.Background(), subject, data, opts...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publishJSON(subject string, v any) {
	e.t.Helper()
	b, _ := json.Marshal(v)
	e.publish(subject, b, "")
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
	return &r
}

// waitFor polls until cond holds for the record of id or the deadline passes.
func (e *env) waitFor(id string, within time.Duration, what string, cond func(*lifecycle.Record) bool) *lifecycle.Record {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := e.record(id)
		if r != nil && cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("request %s: waited %s for %s; got %s", id, within, what, describe(r))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *env) waitStatus(id string, within time.Duration, statuses ...event.Status) *lifecycle.Record {
	e.t.Helper()
	return e.waitFor(id, within, fmt.Sprintf("status in %v", statuses), func(r *lifecycle.Record) bool {
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

// streamEvents returns the status events stored in the stream for subject filter.
func (e *env) streamEvents(filter string) []event.StatusChanged {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, event.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []event.StatusChanged
	remaining := int(info.NumPending)
	for remaining > 0 {
		batch, err := cons.Fetch(remaining, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			var ev event.StatusChanged
			_ = json.Unmarshal(m.Data(), &ev)
			out = append(out, ev)
			n++
		}
		if n == 0 {
			break
		}
		remaining -= n
	}
	return out
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
