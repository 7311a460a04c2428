package netguard

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxProxyAnswer bounds the status line and headers of a proxy's answer to CONNECT.
const maxProxyAnswer = 64 << 10

// ErrProxyURL reports a WEBHOOK_PROXY_URL that is not http://host:port or https://host:port with
// optional user information. Its messages never quote the URL, which may hold a password.
var ErrProxyURL = errors.New("proxy url not allowed")

// Proxy is the HTTP CONNECT proxy that webhook connections go through (WEBHOOK_PROXY_URL, SPEC §6).
// The operator configures it and it is trusted: its own address is not judged by the policy,
// while every destination still is, here, before the proxy is asked for a tunnel to the judged
// address. Its credentials are sent only as the CONNECT's Proxy-Authorization; String, GoString
// and every error name the proxy by scheme, host and port alone.
type Proxy struct {
	scheme string // "http" or "https"
	addr   string // host:port
	host   string // the host, the TLS server name of an https proxy
	auth   string // the Proxy-Authorization value, "" without credentials
	roots  *x509.CertPool
}

// ParseProxy parses raw, an http:// or https:// URL of a host and an optional port (80 or 443 by
// default), optionally with user information (sent as Basic credentials), and nothing else: no
// path but "/", no query, no fragment. roots are the trusted roots of an https proxy's certificate
// (nil: the system roots). An error is an ErrProxyURL whose message never quotes raw.
func ParseProxy(raw string, roots *x509.CertPool) (*Proxy, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL such as http://proxy.internal:3128", ErrProxyURL)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: the scheme must be http or https", ErrProxyURL)
	case u.Opaque != "" || u.Hostname() == "":
		return nil, fmt.Errorf("%w: no host; write it as http://host:port", ErrProxyURL)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return nil, fmt.Errorf("%w: a path, query or fragment is not allowed; write it as http://host:port", ErrProxyURL)
	case u.User != nil && u.User.Username() == "":
		return nil, fmt.Errorf("%w: the user information has no user name", ErrProxyURL)
	}
	if strings.Contains(u.Hostname(), "%") {
		return nil, fmt.Errorf("%w: an IPv6 zone is not allowed in the host", ErrProxyURL)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%w: the port must be from 1 to 65535", ErrProxyURL)
	}
	p := &Proxy{scheme: u.Scheme, addr: net.JoinHostPort(u.Hostname(), port), host: u.Hostname(), roots: roots}
	if u.User != nil {
		pass, _ := u.User.Password()
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
	}
	return p, nil
}

// String returns the proxy's scheme, host and port, without its credentials.
func (p *Proxy) String() string {
	if p == nil {
		return ""
	}
	return p.scheme + "://" + p.addr
}

// GoString is String, so that %#v does not print the credentials either.
func (p *Proxy) GoString() string { return "netguard.Proxy(" + p.String() + ")" }

// HasCredentials reports whether CONNECT requests carry Proxy-Authorization.
func (p *Proxy) HasCredentials() bool { return p != nil && p.auth != "" }

// ProxyError is a failure to open a tunnel through the proxy: the proxy could not be reached, or
// it answered the CONNECT with another status than 200. It is a transport error (a retry may
// succeed). Its message names the proxy by scheme, host and port and the address asked for, and
// never holds the proxy's credentials or its answer's body.
type ProxyError struct {
	// Proxy is the proxy's scheme, host and port.
	Proxy string
	// Target is the judged address and port the tunnel was asked for.
	Target string
	// Status is the proxy's answer to CONNECT, 0 when there was none.
	Status int
	// Err is why there was no answer; nil for an answer refused for its status alone.
	Err error
}

// Error says what the proxy did, naming it by scheme, host and port (never its credentials).
func (e *ProxyError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("proxy %s answered %d %s to CONNECT %s", e.Proxy, e.Status, http.StatusText(e.Status), e.Target)
	}
	return fmt.Sprintf("proxy %s: CONNECT %s: %v", e.Proxy, e.Target, e.Err)
}

// Unwrap returns Err.
func (e *ProxyError) Unwrap() error { return e.Err }

// unreachable reports whether the proxy said it could not reach the target (502, 503, 504): the
// next address of the same host may do.
func (e *ProxyError) unreachable() bool {
	return e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable ||
		e.Status == http.StatusGatewayTimeout
}

// dialProxied connects to address (host:port, its host judged by DialContext) through the proxy:
// it resolves the host itself, judges every address as Control does, and asks the proxy for a
// tunnel to each allowed address in turn, literally, so that the proxy resolves nothing and cannot
// be steered elsewhere; it moves to the next address only when the proxy could not reach one. An
// address with an IPv6 zone is refused: the zone means nothing to the proxy.
func (d *Dialer) dialProxied(ctx context.Context, network, address string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrForbiddenAddress, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: %q has no valid port", ErrForbiddenAddress, address)
	}
	addrs, err := d.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	var allowed []netip.Addr
	var refusal error
	for _, a := range addrs {
		err := d.policy.checkAddr(a)
		if err == nil && a.Zone() != "" {
			err = fmt.Errorf("%w: %s has an IPv6 zone, which a proxy cannot reach", ErrForbiddenAddress, a)
		}
		if err != nil {
			refusal = cmp.Or(refusal, err)
			continue
		}
		allowed = append(allowed, a.Unmap())
	}
	if len(allowed) == 0 {
		return nil, cmp.Or(refusal, fmt.Errorf("%w: %s resolves to no address", ErrForbiddenAddress, host))
	}
	var last error
	for _, a := range allowed {
		conn, err := d.tunnel(ctx, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		last = err
		var pe *ProxyError
		if !errors.As(err, &pe) || !pe.unreachable() {
			break
		}
	}
	return nil, last
}

// resolve returns the addresses of host: itself when it is an IP address in any spelling
// checkHost judges, else what the policy's resolver answers for network's family.
func (d *Dialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if labels := strings.Split(name, "."); numeric(labels[len(labels)-1]) {
		if ip, ok := parseIPv4(name); ok {
			return []netip.Addr{ip}, nil
		}
	}
	family := "ip"
	switch network {
	case "tcp4":
		family = "ip4"
	case "tcp6":
		family = "ip6"
	}
	r := d.policy.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

// tunnel connects to the proxy (TLS for an https proxy, trusting its roots) and asks it for a
// tunnel to target, within the connect timeout. The connection it returns is the tunnel, ready
// for the destination's TLS handshake.
func (d *Dialer) tunnel(ctx context.Context, target string) (net.Conn, error) {
	p := d.policy.Proxy
	fail := func(status int, err error) (net.Conn, error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = fmt.Errorf("timeout: %w", err)
		}
		return nil, &ProxyError{Proxy: p.String(), Target: target, Status: status, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, d.dialer.Timeout)
	defer cancel()
	conn, err := d.proxyDialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return fail(0, err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if p.scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: p.host, RootCAs: p.roots, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(0, fmt.Errorf("tls handshake with the proxy: %w", err))
		}
		conn = tc
	}
	// The exchange below ends when ctx does: its deadline, or a caller that gives up.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target,
		Header: http.Header{"User-Agent": {""}}}
	if p.auth != "" {
		req.Header.Set("Proxy-Authorization", p.auth)
	}
	if err := req.Write(conn); err != nil {
		stop()
		return fail(0, cmp.Or(ctx.Err(), err))
	}
	br := bufio.NewReader(&io.LimitedReader{R: conn, N: maxProxyAnswer})
	resp, err := http.ReadResponse(br, req)
	if !stop() || ctx.Err() != nil {
		return fail(0, cmp.Or(ctx.Err(), context.Canceled))
	}
	if err != nil {
		return fail(0, fmt.Errorf("read the proxy's answer: %w", err))
	}
	// The body of an answer other than 200 is not read: a proxy's page is no reason to record.
	if resp.StatusCode != http.StatusOK {
		return fail(resp.StatusCode, nil)
	}
	_ = conn.SetDeadline(time.Time{})
	ok = true
	if n := br.Buffered(); n > 0 {
		// Bytes of the tunnel read with the answer (a destination that speaks first).
		early, _ := br.Peek(n)
		return &prefixedConn{Conn: conn, prefix: append([]byte(nil), early...)}, nil
	}
	return conn, nil
}

// prefixedConn is a tunnel whose first bytes were read with the proxy's answer.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

// Read returns the bytes that came with the proxy's answer first, then the connection's.
func (c *prefixedConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
