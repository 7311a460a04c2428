package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// secretNeedle is a value that must not be found at rest: its plaintext and the forms it takes
// when embedded in JSON, a URL or base64.
type secretNeedle struct {
	name  string
	value string
	// identity values are personal data that SPEC §5 carries in the clear on the subjects
	// submitted, execute and resume (and sealed in privacy_identities); anywhere else they leak.
	identity bool
}

// forms returns the encodings of v to look for, by name: as is, JSON-escaped, URL-escaped, and
// base64 (standard and URL alphabets) at each of the three byte alignments it can have inside a
// longer encoded value (only the characters that depend on v alone).
func forms(v string) map[string]string {
	out := map[string]string{"plaintext": v}
	if j, _ := json.Marshal(v); string(j[1:len(j)-1]) != v {
		out["json-escaped"] = string(j[1 : len(j)-1])
	}
	if q := url.QueryEscape(v); q != v {
		out["query-escaped"] = q
	}
	if p := url.PathEscape(v); p != v {
		out["path-escaped"] = p
	}
	for _, enc := range []struct {
		name string
		e    *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for k := range 3 {
			e := enc.e.EncodeToString(append(make([]byte, k), v...))
			from, to := (8*k+5)/6, 8*(k+len(v))/6
			if to-from >= 12 {
				out[fmt.Sprintf("%s@%d", enc.name, k)] = e[from:to]
			}
		}
	}
	return out
}

// scanner looks for needles in text and records where they are.
type scanner struct {
	needles []secretNeedle
	mu      sync.Mutex
	found   []string
	// allowed counts identity values seen where SPEC §5 puts them, proving the scan sees them.
	allowed map[string]int
}

func (s *scanner) scan(where, text string, identityAllowed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.needles {
		names := make([]string, 0, 8)
		for name := range forms(n.value) {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			f := forms(n.value)[name]
			i := strings.Index(text, f)
			if i < 0 {
				continue
			}
			if n.identity && identityAllowed {
				s.allowed[n.name]++
				continue
			}
			lo, hi := max(0, i-100), min(len(text), i+len(f)+100)
			s.found = append(s.found, fmt.Sprintf("%s (%s) in %s: …%s…", n.name, name, where, text[lo:hi]))
		}
	}
}

// identitySubjects are the subjects that carry identity values in the clear by contract.
var identitySubjects = []string{event.SubjectSubmitted, event.SubjectExecute, event.SubjectResume}

// TestNoSecretAtRest runs a full flow through the whole local stack with distinctive secret values
// (a connection URL's path and query, the Authorization value, a custom header, the signing
// secrets and Ed25519 signing keys with their previous ones, a client certificate's private key,
// identity values and derived identities, the root client secret and the tokens, the credentials of
// WEBHOOK_PROXY_URL), through pre- and post-webhooks with a two-way halt and resume, a retried
// call, a call presenting a client certificate and a request failing on a dead host, every call
// through a CONNECT proxy. Then it reads every message of every stream (all KV revisions
// included), every key and revision of every KV bucket, the configuration store's files, the API's
// answers about the connections (their signing keys' public keys included) and every log line of
// the three services at debug level, and fails naming each place where one of the values appears,
// in plaintext or encoded.
func TestNoSecretAtRest(t *testing.T) {
	var mark [6]byte
	_, _ = rand.Read(mark[:])
	m := hex.EncodeToString(mark[:])

	logs := &syncBuffer{b: &bytes.Buffer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxyPassword := "S3CR3T-PROXY-" + m
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: proxyPassword})
	f := &flow{t: t, ctx: ctx, dir: t.TempDir(), rcv: testkit.NewReceiver(t), env: map[string]string{
		"EXECUTION_STAGE": "await", "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
		"WEBHOOK_MAX_ATTEMPTS": "2", "WEBHOOK_RETRY_BASE_DELAY": "50ms", "WEBHOOK_RETRY_MAX_DELAY": "100ms",
		"WEBHOOK_PROXY_URL": proxy.URL(),
	}}
	f.env["WEBHOOK_CA_FILE"] = f.rcv.CAFile()
	stack, err := Start(ctx, Options{
		DataDir: f.dir, NATSAddr: "127.0.0.1:0", StoreAddr: "127.0.0.1:0",
		ConfigAddr: "127.0.0.1:0", CallbackAddr: "127.0.0.1:0", ExecutorAddr: "127.0.0.1:0", Log: logs,
	}, func(k string) string { return f.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stack.Wait(); err != nil {
			t.Errorf("stack shutdown: %v", err)
		}
	}()
	f.stack = stack
	if f.nc, err = nats.Connect(stack.NATSURL); err != nil {
		t.Fatal(err)
	}
	defer f.nc.Close()
	f.js, _ = jetstream.New(f.nc)
	f.token = accessToken(t, ctx, stack)

	var (
		pathSecret   = "S3CR3T-PATH-" + m
		querySecret  = "S3CR3T-QUERY-" + m
		authSecret   = "Bearer S3CR3T-AUTH-" + m
		headerSecret = "S3CR3T-HEADER-" + m
		signSecret   = "S3CR3T-SIGN-" + m
		signPrevious = "S3CR3T-SIGNPREV-" + m
		edKey        = ed25519.NewKeyFromSeed(randomBytes(ed25519.SeedSize))
		edPrevious   = ed25519.NewKeyFromSeed(randomBytes(ed25519.SeedSize))
		deadPath     = "S3CR3T-DEADPATH-" + m
		deadQuery    = "S3CR3T-DEADQUERY-" + m
		email        = "s3cr3t.email." + m + "@example.com"
		phone        = "+1-555-S3CR3T-PHONE-" + m
		derivedEmail = "s3cr3t.derived." + m + "@example.com"
		derivedPhone = "+1-555-S3CR3T-DERIVED-" + m
	)

	// The receiver: a two-way pre-webhook that derives a phone number and halts, a one-way
	// pre-webhook that fails once (retried), a one-way post-webhook.
	base := "/hooks/" + pathSecret
	f.rcv.On(base+"/ask", func(int, testkit.Call) testkit.Answer {
		return testkit.Answer{Body: `{"halt": true, "derived_identity": {"phone_number": "` + derivedPhone + `"}}`}
	})
	f.rcv.On(base+"/next", func(n int, _ testkit.Call) testkit.Answer {
		if n == 0 {
			return testkit.Answer{Status: 503, Body: "try again"}
		}
		return testkit.Answer{}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := fmt.Sprintf("https://%s/hooks/%s?token=%s", ln.Addr(), deadPath, deadQuery)
	ln.Close()

	// Every connection signs with an HMAC secret and an Ed25519 key, each with a previous one in
	// use for an hour. A receiver requires a client certificate (httptest's server certificate,
	// trusted through WEBHOOK_CA_FILE), and one connection carries its certificate and key. The
	// API's answers are kept, to be scanned too.
	ca := testkit.NewCA(t, "scan client CA")
	mtls := testkit.NewReceiverTLS(t, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()})
	clientCert, clientKey := ca.Client(t, "scan-client")

	var answers []string
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	whsk := func(b []byte) string { return "whsk_" + base64.StdEncoding.EncodeToString(b) }
	connection := func(key, rawURL string, extra map[string]any) {
		answers = append(answers, string(f.mustAPI(http.MethodPatch, "/api/v1/connection",
			fmt.Sprintf(`[{"name": %q, "key": %q, "connection_type": "https", "access": "read"}]`, key, key))))
		body := map[string]any{"url": rawURL, "authorization": authSecret,
			"headers": map[string]string{"X-Api-Key": headerSecret}, "signing_secret": signSecret,
			"signing_secret_previous": signPrevious, "signing_secret_previous_until": until,
			"signing_key": whsk(edKey.Seed()), "signing_key_previous": whsk(edPrevious), "signing_key_previous_until": until}
		for k, v := range extra {
			body[k] = v
		}
		b, _ := json.Marshal(body)
		answers = append(answers, string(f.mustAPI(http.MethodPut, "/api/v1/connection/"+key+"/secret?verify=true", string(b))))
	}
	hookURL := func(name string) string { return f.rcv.URL(base+"/"+name) + "?token=" + querySecret + "&x=1" }
	connection("ask_conn", hookURL("ask"), nil)
	connection("next_conn", hookURL("next"), nil)
	connection("after_conn", hookURL("after"), nil)
	connection("dead_conn", deadURL, nil)
	connection("mtls_conn", mtls.URL(base+"/mtls")+"?token="+querySecret,
		map[string]any{"client_certificate": clientCert, "client_key": clientKey})
	// A refused PUT: a key that does not match the certificate.
	_, otherKey := ca.Client(t, "scan-other")
	b, _ := json.Marshal(map[string]any{"url": mtls.URL("/refused"), "authorization": authSecret,
		"client_certificate": clientCert, "client_key": otherKey})
	status, refused := f.api(http.MethodPut, f.stack.ConfigURL+"/api/v1/connection/mtls_conn/secret?verify=false", string(b))
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("a mismatched client key: %d %s, want 422", status, refused)
	}
	answers = append(answers, string(refused))
	item := func(conn, dir, key string) string {
		return fmt.Sprintf(`{"connection_config_key": %q, "direction": %q, "key": %q, "name": %q}`, conn, dir, key, key)
	}
	f.mustAPI(http.MethodPatch, "/api/v1/policy", `[{"name": "Secretive", "key": "secretive"}, {"name": "Broken", "key": "broken"}]`)
	f.mustAPI(http.MethodPut, "/api/v1/policy/secretive/webhook/pre_execution",
		"["+item("ask_conn", "two_way", "ask")+","+item("next_conn", "one_way", "next")+"]")
	f.mustAPI(http.MethodPut, "/api/v1/policy/secretive/webhook/post_execution",
		"["+item("after_conn", "one_way", "after")+","+item("mtls_conn", "one_way", "mtls")+"]")
	f.mustAPI(http.MethodPut, "/api/v1/policy/broken/webhook/pre_execution", "["+item("dead_conn", "one_way", "dead")+"]")

	// The data layer answers every execute.
	sub, err := f.nc.Subscribe(event.SubjectExecute, func(msg *nats.Msg) {
		var ex event.Execute
		_ = json.Unmarshal(msg.Data, &ex)
		b, _ := json.Marshal(map[string]any{"id": ex.ID, "execution_id": ex.ExecutionID, "succeeded": true})
		_, _ = f.js.Publish(ctx, event.SubjectExecuted, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	submit := func(id, policy string) {
		b, _ := json.Marshal(event.Submitted{ID: id, PolicyKey: policy, Identity: event.Identity{Email: &email, PhoneNumber: &phone}})
		if _, err := f.js.Publish(ctx, event.SubjectSubmitted, b, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	submit("pri_scan_ok", "secretive")
	submit("pri_scan_dead", "broken")

	halt := f.waitCalls(base+"/ask", 1, 20*time.Second)[0]
	f.waitStatus("pri_scan_ok", "paused", 10*time.Second)
	replyToken := halt.Header.Get("reply-to-token")
	status, body := f.call(http.MethodPost, halt.Header.Get("reply-to"),
		`{"derived_identity": {"email": "`+derivedEmail+`"}}`, "Bearer "+replyToken)
	if status != 200 {
		t.Fatalf("resume: %d %s", status, body)
	}
	f.waitStatus("pri_scan_ok", "complete", 30*time.Second)
	f.waitStatus("pri_scan_dead", "error", 30*time.Second)

	// The secrets were really used: the scan is not vacuous.
	after := f.waitCalls(base+"/after", 1, 5*time.Second)[0]
	if after.Header.Get("Authorization") != authSecret || after.Header.Get("X-Api-Key") != headerSecret ||
		after.Header.Get("webhook-signature") == "" || !strings.Contains(string(after.Body), derivedEmail) ||
		!strings.Contains(string(after.Body), derivedPhone) {
		t.Fatalf("the post-webhook call lacks the configured secrets or the derived identity: %v %s", after.Header, after.Body)
	}
	if n := len(f.callsTo(base + "/next")); n != 2 {
		t.Fatalf("/next called %d times, want 2 (one retry)", n)
	}
	if sigs := strings.Fields(after.Header.Get("webhook-signature")); len(sigs) != 4 || !strings.HasPrefix(sigs[2], "v1a,") ||
		!strings.HasPrefix(sigs[3], "v1a,") {
		t.Fatalf("the post-webhook call is not signed with both secrets and both keys: %q", sigs)
	}
	if c := mtls.CallsOf("pri_scan_ok", base+"/mtls"); len(c) != 1 || c[0].ClientCN != "scan-client" {
		t.Fatalf("the mTLS receiver got %v, want one call with the client certificate", c)
	}
	if proxy.Tunnels() == 0 || proxy.Others() != 0 {
		t.Fatalf("the proxy opened %d tunnels (and got %d other requests): the calls did not go through it", proxy.Tunnels(), proxy.Others())
	}
	// The dead host was asked for through the proxy, which could not reach it.
	if v := f.view("pri_scan_dead"); !strings.Contains(string(v.Error), "proxy http://"+proxy.Addr()+" answered 502") {
		t.Fatalf("the dead request's error is %s, want the proxy's 502 (without its credentials)", v.Error)
	}
	for _, path := range []string{"/api/v1/connection", "/api/v1/connection/after_conn", "/api/v1/connection/after_conn/signing-key",
		"/api/v1/connection/dead_conn/signing-key", "/api/v1/connection/mtls_conn", "/api/v1/connection/dead_conn",
		"/api/v1/policy/secretive/webhook/pre_execution", "/api/v1/policy/secretive/webhook/post_execution"} {
		answers = append(answers, string(f.mustAPI(http.MethodGet, path, "")))
	}
	if pub := base64.StdEncoding.EncodeToString(edPrevious.Public().(ed25519.PublicKey)); !strings.Contains(strings.Join(answers, "\n"), pub) {
		t.Fatal("the API did not answer the previous public key; the scan of its answers would be vacuous")
	}

	// The base64 lines of the client key's PEM; the first starts with the PKCS #8 header that every
	// P-256 key shares, the private scalar after 48 characters.
	keyLines := strings.Split(strings.TrimSpace(clientKey), "\n")[1:]
	sc := &scanner{allowed: map[string]int{}, needles: []secretNeedle{
		{name: "connection URL path", value: pathSecret},
		{name: "connection URL query", value: querySecret},
		{name: "dead connection URL path", value: deadPath},
		{name: "dead connection URL query", value: deadQuery},
		{name: "Authorization value", value: strings.TrimPrefix(authSecret, "Bearer ")},
		{name: "custom header value", value: headerSecret},
		{name: "signing secret", value: signSecret},
		{name: "previous signing secret", value: signPrevious},
		{name: "Ed25519 signing key (seed)", value: string(edKey.Seed())},
		{name: "Ed25519 signing key (private key)", value: string(edKey)},
		{name: "previous Ed25519 signing key (seed)", value: string(edPrevious.Seed())},
		{name: "previous Ed25519 signing key (private key)", value: string(edPrevious)},
		{name: "client key (start of the private scalar)", value: keyLines[0][48:]},
		{name: "client key (second line)", value: keyLines[1]},
		{name: "proxy password", value: proxyPassword},
		{name: "proxy Proxy-Authorization", value: base64.StdEncoding.EncodeToString([]byte("egress:" + proxyPassword))},
		{name: "root client secret", value: stack.Env["OAUTH_ROOT_CLIENT_SECRET"]},
		{name: "root access token", value: f.token},
		{name: "reply-to-token", value: replyToken},
		{name: "email", value: email, identity: true},
		{name: "phone number", value: phone, identity: true},
		{name: "derived email", value: derivedEmail, identity: true},
		{name: "derived phone number", value: derivedPhone, identity: true},
	}}

	// Every message of every stream: the request stream and the streams behind the KV buckets,
	// with every revision they keep.
	streams := 0
	msgs := 0
	for name := range f.js.StreamNames(ctx).Name() {
		streams++
		s, err := f.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			raw, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("stream %s seq %d: %v", name, seq, err)
			}
			msgs++
			allowed := name == event.Stream && contains(identitySubjects, raw.Subject)
			where := fmt.Sprintf("stream %s seq %d subject %s", name, seq, raw.Subject)
			sc.scan(where+" (subject)", raw.Subject, false)
			sc.scan(where+" (data)", string(raw.Data), allowed)
			for k, vs := range raw.Header {
				sc.scan(where+" (header "+k+")", strings.Join(vs, "\n"), allowed)
			}
		}
	}
	// Every key and readable revision of every KV bucket.
	buckets := 0
	for name := range f.js.KeyValueStoreNames(ctx).Name() {
		buckets++
		kv, err := f.js.KeyValue(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			sc.scan("KV "+name+" key name", k, false)
			hist, err := kv.History(ctx, k)
			if err != nil {
				t.Fatalf("KV %s key %s history: %v", name, k, err)
			}
			for _, e := range hist {
				sc.scan(fmt.Sprintf("KV %s key %s revision %d", name, k, e.Revision()), string(e.Value()), false)
			}
		}
	}
	// The configuration store's files (FerretDB keeps documents as JSON in SQLite): the
	// connections hold only sealed secrets and the scheme and host of their URL.
	storeFiles := 0
	err = filepath.WalkDir(filepath.Join(f.dir, "store"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		storeFiles++
		sc.scan("store file "+strings.TrimPrefix(path, f.dir), string(b), false)
		return nil
	})
	if err != nil || storeFiles == 0 {
		t.Errorf("scanning the store files: %v (%d files)", err, storeFiles)
	}
	// Every answer of the API read or written above.
	for i, a := range answers {
		sc.scan(fmt.Sprintf("API answer %d", i+1), a, false)
	}
	// Every log line of the three services.
	lines := strings.Split(logs.String(), "\n")
	for _, svc := range []string{"config", "callback", "executor"} {
		if !strings.Contains(logs.String(), `"`+svc+`"`) {
			t.Errorf("no log line of the %s service was captured; the log scan would be vacuous", svc)
		}
	}
	for i, line := range lines {
		sc.scan(fmt.Sprintf("log line %d", i+1), line, false)
	}

	t.Logf("scanned %d streams (%d messages), %d KV buckets, %d store files, %d API answers, %d log lines; identity values where SPEC §5 carries them: %v",
		streams, msgs, buckets, storeFiles, len(answers), len(lines), sc.allowed)
	if sc.allowed["email"] == 0 || sc.allowed["derived email"] == 0 {
		t.Errorf("the scan did not see the identity on the submitted or resume subjects; it is not reading the messages")
	}
	for _, s := range sc.found {
		t.Errorf("secret at rest: %s", s)
	}
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
