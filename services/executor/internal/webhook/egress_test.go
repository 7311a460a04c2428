package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

const (
	// hooksHost is the receivers' host name: the test resolver maps it to 127.0.0.1, and the test
	// CA's server certificates are for it alone, so a handshake succeeds only with it as the name.
	hooksHost     = "hooks.test"
	proxyPassword = "PR0XY-S3CRET"
)

// egress is a receiver named hooks.test (with a certificate of the test CA for that name alone)
// and, when it requires them, client certificates of that CA.
type egress struct {
	ca   *testkit.CA
	rcv  *testkit.Receiver
	port string
}

func newEgress(t *testing.T, requireClientCert bool) *egress {
	t.Helper()
	e := &egress{ca: testkit.NewCA(t, "egress test CA")}
	cfg := &tls.Config{Certificates: []tls.Certificate{e.ca.Server(t, hooksHost)}}
	if requireClientCert {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, e.ca.Pool()
	}
	e.rcv = testkit.NewReceiverTLS(t, cfg)
	e.rcv.On("/token", func(int, testkit.Call) testkit.Answer {
		return testkit.Answer{Body: `{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}`}
	})
	u, _ := url.Parse(e.rcv.URL("/"))
	e.port = u.Port()
	return e
}

// url returns the https URL of path on hooks.test.
func (e *egress) url(path string) string { return "https://" + hooksHost + ":" + e.port + path }

// judged is the address the proxy must be asked for: hooks.test's, resolved by the sender.
func (e *egress) judged() string { return "127.0.0.1:" + e.port }

// sender returns a sender trusting the test CA, resolving hooks.test with the test resolver, and
// going through proxy when it is not nil.
func (e *egress) sender(t *testing.T, policy netguard.Policy, proxy *testkit.Proxy) *Sender {
	t.Helper()
	policy.Resolver = testkit.Resolver(map[string][]netip.Addr{hooksHost: {netip.MustParseAddr("127.0.0.1")}})
	if proxy != nil {
		p, err := netguard.ParseProxy(proxy.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		policy.Proxy = p
	}
	s := NewSender(Config{Timeout: 5 * time.Second, Policy: policy, Roots: e.ca.Pool(), UserAgent: "test"})
	t.Cleanup(s.Close)
	return s
}

func sendCall(s *Sender, c Call) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.WebhookID == "" {
		c.WebhookID = "msg_1"
	}
	return s.Send(ctx, c)
}

// TestSenderThroughProxy: with a proxy the call and the token request go through it (the
// environment's proxy settings still ignored); the sender resolves hooks.test itself and asks for
// a tunnel to the judged address, with the proxy's credentials, while the TLS server name and the
// Host are still hooks.test.
func TestSenderThroughProxy(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	e := newEgress(t, false)
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: proxyPassword})
	s := e.sender(t, netguard.Policy{AllowPrivate: true}, proxy)
	for _, c := range []Call{
		{ConnectionKey: "plain", Secrets: event.HTTPSSecrets{URL: e.url("/hook"), Authorization: "a"}},
		{ConnectionKey: "oauth", Secrets: event.HTTPSSecrets{URL: e.url("/hook"),
			OAuth2: &event.OAuth2{TokenURL: e.url("/token"), ClientID: "c", ClientSecret: "s"}}},
	} {
		if res := sendCall(s, c); res.Status != 200 || res.Err != nil {
			t.Fatalf("%s: got %d %v, want 200", c.ConnectionKey, res.Status, res.Err)
		}
	}
	calls := e.rcv.Calls()
	if len(calls) != 3 || calls[1].Path != "/token" {
		t.Fatalf("the receiver got %v, want the hook, the token request and the hook", calls)
	}
	for _, c := range calls {
		if c.ServerName != hooksHost || c.Host != hooksHost+":"+e.port {
			t.Errorf("%s: server name %q and Host %q, want %s", c.Path, c.ServerName, c.Host, hooksHost)
		}
	}
	targets := proxy.Targets()
	if len(targets) == 0 || proxy.Tunnels() != len(targets) {
		t.Fatalf("the proxy opened %d tunnels for CONNECTs %v, want one for each", proxy.Tunnels(), targets)
	}
	for _, got := range targets {
		if got != e.judged() {
			t.Errorf("CONNECT %s, want the judged address %s", got, e.judged())
		}
	}
	if proxy.Others() != 0 {
		t.Errorf("the proxy got %d requests other than CONNECT", proxy.Others())
	}
}

// TestSenderProxyRefusesBeforeConnect: a destination the guard refuses (the URL's address, the
// address the name resolves to, the token URL's) is refused for good before the proxy is asked
// for anything.
func TestSenderProxyRefusesBeforeConnect(t *testing.T) {
	e := newEgress(t, false)
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{})
	s := e.sender(t, netguard.Policy{}, proxy)
	for _, c := range []Call{
		{Secrets: event.HTTPSSecrets{URL: e.url("/hook")}},
		{Secrets: event.HTTPSSecrets{URL: "https://169.254.169.254/latest/meta-data/"}},
		{Secrets: event.HTTPSSecrets{URL: "https://127.0.0.1:" + e.port + "/hook"}},
		{ConnectionKey: "oauth", Secrets: event.HTTPSSecrets{URL: "https://example.com/hook",
			OAuth2: &event.OAuth2{TokenURL: e.url("/token"), ClientID: "c", ClientSecret: "s"}}},
	} {
		res := sendCall(s, c)
		if !res.Forbidden || !errors.Is(res.Err, netguard.ErrForbiddenAddress) || Classify(event.OneWay, res).Verdict != Refused {
			t.Errorf("%s: got %+v, want a refused destination", c.Secrets.URL, res)
		}
	}
	if got := proxy.Targets(); len(got) != 0 || len(e.rcv.Calls()) != 0 {
		t.Fatalf("the proxy got CONNECTs %v and the receiver %d calls, want none", got, len(e.rcv.Calls()))
	}
}

// TestSenderProxyFailureRetried: a proxy that refuses the CONNECT, wants other credentials or is
// down fails the attempt as a transport error, retried, whose reason names the proxy and its
// answer and never its credentials.
func TestSenderProxyFailureRetried(t *testing.T) {
	e := newEgress(t, false)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()
	refusing := testkit.NewProxy(t, testkit.ProxyOptions{Refuse: true})
	locked := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: "another"})
	for _, tc := range []struct {
		name, proxyURL, reason string
	}{
		{"refused", refusing.URL(), "answered 403"},
		{"wrong credentials", "http://egress:" + proxyPassword + "@" + locked.Addr(), "answered 407"},
		{"down", "http://egress:" + proxyPassword + "@" + downAddr, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := netguard.ParseProxy(tc.proxyURL, nil)
			if err != nil {
				t.Fatal(err)
			}
			policy := netguard.Policy{AllowPrivate: true, Proxy: p,
				Resolver: testkit.Resolver(map[string][]netip.Addr{hooksHost: {netip.MustParseAddr("127.0.0.1")}})}
			s := NewSender(Config{Timeout: 5 * time.Second, Policy: policy, Roots: e.ca.Pool()})
			defer s.Close()
			res := sendCall(s, Call{Secrets: event.HTTPSSecrets{URL: e.url("/hook")}})
			var pe *netguard.ProxyError
			a := Classify(event.OneWay, res)
			if res.Forbidden || !errors.As(res.Err, &pe) || a.Verdict != Retry {
				t.Fatalf("got %+v (verdict %v), want a retried *ProxyError", res, a.Verdict)
			}
			if !strings.Contains(a.Reason, tc.reason) || strings.Contains(a.Reason, proxyPassword) || strings.Contains(a.Reason, "egress:") {
				t.Fatalf("reason %q: want %q without the proxy's credentials", a.Reason, tc.reason)
			}
		})
	}
	if n := len(e.rcv.Calls()); n != 0 {
		t.Fatalf("the receiver got %d calls, want none", n)
	}
}

// TestSenderClientCertificate: a receiver that requires a client certificate of the test CA
// (tls.RequireAndVerifyClientCert) is called, through the proxy, with the connection's
// certificate; the token request presents it too. Without one the call fails as a transport
// error (retried); a certificate and key that cannot be used fail it for good, without the key.
func TestSenderClientCertificate(t *testing.T) {
	e := newEgress(t, true)
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{})
	s := e.sender(t, netguard.Policy{AllowPrivate: true}, proxy)
	certPEM, keyPEM := e.ca.Client(t, "policyhooks-client")
	_, otherKey := e.ca.Client(t, "someone else")

	with := Call{ConnectionKey: "mtls", Secrets: event.HTTPSSecrets{URL: e.url("/hook"), Authorization: "a",
		ClientCertificate: certPEM, ClientKey: keyPEM}}
	if res := sendCall(s, with); res.Status != 200 || res.Err != nil {
		t.Fatalf("with the certificate: got %d %v, want 200", res.Status, res.Err)
	}
	oauth := with
	oauth.ConnectionKey = "mtls-oauth"
	oauth.Secrets.Authorization = ""
	oauth.Secrets.OAuth2 = &event.OAuth2{TokenURL: e.url("/token"), ClientID: "c", ClientSecret: "s"}
	if res := sendCall(s, oauth); res.Status != 200 || res.Err != nil {
		t.Fatalf("with the certificate and oauth2: got %d %v, want 200", res.Status, res.Err)
	}
	calls := e.rcv.Calls()
	if len(calls) != 3 || calls[1].Path != "/token" {
		t.Fatalf("the receiver got %v, want the hook, the token request and the hook", calls)
	}
	for _, c := range calls {
		if c.ClientCN != "policyhooks-client" {
			t.Errorf("%s: client certificate %q, want policyhooks-client", c.Path, c.ClientCN)
		}
	}
	for _, got := range proxy.Targets() {
		if got != e.judged() {
			t.Errorf("CONNECT %s, want %s: the connection's own transport goes through the proxy too", got, e.judged())
		}
	}
	if len(proxy.Targets()) == 0 {
		t.Error("the calls with a client certificate did not go through the proxy")
	}

	without := Call{ConnectionKey: "plain", Secrets: event.HTTPSSecrets{URL: e.url("/hook"), Authorization: "a"}}
	res := sendCall(s, without)
	if res.Err == nil || res.Forbidden || Classify(event.OneWay, res).Verdict != Retry {
		t.Fatalf("without a certificate: got %+v, want a retried transport error", res)
	}
	for _, tc := range []struct {
		name      string
		cert, key string
	}{
		{"another key", certPEM, otherKey},
		{"no key", certPEM, ""},
		{"no certificate", "", keyPEM},
		{"not PEM", "certificate", "key"},
	} {
		c := Call{ConnectionKey: "bad-" + tc.name, Secrets: event.HTTPSSecrets{URL: e.url("/hook"), Authorization: "a",
			ClientCertificate: tc.cert, ClientKey: tc.key}}
		res := sendCall(s, c)
		if !res.Forbidden || !errors.Is(res.Err, ErrClientCertificate) || Classify(event.OneWay, res).Verdict != Refused {
			t.Errorf("%s: got %+v, want a refused call", tc.name, res)
		}
		if res.Err != nil && (strings.Contains(res.Err.Error(), keyPEM[40:80]) || strings.Contains(res.Err.Error(), otherKey[40:80])) {
			t.Errorf("%s: the error shows the key: %v", tc.name, res.Err)
		}
	}
	if n := len(e.rcv.Calls()); n != 3 {
		t.Fatalf("the receiver got %d calls, want the 3 made with the certificate", n)
	}
}

// TestClientTransports: one client per connection and certificate, reused; a connection's new
// certificate replaces its client; the cache is bounded and drops clients unused for
// ClientTransportIdle.
func TestClientTransports(t *testing.T) {
	ca := testkit.NewCA(t, "cache test CA")
	type pair struct{ cert, key string }
	var pairs []pair
	for i := range 3 {
		c, k := ca.Client(t, fmt.Sprint("client ", i))
		pairs = append(pairs, pair{c, k})
	}
	var built []*x509.Certificate
	ct := newClientTransports(func(cert *tls.Certificate) *http.Client {
		built = append(built, cert.Leaf)
		return newClient(Config{}, cert)
	})
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ct.now = clock.Now
	get := func(conn string, p pair) *http.Client {
		t.Helper()
		c, err := ct.get(conn, certID(p.cert, p.key), p.cert, p.key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := get("a", pairs[0])
	if get("a", pairs[0]) != a || len(built) != 1 {
		t.Fatalf("the same connection and certificate built %d clients, want 1 reused", len(built))
	}
	if b := get("b", pairs[0]); b == a {
		t.Fatal("two connections share a client")
	}
	// While a certificate is rolled out, requests started before it present the old one: both
	// clients are kept and reused, alternating; a third certificate replaces the least recently used.
	clock.Advance(time.Millisecond)
	a2 := get("a", pairs[1])
	clock.Advance(time.Millisecond)
	if a2 == a || get("a", pairs[0]) != a || get("a", pairs[1]) != a2 || len(ct.entries) != 3 || len(built) != 3 {
		t.Fatalf("a new certificate of a: %d entries, %d built; want the old and the new client kept and reused (3 entries with b's)", len(ct.entries), len(built))
	}
	clock.Advance(time.Millisecond)
	get("a", pairs[0])
	clock.Advance(time.Millisecond)
	get("a", pairs[2])
	if _, ok := ct.entries["a\x00"+certID(pairs[1].cert, pairs[1].key)]; ok || len(ct.entries) != 3 {
		t.Fatalf("a third certificate of a: %d entries, the least recently used kept %v; want it dropped", len(ct.entries), ok)
	}
	delete(ct.entries, "b\x00"+certID(pairs[0].cert, pairs[0].key))
	for i := range maxClientTransports + 10 {
		clock.Advance(time.Millisecond)
		get(fmt.Sprint("conn-", i), pairs[0])
	}
	if n := len(ct.entries); n != maxClientTransports {
		t.Fatalf("%d entries, want the bound %d", n, maxClientTransports)
	}
	if _, ok := ct.entries["conn-0\x00"+certID(pairs[0].cert, pairs[0].key)]; ok {
		t.Fatal("the least recently used client was kept")
	}
	clock.Advance(ClientTransportIdle)
	get("fresh", pairs[1])
	if n := len(ct.entries); n != 1 {
		t.Fatalf("%d entries after %s unused, want only the fresh one", n, ClientTransportIdle)
	}
}
