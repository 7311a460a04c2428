// Package netguard guards outgoing webhook connections against server-side request forgery (SPEC
// §6): it checks webhook URLs, including hosts that are IP addresses in any spelling a resolver
// accepts, and refuses at connect time, after DNS resolution, every address that is not public,
// also when connections go through the operator's HTTP CONNECT proxy (Proxy). It also reads the
// webhook network settings once for every service (Read).
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenURL reports a webhook URL that is malformed: not an absolute URL of an allowed
// scheme, with user information, or with a host that is neither a host name nor an IP address
// that can be judged.
var ErrForbiddenURL = errors.New("url not allowed")

// ErrForbiddenAddress reports a destination the policy refuses: an address that is not public or
// has an IPv6 zone (unless private networks are allowed), an address in WEBHOOK_DENIED_CIDRS, or a
// host not in WEBHOOK_ALLOWED_HOSTS.
var ErrForbiddenAddress = errors.New("destination not allowed")

// nonPublic4 are the IPv4 ranges that are not public unicast (IANA special-purpose registry).
var nonPublic4 = mustPrefixes(
	"0.0.0.0/8",       // "this network", unspecified
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments (also Oracle's metadata 192.0.0.192)
	"192.0.2.0/24",    // documentation
	"192.88.99.0/24",  // 6to4 relay anycast (deprecated)
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation
	"203.0.113.0/24",  // documentation
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, limited broadcast 255.255.255.255
)

// IPv6: only global unicast 2000::/3 is public, less the ranges below. Outside it are the
// unspecified and loopback addresses, IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96,
// discard 100::/64, local-use NAT64 64:ff9b:1::/48, SRv6 5f00::/16, unique local fc00::/7 (AWS
// metadata fd00:ec2::254), link-local fe80::/10, site-local fec0::/10 and multicast ff00::/8. The
// well-known NAT64 prefix 64:ff9b::/96 and 6to4 2002::/16 are judged by the IPv4 address they
// carry (IPv4-mapped addresses too, by Unmap).
var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nonPublic6     = mustPrefixes(
		"2001::/23",     // IETF protocol assignments: Teredo 2001::/32 (refused whole), benchmarking, ORCHID
		"2001:db8::/32", // documentation
		"3fff::/20",     // documentation
	)
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local     = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour      = netip.MustParsePrefix("2002::/16")
	teredo         = netip.MustParsePrefix("2001::/32")
	ipv4Compat     = netip.MustParsePrefix("::/96")
	ipv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96") // SIIT, RFC 2765; Unmap does not apply
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// IsPublic reports whether ip is a public unicast address. An address with an IPv6 zone is never
// public: a zone only makes sense for link-local and other scoped addresses. IPv4-mapped
// addresses, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) are judged by the IPv4 address they carry;
// Teredo (2001::/32) is refused whole.
func IsPublic(ip netip.Addr) bool {
	if !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	if ip.Is4() {
		for _, p := range nonPublic4 {
			if p.Contains(ip) {
				return false
			}
		}
		return true
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return IsPublic(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(ip):
		return IsPublic(netip.AddrFrom4([4]byte(b[2:6])))
	case !globalUnicast6.Contains(ip):
		return false
	}
	for _, p := range nonPublic6 {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// carried returns ip without its zone, unmapped, and every IPv4 address it carries: IPv4-compatible
// and -translated, NAT64 (well-known and local-use, RFC 6052), 6to4, and Teredo's server and client.
// WEBHOOK_DENIED_CIDRS is matched against all of them.
func carried(ip netip.Addr) []netip.Addr {
	ip = ip.WithZone("").Unmap()
	out := []netip.Addr{ip}
	if !ip.Is6() {
		return out
	}
	b := ip.As16()
	v4 := func(a, b, c, d byte) { out = append(out, netip.AddrFrom4([4]byte{a, b, c, d})) }
	switch {
	case ipv4Compat.Contains(ip), nat64.Contains(ip), ipv4Translated.Contains(ip):
		v4(b[12], b[13], b[14], b[15])
	case nat64Local.Contains(ip): // a /48 prefix: bits 64-71 are the reserved "u" octet
		v4(b[6], b[7], b[9], b[10])
	case sixToFour.Contains(ip):
		v4(b[2], b[3], b[4], b[5])
	case teredo.Contains(ip):
		v4(b[4], b[5], b[6], b[7])
		v4(^b[12], ^b[13], ^b[14], ^b[15])
	}
	return out
}

// Policy says which destinations webhook connections may reach. Settings.Policy builds it from the
// environment.
type Policy struct {
	// AllowHTTP permits plain http:// URLs.
	AllowHTTP bool
	// AllowPrivate permits addresses that are not public, zoned IPv6 addresses included.
	AllowPrivate bool
	// AllowedHosts, when not empty, are the only hosts URLs may name: lower-case host names, each
	// matched exactly or, written "*.example.com", any name below example.com. An IP address
	// never matches.
	AllowedHosts []string
	// Denied are refused even when AllowPrivate is set.
	Denied []netip.Prefix
	// Resolver resolves host names when dialling; nil is net.DefaultResolver. Tests point it at a
	// DNS server of their own.
	Resolver *net.Resolver
	// Proxy, when not nil, is the trusted HTTP CONNECT proxy every connection goes through
	// (WEBHOOK_PROXY_URL): the destination is still resolved and judged here, and the proxy asked
	// for a tunnel to the judged address; the proxy's own address is not judged.
	Proxy *Proxy
}

// CheckURL checks that raw is an absolute https URL (or http when allowed) without user
// information, whose host is a host name or an IP address. A malformed URL is an ErrForbiddenURL.
// An IP address in any spelling a resolver accepts (127.1, 2130706433, 0x7f.1, 0177.0.0.1,
// [::ffff:7f00:1], [::1%25lo]) is judged as the address it means; a refused one, or a host not in
// AllowedHosts, is an ErrForbiddenAddress. Other host names are judged when dialled.
func (p Policy) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenURL, err)
	}
	switch {
	case u.Scheme == "https" && u.Opaque == "":
	case u.Scheme == "http" && u.Opaque == "" && p.AllowHTTP:
	case u.Scheme == "http" && u.Opaque == "":
		return fmt.Errorf("%w: http is not allowed, use https", ErrForbiddenURL)
	default:
		return fmt.Errorf("%w: must be an absolute https URL", ErrForbiddenURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user information is not allowed in the URL", ErrForbiddenURL)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrForbiddenURL)
	}
	return p.checkHost(u.Hostname())
}

// checkHost judges the host of a URL, or of an address being dialled, as CheckURL describes.
func (p Policy) checkHost(host string) error {
	if strings.Contains(host, ":") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return fmt.Errorf("%w: host %q is not a valid IPv6 address", ErrForbiddenURL, host)
		}
		return p.checkLiteral(ip)
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || strings.TrimLeft(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return fmt.Errorf("%w: host %q is not a host name (ASCII letters, digits, '-', '_'; IDNs as punycode) nor an IP address", ErrForbiddenURL, host)
		}
	}
	if numeric(labels[len(labels)-1]) {
		// A name whose last label is a number is an IPv4 address to inet_aton(3) and to browsers.
		ip, ok := parseIPv4(name)
		if !ok {
			return fmt.Errorf("%w: host %q is an IPv4 address in a form that cannot be judged", ErrForbiddenURL, host)
		}
		return p.checkLiteral(ip)
	}
	if !p.hostAllowed(name) {
		return fmt.Errorf("%w: host %q is not in WEBHOOK_ALLOWED_HOSTS", ErrForbiddenAddress, host)
	}
	return nil
}

// checkLiteral judges a host that is an IP address.
func (p Policy) checkLiteral(ip netip.Addr) error {
	if len(p.AllowedHosts) > 0 {
		return fmt.Errorf("%w: IP address %s is not in WEBHOOK_ALLOWED_HOSTS", ErrForbiddenAddress, ip)
	}
	return p.checkAddr(ip)
}

// cloudMetadata are the instance metadata and platform endpoints of the major clouds. They hand out
// credentials, so they are refused always, WEBHOOK_ALLOW_PRIVATE_NETWORKS or not: a receiver on a
// private network is a use case, a webhook to the metadata service never is.
var cloudMetadata = mustPrefixes(
	"169.254.169.254/32", // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
	"169.254.170.2/32",   // AWS ECS task credentials
	"169.254.170.23/32",  // AWS EKS pod identity
	"100.100.100.200/32", // Alibaba Cloud
	"168.63.129.16/32",   // Azure platform (WireServer), a public address
	"fd00:ec2::254/128",  // AWS IPv6 metadata
	"fd00:ec2::23/128",   // AWS EKS pod identity, IPv6
)

// checkAddr judges an address: cloud metadata and denied ranges first, then (unless private
// networks are allowed) zones and non-public addresses.
func (p Policy) checkAddr(ip netip.Addr) error {
	for _, a := range carried(ip) {
		for _, m := range cloudMetadata {
			if m.Contains(a) {
				return fmt.Errorf("%w: %s is a cloud metadata endpoint", ErrForbiddenAddress, ip)
			}
		}
		for _, d := range p.Denied {
			if d.Contains(a) {
				return fmt.Errorf("%w: %s is in WEBHOOK_DENIED_CIDRS (%s)", ErrForbiddenAddress, ip, d)
			}
		}
	}
	switch {
	case p.AllowPrivate:
		return nil
	case ip.Zone() != "":
		return fmt.Errorf("%w: %s has an IPv6 zone, which is not public", ErrForbiddenAddress, ip)
	case !IsPublic(ip):
		return fmt.Errorf("%w: %s is not public", ErrForbiddenAddress, ip.Unmap())
	}
	return nil
}

// hostAllowed reports whether the lower-case name without a trailing dot matches AllowedHosts.
func (p Policy) hostAllowed(name string) bool {
	if len(p.AllowedHosts) == 0 {
		return true
	}
	for _, h := range p.AllowedHosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			if strings.HasSuffix(name, suffix) {
				return true
			}
		} else if name == h {
			return true
		}
	}
	return false
}

// numeric reports whether a label is a number to inet_aton(3) or the WHATWG URL parser: decimal
// digits, or 0x followed by hexadecimal digits.
func numeric(label string) bool {
	if rest, ok := strings.CutPrefix(label, "0x"); ok {
		return strings.TrimLeft(rest, "0123456789abcdef") == ""
	}
	return label != "" && strings.TrimLeft(label, "0123456789") == ""
}

// parseIPv4 parses a lower-case s the way inet_aton(3) does: one to four parts separated by dots,
// each decimal, octal (leading 0) or hexadecimal (leading 0x); the last part fills the bytes left
// (a.b.c.d, a.b.c with c of 16 bits, a.b with b of 24 bits, a of 32 bits). It refuses an empty part
// or 0x without digits, which implementations read differently.
func parseIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint32
	for i, part := range parts {
		base := 10
		switch {
		case strings.HasPrefix(part, "0x"):
			base, part = 16, part[2:]
		case len(part) > 1 && part[0] == '0':
			base, part = 8, part[1:]
		}
		bits, shift := 8, 8*(3-i)
		if i == len(parts)-1 {
			bits, shift = 8*(5-len(parts)), 0
		}
		// ParseUint with a base is strict: no sign, no prefix, no underscores.
		n, err := strconv.ParseUint(part, base, bits)
		if part == "" || err != nil {
			return netip.Addr{}, false
		}
		v |= uint32(n) << shift
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// Control is a net.Dialer Control function: it runs after DNS resolution, on the address actually
// dialled, and refuses an address in Denied, and one that is not public or has an IPv6 zone unless
// the policy allows private networks.
func (p Policy) Control(_ string, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrForbiddenAddress, address)
	}
	return p.checkAddr(ap.Addr())
}

// Dialer connects to webhook hosts under a Policy.
type Dialer struct {
	policy Policy
	dialer net.Dialer
	// proxyDialer connects to the policy's proxy, which is trusted: it has no Control.
	proxyDialer net.Dialer
}

// Dialer returns a dialer that judges the host it is asked for as CheckURL does (AllowedHosts, IP
// addresses) and every address it connects to as Control does. With the policy's Proxy set it
// connects through the proxy, judging the addresses before asking for a tunnel to one; the whole
// tunnel (the proxy's connection, its TLS handshake, the CONNECT exchange) must open within
// connectTimeout.
func (p Policy) Dialer(connectTimeout time.Duration) *Dialer {
	return &Dialer{policy: p,
		dialer: net.Dialer{
			Timeout: connectTimeout, KeepAlive: 30 * time.Second, Control: p.Control, Resolver: p.Resolver,
		},
		proxyDialer: net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second},
	}
}

// DialContext connects to address (host:port) on network, resolving a host name with the
// policy's Resolver, directly or through the policy's Proxy.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrForbiddenAddress, err)
	}
	if err := d.policy.checkHost(host); err != nil {
		return nil, err
	}
	if d.policy.Proxy != nil {
		return d.dialProxied(ctx, network, address)
	}
	return d.dialer.DialContext(ctx, network, address)
}
