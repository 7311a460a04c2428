package connection

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestVerifyGuard checks the verification dial (SPEC §2, §6): a destination the guard refuses is
// never connected to, whether its host is an address in any spelling or a name resolving to one;
// an allowed one is dialled directly (no proxy, whatever the environment says) and sent no HTTP
// request, so there is no redirect to follow.
func TestVerifyGuard(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_, _ = c.Write([]byte("not TLS\r\n"))
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	refuse := &Service{guard: netguard.Policy{AllowHTTP: true}}
	for _, host := range []string{"127.0.0.1", "localhost", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "[::1%25lo]"} {
		err := refuse.verify(context.Background(), "https://"+host+":"+port+"/hook", nil)
		if !errors.Is(err, netguard.ErrForbiddenAddress) {
			t.Errorf("verify %s: %v, want ErrForbiddenAddress", host, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("refused destinations got %d connections, want 0", n)
	}
	allow := &Service{guard: netguard.Policy{AllowHTTP: true, AllowPrivate: true}}
	if err := allow.verify(context.Background(), "http://127.0.0.1:"+port+"/hook", nil); err != nil {
		t.Fatalf("verify with private networks allowed: %v", err)
	}
	if err := allow.verify(context.Background(), "https://127.0.0.1:"+port+"/hook", nil); err == nil ||
		!strings.Contains(err.Error(), "tls handshake") {
		t.Fatalf("verify https against a plain listener: %v, want a TLS handshake error", err)
	}
	ln.Close()
	if accepted.Load() != 2 {
		t.Errorf("got %d connections, want 2 (direct, not through the proxy)", accepted.Load())
	}
}

// TestVerifyClientCertificate: against a server requiring a client certificate of its CA
// (tls.RequireAndVerifyClientCert), verify succeeds with the connection's certificate and fails
// without one or with another CA's, in TLS 1.3 (where the server's refusal comes after the
// client's side of the handshake) and TLS 1.2, saying the server asked for one.
func TestVerifyClientCertificate(t *testing.T) {
	ca := testkit.NewCA(t, "verify CA")
	certPEM, keyPEM := ca.Client(t, "policyhooks")
	other := testkit.NewCA(t, "another CA")
	otherCert, otherKey := other.Client(t, "stranger")
	pair := func(c, k string) *tls.Certificate {
		cert, err := tls.X509KeyPair([]byte(c), []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}
	s := &Service{guard: netguard.Policy{AllowPrivate: true}, roots: ca.Pool()}
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		rc := testkit.NewReceiverTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MaxVersion: version})
		for _, tc := range []struct {
			name string
			cert *tls.Certificate
			want string // in the error; "" for success
		}{
			{"the connection's certificate", pair(certPEM, keyPEM), ""},
			{"no certificate", nil, "the server asked for a client certificate; the secrets have none"},
			{"another CA's certificate", pair(otherCert, otherKey), "unknown certificate authority"},
		} {
			err := s.verify(context.Background(), rc.URL("/hook"), tc.cert)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("%s, %s: %v, want %q", tls.VersionName(version), tc.name, err, tc.want)
			}
		}
		if n := len(rc.Calls()); n != 0 {
			t.Errorf("the receiver got %d HTTP requests, want none", n)
		}
	}
	// A server that does not ask for a certificate verifies with or without one, at once.
	rc := testkit.NewReceiverTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")}})
	start := time.Now()
	for _, cert := range []*tls.Certificate{nil, pair(certPEM, keyPEM)} {
		if err := s.verify(context.Background(), rc.URL("/hook"), cert); err != nil {
			t.Errorf("no client certificate asked for: %v", err)
		}
	}
	if d := time.Since(start); d >= clientCertProbe {
		t.Errorf("verify took %s without a certificate request, want no wait for a verdict", d)
	}
}

// TestVerifyThroughProxy: with a proxy, verify dials as the calls do: the destination is resolved
// and judged here and the proxy asked for a tunnel to the judged address; a refused destination
// sends no CONNECT; a proxy that refuses fails the verification, naming the proxy without its
// credentials.
func TestVerifyThroughProxy(t *testing.T) {
	ca := testkit.NewCA(t, "verify CA")
	rc := testkit.NewReceiverTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "hooks.test")}})
	u, _ := url.Parse(rc.URL("/"))
	hook := "https://hooks.test:" + u.Port() + "/hook"
	service := func(proxyURL string, allowPrivate bool) *Service {
		p, err := netguard.ParseProxy(proxyURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &Service{roots: ca.Pool(), guard: netguard.Policy{AllowPrivate: allowPrivate, Proxy: p,
			Resolver: testkit.Resolver(map[string][]netip.Addr{"hooks.test": {netip.MustParseAddr("127.0.0.1")}})}}
	}
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: "PR0XY-S3CRET"})
	if err := service(proxy.URL(), true).verify(context.Background(), hook, nil); err != nil {
		t.Fatalf("verify through the proxy: %v", err)
	}
	if got := proxy.Targets(); len(got) != 1 || got[0] != "127.0.0.1:"+u.Port() {
		t.Fatalf("CONNECT targets %v, want [127.0.0.1:%s]", got, u.Port())
	}
	if err := service(proxy.URL(), false).verify(context.Background(), hook, nil); !errors.Is(err, netguard.ErrForbiddenAddress) {
		t.Fatalf("a private destination: %v, want ErrForbiddenAddress", err)
	}
	if n := len(proxy.Targets()); n != 1 {
		t.Fatalf("the refused destination sent a CONNECT (%d in all)", n)
	}
	refusing := testkit.NewProxy(t, testkit.ProxyOptions{Refuse: true})
	err := service("http://egress:PR0XY-S3CRET@"+refusing.Addr(), true).verify(context.Background(), hook, nil)
	var pe *netguard.ProxyError
	if !errors.As(err, &pe) || pe.Status != 403 || strings.Contains(err.Error(), "PR0XY-S3CRET") {
		t.Fatalf("a refusing proxy: %v, want a *ProxyError 403 without the password", err)
	}
}
