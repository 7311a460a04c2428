package netguard

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestParseProxy checks the forms WEBHOOK_PROXY_URL accepts and that no error, String or
// formatted value shows the password.
func TestParseProxy(t *testing.T) {
	const pass = "PR0XY-S3CRET"
	for _, tc := range []struct {
		raw, want string // want: String(), "" when refused
		auth      bool
	}{
		{"http://proxy.internal:3128", "http://proxy.internal:3128", false},
		{"http://proxy.internal:3128/", "http://proxy.internal:3128", false},
		{"http://proxy.internal", "http://proxy.internal:80", false},
		{"HTTPS://proxy.internal", "https://proxy.internal:443", false},
		{"http://egress:" + pass + "@10.0.0.5:3128", "http://10.0.0.5:3128", true},
		{"http://egress@10.0.0.5:3128", "http://10.0.0.5:3128", true},
		{"http://[fd00::5]:3128", "http://[fd00::5]:3128", false},
		{"socks5://egress:" + pass + "@proxy.internal:1080", "", false},
		{"proxy.internal:3128", "", false},
		{"http://egress:" + pass + "@proxy.internal:3128/path", "", false},
		{"http://egress:" + pass + "@proxy.internal:3128?x=1", "", false},
		{"http://egress:" + pass + "@proxy.internal:3128#f", "", false},
		{"http://:" + pass + "@proxy.internal:3128", "", false},
		{"http://egress:" + pass + "@proxy.internal:0", "", false},
		{"http://egress:" + pass + "@proxy.internal:65536", "", false},
		{"http://egress:" + pass + "@proxy internal:3128", "", false},
		{"http://egress:" + pass + "@[fe80::1%25eth0]:3128", "", false},
		{"http://egress:" + pass + "@:3128", "", false},
	} {
		p, err := ParseProxy(tc.raw, nil)
		if tc.want == "" {
			if !errors.Is(err, ErrProxyURL) || strings.Contains(err.Error(), pass) {
				t.Errorf("%s: error %v, want an ErrProxyURL without the password", strings.ReplaceAll(tc.raw, pass, "***"), err)
			}
			continue
		}
		if err != nil || p.String() != tc.want || p.HasCredentials() != tc.auth {
			t.Errorf("%s: got %v (credentials %v), %v; want %s (credentials %v)", tc.raw, p, p.HasCredentials(), err, tc.want, tc.auth)
			continue
		}
		shown := fmt.Sprintf("%v %+v %#v %s %v", p, p, p, p, struct{ P *Proxy }{p})
		if strings.Contains(shown, pass) || strings.Contains(shown, "egress") {
			t.Errorf("formatting the proxy shows its credentials: %s", shown)
		}
	}
}

// TestReadProxy: WEBHOOK_PROXY_URL becomes the policy's proxy; a bad one is reported under its
// name without its password.
func TestReadProxy(t *testing.T) {
	read := func(v string) (Settings, error) {
		r := envconfig.New(func(k string) string { return map[string]string{"WEBHOOK_PROXY_URL": v}[k] })
		s := Read(r)
		return s, r.Err()
	}
	s, err := read("http://egress:PR0XY-S3CRET@proxy.internal:3128")
	if err != nil || s.WebhookProxy == nil || s.Policy().Proxy != s.WebhookProxy || s.WebhookProxy.String() != "http://proxy.internal:3128" {
		t.Fatalf("got %v (policy proxy %v), %v; want the proxy", s.WebhookProxy, s.Policy().Proxy, err)
	}
	if s, err := read(""); err != nil || s.WebhookProxy != nil || s.Policy().Proxy != nil {
		t.Fatalf("unset: got %v, %v; want no proxy", s.WebhookProxy, err)
	}
	_, err = read("ftp://egress:PR0XY-S3CRET@proxy.internal:3128")
	if err == nil || !strings.Contains(err.Error(), "WEBHOOK_PROXY_URL") || strings.Contains(err.Error(), "PR0XY-S3CRET") {
		t.Fatalf("bad scheme: %v, want an error naming the variable without the password", err)
	}
}

// echoServer accepts connections on 127.0.0.1 and writes back what it reads.
func echoServer(t *testing.T) (port uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// proxyPolicy is a policy allowing private networks whose resolver knows hooks.test (addrs) and
// whose connections go through the proxy at rawURL.
func proxyPolicy(t *testing.T, rawURL string, roots *x509.CertPool, addrs ...netip.Addr) Policy {
	t.Helper()
	p, err := ParseProxy(rawURL, roots)
	if err != nil {
		t.Fatal(err)
	}
	return Policy{AllowPrivate: true, Proxy: p,
		Resolver: testkit.Resolver(map[string][]netip.Addr{"hooks.test": addrs})}
}

func echo(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("through the tunnel: read %q, %v; want the echo", line, err)
	}
}

var loopback = netip.MustParseAddr("127.0.0.1")

// TestDialThroughProxy: the dialer resolves and judges the destination itself and asks a real
// CONNECT proxy for a tunnel to the judged address (never the name), with Basic credentials, over
// plain TCP or TLS; the proxy's own address is not judged.
func TestDialThroughProxy(t *testing.T) {
	port := echoServer(t)
	target := fmt.Sprintf("127.0.0.1:%d", port)
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			proxy := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: "PR0XY-S3CRET", TLS: tls})
			var roots *x509.CertPool
			if tls {
				roots = x509.NewCertPool()
				roots.AddCert(proxy.Certificate())
			}
			p := proxyPolicy(t, proxy.URL(), roots, loopback)
			// The proxy is at an IP address, which an allow-list refuses: it is not judged.
			p.AllowedHosts = []string{"hooks.test"}
			c, err := p.Dialer(2*time.Second).DialContext(context.Background(), "tcp", fmt.Sprintf("hooks.test:%d", port))
			if err != nil {
				t.Fatalf("dial through the proxy: %v", err)
			}
			echo(t, c)
			if got := proxy.Targets(); !slices.Equal(got, []string{target}) || proxy.Tunnels() != 1 {
				t.Fatalf("CONNECT targets %v (%d tunnels), want [%s] and 1", got, proxy.Tunnels(), target)
			}
		})
	}
}

// TestDialThroughProxyRefusals: a destination the guard refuses is refused before any CONNECT;
// a proxy that refuses, asks for other credentials, is down or never answers gives a
// *ProxyError (a transport error, not a refused destination) without its credentials, in time;
// the next address is tried only when the proxy could not reach one.
func TestDialThroughProxyRefusals(t *testing.T) {
	port := echoServer(t)
	dest := fmt.Sprintf("hooks.test:%d", port)
	dial := func(p Policy, timeout time.Duration) error {
		c, err := p.Dialer(timeout).DialContext(context.Background(), "tcp", dest)
		if err == nil {
			echo(t, c)
		}
		return err
	}

	t.Run("refused destination", func(t *testing.T) {
		proxy := testkit.NewProxy(t, testkit.ProxyOptions{})
		metadata := netip.MustParseAddr("169.254.169.254")
		private := proxyPolicy(t, proxy.URL(), nil, loopback)
		private.AllowPrivate = false
		denied := proxyPolicy(t, proxy.URL(), nil, loopback)
		denied.Denied = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		for _, p := range []Policy{private, denied, proxyPolicy(t, proxy.URL(), nil, metadata)} {
			if err := dial(p, time.Second); !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("got %v, want ErrForbiddenAddress", err)
			}
		}
		for _, literal := range []string{"127.0.0.1", "[::1]", "2130706433"} {
			p := proxyPolicy(t, proxy.URL(), nil)
			p.AllowPrivate = false
			if _, err := p.Dialer(time.Second).DialContext(context.Background(), "tcp", literal+":443"); !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("%s: got %v, want ErrForbiddenAddress", literal, err)
			}
		}
		if n := len(proxy.Targets()); n != 0 {
			t.Fatalf("the proxy got %d CONNECTs, want none", n)
		}
	})

	t.Run("mixed addresses", func(t *testing.T) {
		// The refused address is skipped; the allowed one is asked for.
		proxy := testkit.NewProxy(t, testkit.ProxyOptions{})
		if err := dial(proxyPolicy(t, proxy.URL(), nil, netip.MustParseAddr("169.254.169.254"), loopback), time.Second); err != nil {
			t.Fatal(err)
		}
		if got := proxy.Targets(); len(got) != 1 || got[0] != fmt.Sprintf("127.0.0.1:%d", port) {
			t.Fatalf("targets %v, want the allowed address only", got)
		}
	})

	t.Run("unreachable address then the next", func(t *testing.T) {
		proxy := testkit.NewProxy(t, testkit.ProxyOptions{})
		// Nothing listens on 127.0.0.2 (the whole of 127/8 is loopback): the proxy answers 502.
		if err := dial(proxyPolicy(t, proxy.URL(), nil, netip.MustParseAddr("127.0.0.2"), loopback), time.Second); err != nil {
			t.Fatal(err)
		}
		want := []string{fmt.Sprintf("127.0.0.2:%d", port), fmt.Sprintf("127.0.0.1:%d", port)}
		if got := proxy.Targets(); !slices.Equal(got, want) {
			t.Fatalf("targets %v, want %v", got, want)
		}
	})

	for _, tc := range []struct {
		name    string
		opts    testkit.ProxyOptions
		url     func(*testkit.Proxy) string
		status  int
		connect int // CONNECTs the proxy sees
	}{
		{"refused", testkit.ProxyOptions{Refuse: true}, nil, 403, 1},
		{"wrong credentials", testkit.ProxyOptions{User: "egress", Password: "other"}, func(p *testkit.Proxy) string {
			return "http://egress:PR0XY-S3CRET@" + p.Addr()
		}, 407, 1},
		{"no credentials", testkit.ProxyOptions{User: "egress", Password: "PR0XY-S3CRET"}, func(p *testkit.Proxy) string {
			return "http://" + p.Addr()
		}, 407, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := testkit.NewProxy(t, tc.opts)
			raw := proxy.URL()
			if tc.url != nil {
				raw = tc.url(proxy)
			}
			// Two addresses: a refusal is not a reason to try the next.
			err := dial(proxyPolicy(t, raw, nil, netip.MustParseAddr("127.0.0.2"), loopback), time.Second)
			var pe *ProxyError
			if !errors.As(err, &pe) || pe.Status != tc.status || errors.Is(err, ErrForbiddenAddress) ||
				strings.Contains(err.Error(), "PR0XY-S3CRET") || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Fatalf("got %v, want a *ProxyError with status %d, without the password", err, tc.status)
			}
			if n := len(proxy.Targets()); n != tc.connect {
				t.Fatalf("the proxy got %d CONNECTs, want %d", n, tc.connect)
			}
		})
	}

	t.Run("proxy down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = dial(proxyPolicy(t, "http://egress:PR0XY-S3CRET@"+addr, nil, loopback), time.Second)
		var pe *ProxyError
		if !errors.As(err, &pe) || pe.Status != 0 || pe.Err == nil || strings.Contains(err.Error(), "PR0XY-S3CRET") {
			t.Fatalf("got %v, want a *ProxyError without an answer", err)
		}
	})

	t.Run("proxy never answers", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c) }()
			}
		}()
		start := time.Now()
		err = dial(proxyPolicy(t, "http://"+ln.Addr().String(), nil, loopback), 300*time.Millisecond)
		var pe *ProxyError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("got %v, want a *ProxyError timing out", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("the dial took %s, want it bounded by the connect timeout", d)
		}
	})
}

// TestDialThroughProxyEarlyBytes: bytes of the tunnel that arrive with the proxy's answer are
// read first from the tunnel.
func TestDialThroughProxyEarlyBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nhello from the destination\n")
		time.Sleep(time.Second)
	}()
	c, err := proxyPolicy(t, "http://"+ln.Addr().String(), nil, loopback).Dialer(time.Second).
		DialContext(context.Background(), "tcp", "hooks.test:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello from the destination\n" {
		t.Fatalf("read %q, %v; want the destination's first line", line, err)
	}
}
