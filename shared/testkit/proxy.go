package testkit

import (
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// ProxyOptions shape a Proxy.
type ProxyOptions struct {
	// User and Password, when User is set, are the Basic credentials every CONNECT must carry in
	// Proxy-Authorization; a CONNECT without them is answered 407.
	User, Password string
	// Refuse answers every CONNECT 403.
	Refuse bool
	// TLS serves the proxy over TLS (an https:// proxy) with httptest's certificate, the one a
	// Receiver's CAFile holds.
	TLS bool
}

// Proxy is a real HTTP CONNECT proxy: for each CONNECT it dials the address asked for, answers
// 200 and splices the two connections (502 when the address cannot be reached). It records every
// CONNECT target, in order, and counts the tunnels it opened. Other methods are answered 405.
type Proxy struct {
	srv  *httptest.Server
	opts ProxyOptions

	mu      sync.Mutex
	targets []string
	tunnels int
	others  int
	conns   []net.Conn
}

// NewProxy starts a Proxy on 127.0.0.1 and stops it, with its tunnels, when the test ends.
func NewProxy(t testing.TB, opts ProxyOptions) *Proxy {
	t.Helper()
	p := &Proxy{opts: opts}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	if opts.TLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(func() {
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
		p.srv.Close()
	})
	return p
}

// URL returns the proxy's URL, with its credentials when it has some.
func (p *Proxy) URL() string {
	u, _ := url.Parse(p.srv.URL)
	if p.opts.User != "" {
		u.User = url.UserPassword(p.opts.User, p.opts.Password)
	}
	return u.String()
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.srv.Listener.Addr().String() }

// Certificate returns the certificate of a TLS proxy (httptest's), nil for a plain one.
func (p *Proxy) Certificate() *x509.Certificate { return p.srv.Certificate() }

// Targets returns the target of every CONNECT so far, refused ones included, in order.
func (p *Proxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// Tunnels returns how many tunnels the proxy opened.
func (p *Proxy) Tunnels() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tunnels
}

// Others returns how many requests other than CONNECT the proxy got.
func (p *Proxy) Others() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.others
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.mu.Lock()
		p.others++
		p.mu.Unlock()
		http.Error(w, "only CONNECT", http.StatusMethodNotAllowed)
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, r.Host)
	p.mu.Unlock()
	if p.opts.User != "" {
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.opts.User+":"+p.opts.Password))
		if r.Header.Get("Proxy-Authorization") != want {
			w.Header().Set("Proxy-Authenticate", `Basic realm="testkit"`)
			w.WriteHeader(http.StatusProxyAuthRequired)
			return
		}
	}
	if p.opts.Refuse {
		http.Error(w, "CONNECT refused by policy", http.StatusForbidden)
		return
	}
	dst, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
	if err != nil {
		http.Error(w, "cannot reach the target", http.StatusBadGateway)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = dst.Close()
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = conn.Close()
		_ = dst.Close()
		return
	}
	p.mu.Lock()
	p.tunnels++
	p.conns = append(p.conns, conn, dst)
	p.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			_ = conn.Close()
			_ = dst.Close()
		})
	}
	go func() {
		defer done()
		_, _ = io.Copy(dst, rw) // the client's bytes, those already buffered first
	}()
	go func() {
		defer done()
		_, _ = io.Copy(conn, dst)
	}()
}
