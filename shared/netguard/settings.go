package netguard

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/policyhooks/policyhooks/shared/envconfig"
)

// Settings are the webhook network settings of SPEC §8, read once by Read for the config service
// (URL checks, verification) and the executor (calls). Each field is named after its variable.
type Settings struct {
	// WebhookAllowHTTP is WEBHOOK_ALLOW_HTTP.
	WebhookAllowHTTP bool
	// WebhookAllowPrivate is WEBHOOK_ALLOW_PRIVATE_NETWORKS.
	WebhookAllowPrivate bool
	// WebhookAllowedHosts is WEBHOOK_ALLOWED_HOSTS, in lower case without trailing dots.
	WebhookAllowedHosts []string
	// WebhookDeniedCIDRs is WEBHOOK_DENIED_CIDRS.
	WebhookDeniedCIDRs []netip.Prefix
	// WebhookCAFile is WEBHOOK_CA_FILE.
	WebhookCAFile string
	// WebhookRoots are the system roots plus the certificates of WebhookCAFile; nil (the system
	// roots) when it is unset.
	WebhookRoots *x509.CertPool
	// WebhookProxy is WEBHOOK_PROXY_URL, the proxy every webhook connection goes through (an https
	// proxy's certificate checked against WebhookRoots); nil when it is unset.
	WebhookProxy *Proxy
}

// Read reads the webhook network settings, loads WEBHOOK_CA_FILE and parses WEBHOOK_PROXY_URL,
// recording every problem on r under its variable's name.
func Read(r *envconfig.Reader) Settings {
	s := Settings{
		WebhookAllowHTTP:    r.Bool("WEBHOOK_ALLOW_HTTP", false),
		WebhookAllowPrivate: r.Bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", false),
		WebhookCAFile:       r.String("WEBHOOK_CA_FILE", ""),
	}
	for _, e := range r.List("WEBHOOK_ALLOWED_HOSTS") {
		h, err := allowedHost(e)
		if err != nil {
			r.Fail("WEBHOOK_ALLOWED_HOSTS", "entry %q %v", e, err)
			continue
		}
		s.WebhookAllowedHosts = append(s.WebhookAllowedHosts, h)
	}
	for _, e := range r.List("WEBHOOK_DENIED_CIDRS") {
		p, err := deniedRange(e)
		if err != nil {
			r.Fail("WEBHOOK_DENIED_CIDRS", "entry %q %v", e, err)
			continue
		}
		s.WebhookDeniedCIDRs = append(s.WebhookDeniedCIDRs, p)
	}
	if s.WebhookCAFile != "" {
		roots, err := loadRoots(s.WebhookCAFile)
		if err != nil {
			r.Fail("WEBHOOK_CA_FILE", "%v", err)
		}
		s.WebhookRoots = roots
	}
	if v := r.String("WEBHOOK_PROXY_URL", ""); v != "" {
		proxy, err := ParseProxy(v, s.WebhookRoots)
		if err != nil {
			// The error never quotes the value: it may hold the proxy's password.
			r.Fail("WEBHOOK_PROXY_URL", "%v", err)
		}
		s.WebhookProxy = proxy
	}
	return s
}

// Policy returns the policy the settings describe.
func (s Settings) Policy() Policy {
	return Policy{
		AllowHTTP:    s.WebhookAllowHTTP,
		AllowPrivate: s.WebhookAllowPrivate,
		AllowedHosts: s.WebhookAllowedHosts,
		Denied:       s.WebhookDeniedCIDRs,
		Proxy:        s.WebhookProxy,
	}
}

// allowedHost checks an entry of WEBHOOK_ALLOWED_HOSTS: a host name, or *. and a host name.
func allowedHost(entry string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(entry), ".")
	name, wildcard := strings.CutPrefix(h, "*.")
	switch {
	case strings.Contains(h, "://"):
		return "", errors.New("must be a host name, not a URL")
	case strings.ContainsAny(h, "/?#@"):
		return "", errors.New("must be a host name alone, without a path or user information")
	case strings.Contains(h, ":"):
		return "", errors.New("must be a host name alone, without a port (IP addresses are not accepted)")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || strings.TrimLeft(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return "", errors.New(`must be a host name (ASCII letters, digits, '-', '_'), optionally after "*."`)
		}
	}
	if numeric(labels[len(labels)-1]) {
		return "", errors.New("must be a host name, not an IP address")
	}
	if wildcard {
		return "*." + name, nil
	}
	return name, nil
}

// deniedRange checks an entry of WEBHOOK_DENIED_CIDRS: a CIDR range or a single address. An
// IPv4-mapped range is kept as the IPv4 range, which is what addresses are matched as.
func deniedRange(entry string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(entry)
	if err != nil {
		ip, aerr := netip.ParseAddr(entry)
		if aerr != nil || ip.Zone() != "" {
			return netip.Prefix{}, errors.New("is not a CIDR range such as 10.0.0.0/8 or fd00::/8, nor an IP address")
		}
		p = netip.PrefixFrom(ip, ip.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// loadRoots returns the system roots plus the PEM certificates of file.
func loadRoots(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}
