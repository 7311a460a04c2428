// Package netguard guards outgoing webhook connections against server-side request forgery: it
// checks webhook URLs, and refuses at connect time, after DNS resolution, every address that is not
// public (SPEC §6).
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrForbiddenAddress reports a connection to an address that is not public.
var ErrForbiddenAddress = errors.New("address is not public")

// ErrForbiddenURL reports a webhook URL that is not an absolute URL of an allowed scheme.
var ErrForbiddenURL = errors.New("url not allowed")

var nonPublic = mustPrefixes(
	"0.0.0.0/8",       // "this network", unspecified
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // carrier-grade NAT
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation
	"203.0.113.0/24",  // documentation
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, broadcast
	"::/128",          // unspecified
	"::1/128",         // loopback
	"100::/64",        // discard
	"2001:db8::/32",   // documentation
	"fc00::/7",        // unique local (includes fd00:ec2::254 metadata)
	"fe80::/10",       // link-local
	"ff00::/8",        // multicast
)

// Embedding prefixes: the IPv4 address inside them is checked too.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// IsPublic reports whether ip is a public unicast address. IPv4-mapped, NAT64 and 6to4 forms are
// judged by the IPv4 address they carry.
func IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return false
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return IsPublic(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFour.Contains(ip):
			return IsPublic(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// Policy says which destinations webhook connections may reach.
type Policy struct {
	// AllowHTTP permits plain http:// URLs (WEBHOOK_ALLOW_HTTP).
	AllowHTTP bool
	// AllowPrivate permits addresses that are not public (WEBHOOK_ALLOW_PRIVATE_NETWORKS).
	AllowPrivate bool
}

// CheckURL checks that raw is an absolute https URL (or http when allowed) with a host and without
// user information.
func (p Policy) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenURL, err)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case u.Scheme == "http":
		return fmt.Errorf("%w: http is not allowed, use https", ErrForbiddenURL)
	default:
		return fmt.Errorf("%w: must be an absolute https URL", ErrForbiddenURL)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrForbiddenURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user information is not allowed in the URL", ErrForbiddenURL)
	}
	return nil
}

// Control is a net.Dialer Control function: it runs after DNS resolution, on the address actually
// dialled, and refuses one that is not public unless the policy allows private networks.
func (p Policy) Control(_ string, address string, _ syscall.RawConn) error {
	if p.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrForbiddenAddress, address)
	}
	if !IsPublic(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr().Unmap())
	}
	return nil
}

// Dialer returns a dialer that applies the policy to every address it connects to.
func (p Policy) Dialer(connectTimeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second, Control: p.Control}
}
