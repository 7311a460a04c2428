package httpapi_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/app"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/httpapi"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"github.com/policyhooks/policyhooks/services/config/internal/plans"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/breaker"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// One FerretDB serves the whole test binary; each test gets its own database.
var ferretURI string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "config-httpapi-ferret-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s, err := ferret.Start(dir, "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferretURI = s.URI()
	code := m.Run()
	s.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testAppKey  = "0123456789abcdef0123456789abcdef"
	otherAppKey = "fedcba9876543210fedcba9876543210"
	rootID      = "root"
	rootSecret  = "root-secret-for-tests"
)

// syncBuffer collects log lines from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type envOptions struct {
	appKey, previousKey string
	allowPrivate        bool
	allowHTTP           bool
	preApproval         bool // PRE_APPROVAL
	roots               *x509.CertPool
	db                  string        // database name; a fresh one when empty
	nats                *testkit.NATS // shared NATS; a fresh one when nil
}

// env is the config service wired as app.Start wires it, over a fresh database and NATS, with the
// router served by httptest.
type env struct {
	t         *testing.T
	db        string
	router    *mux.Router
	srv       *httptest.Server
	st        *store.Store
	nats      *testkit.NATS
	plansKV   jetstream.KeyValue
	clientsKV jetstream.KeyValue
	healthKV  jetstream.KeyValue
	js        jetstream.JetStream
	pub       *plans.Publisher
	conns     *connection.Service
	oauth     *oauth.Service
	logs      *syncBuffer
	root      string // a root access token
	// webhookBase, when set, is where requests to fidesops's webhook paths (/api/v1/policy/{key}/
	// webhook...) are sent instead: "/dsr/policy" drives fides's paths with the same cases.
	webhookBase string
}

func newEnv(t *testing.T, opt envOptions) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if opt.appKey == "" {
		opt.appKey = testAppKey
	}
	if opt.db == "" {
		opt.db = "t" + token.NewID()[:16]
	}
	if opt.nats == nil {
		opt.nats = testkit.StartNATS(t)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs).With().Timestamp().Logger()

	st, err := store.Open(ctx, ferretURI, opt.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	nc, err := natsconn.Connect(ctx, envconfig.Common{NATSURL: opt.nats.URL()}, "config-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	plansKV, err := natsconn.PlansBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	clientsKV, err := natsconn.ClientsBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := secret.NewKeyring(opt.appKey, opt.previousKey, secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := secret.DeriveKey(opt.appKey, secret.PurposeAccessTokens)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := token.NewSealer(tk)
	if err != nil {
		t.Fatal(err)
	}
	pub := plans.NewPublisher(st, plansKV, opt.preApproval, log)
	conns := connection.NewService(st, st, pub, keyring, netguard.Policy{AllowPrivate: opt.allowPrivate, AllowHTTP: opt.allowHTTP}, opt.roots, log)
	healthKV, err := natsconn.HealthBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	conns.UseBreakers(breaker.NewStore(healthKV, js, breaker.Config{}, log))
	pols := policy.NewService(st, st, pub, log)
	oa := oauth.NewService(st, clientsKV, sealer, oauth.Root{ID: rootID, Secret: rootSecret}, time.Hour, log)
	if err := conns.Reseal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := oa.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	router := httpapi.Routes(httpapi.Deps{
		Log: log, Registry: prometheus.NewRegistry(), OAuth: oa, Auth: api.NewAuthorizer(sealer, oa),
		Connections: conns, Policies: pols, OpenAPI: app.OpenAPI,
		Ready: map[string]api.Check{
			"mongodb": st.Ping,
			"nats":    func(ctx context.Context) error { return natsconn.Ready(ctx, nc, js) },
		},
	})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	e := &env{t: t, db: opt.db, router: router, srv: srv, st: st, nats: opt.nats, plansKV: plansKV, clientsKV: clientsKV, healthKV: healthKV, js: js,
		pub: pub, conns: conns, oauth: oa, logs: logs}
	e.root = e.tokenFor(rootID, rootSecret)
	return e
}

// raw sends a request; body is sent as is when it is a string or []byte, else as JSON.
func (e *env) raw(method, path, tok string, body any, header ...string) (int, []byte, http.Header) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+e.routed(path), rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, b, res.Header
}

// call sends a request as root, checks the status and decodes the answer into out (when not nil).
// routed returns path as sent: a fidesops webhook path moved below e.webhookBase when set.
func (e *env) routed(path string) string {
	const fidesops = httpapi.Prefix + "/policy/"
	if e.webhookBase == "" || !strings.HasPrefix(path, fidesops) || !strings.Contains(path, "/webhook") {
		return path
	}
	return httpapi.Prefix + e.webhookBase + "/" + path[len(fidesops):]
}

func (e *env) call(method, path string, body any, want int, out any) []byte {
	e.t.Helper()
	status, b, _ := e.raw(method, path, e.root, body)
	if status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return b
}

func (e *env) tokenFor(id, secret string) string {
	e.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		e.t.Fatalf("token for %s: status %d: %s", id, res.StatusCode, b)
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return out.AccessToken
}

// client creates a client with scopes and returns its id, secret and a token.
func (e *env) client(scopes ...string) (string, string, string) {
	e.t.Helper()
	if scopes == nil {
		scopes = []string{}
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	e.call(http.MethodPost, "/api/v1/oauth/client", map[string]any{"scopes": scopes}, http.StatusOK, &out)
	return out.ClientID, out.ClientSecret, e.tokenFor(out.ClientID, out.ClientSecret)
}

// https creates an https connection with secrets pointing at url.
func (e *env) https(key, rawURL, authorization string) {
	e.t.Helper()
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Connection " + key, "key": key, "connection_type": "https", "access": "read"},
	}, http.StatusOK, nil)
	e.call(http.MethodPut, "/api/v1/connection/"+key+"/secret?verify=false",
		map[string]any{"url": rawURL, "authorization": authorization}, http.StatusOK, nil)
}

func (e *env) policy(key string) {
	e.t.Helper()
	var out struct {
		Succeeded []map[string]any `json:"succeeded"`
	}
	e.call(http.MethodPatch, "/api/v1/policy", []map[string]any{{"name": "Policy " + key, "key": key}}, http.StatusOK, &out)
	if len(out.Succeeded) != 1 {
		e.t.Fatalf("policy %s not created: %+v", key, out)
	}
}

// hook is a webhook item of a PUT.
func hook(key, name, direction, conn string) map[string]any {
	return map[string]any{"key": key, "name": name, "direction": direction, "connection_config_key": conn}
}

// orderOf returns the webhook keys of a list in order, as GET shows them.
func (e *env) orderOf(policyKey, kind string) []string {
	e.t.Helper()
	var page struct {
		Items []struct {
			Key   string `json:"key"`
			Order int    `json:"order"`
		} `json:"items"`
	}
	e.call(http.MethodGet, "/api/v1/policy/"+policyKey+"/webhook/"+kind+"?size=100", nil, http.StatusOK, &page)
	keys := make([]string, len(page.Items))
	for i, it := range page.Items {
		if it.Order != i {
			e.t.Fatalf("webhook %s at position %d has order %d", it.Key, i, it.Order)
		}
		keys[i] = it.Key
	}
	return keys
}

// snapshot returns the GET answers of a policy's lists, to compare before and after a rejected
// request.
func (e *env) snapshot(policyKey string) string {
	e.t.Helper()
	pre := e.call(http.MethodGet, "/api/v1/policy/"+policyKey+"/webhook/pre_execution?size=100", nil, http.StatusOK, nil)
	post := e.call(http.MethodGet, "/api/v1/policy/"+policyKey+"/webhook/post_execution?size=100", nil, http.StatusOK, nil)
	return string(pre) + string(post)
}

// plan reads the plan of a policy from KV; ok is false when there is none.
func (e *env) plan(key string) (map[string]any, []byte, bool) {
	e.t.Helper()
	ent, err := e.plansKV.Get(context.Background(), key)
	if err != nil {
		return nil, nil, false
	}
	var p map[string]any
	if err := json.Unmarshal(ent.Value(), &p); err != nil {
		e.t.Fatal(err)
	}
	return p, ent.Value(), true
}
