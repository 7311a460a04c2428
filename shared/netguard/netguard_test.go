package netguard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIsPublic(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"8.8.8.8", true},
		{"172.32.0.1", true},
		{"100.128.0.1", true},
		{"198.20.0.1", true},
		{"2606:4700:4700::1111", true},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::808:808", true},
		{"2002:808:808::1", true},
		{"127.0.0.1", false},
		{"10.1.2.3", false},
		{"172.31.255.255", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"198.19.255.255", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"::1", false},
		{"::", false},
		{"::7f00:1", false},                  // IPv4-compatible, deprecated
		{"::808:808", false},                 // IPv4-compatible of a public address: refused whole
		{"::ffff:0:808:808", false},          // IPv4-translated
		{"64:ff9b:1::808:808", false},        // local-use NAT64
		{"64:ff9b::7f00:1", false},           // NAT64 of loopback
		{"2002:7f00:1::", false},             // 6to4 of loopback
		{"2001:0:4136:e378::1", false},       // Teredo: refused whole
		{"2001:2::1", false},                 // benchmarking
		{"2001:20::1", false},                // ORCHIDv2
		{"2001:db8::1", false},               // documentation
		{"3fff::1", false},                   // documentation
		{"5f00::1", false},                   // SRv6
		{"100::1", false},                    // discard
		{"fd00:ec2::254", false},             // AWS metadata
		{"fec0::1", false},                   // site-local
		{"ff02::1", false},                   // multicast
		{"2606:4700:4700::1111%eth0", false}, // zoned
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			if got := IsPublic(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Fatalf("IsPublic(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestParseIPv4(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" when refused
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"10.1", "10.0.0.1"},
		{"10.1.258", "10.1.1.2"},
		{"0x7f.0.0x0.01", "127.0.0.1"},
		{"0", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"256.0.0.1", ""},
		{"1.2.3.256", ""},
		{"1.16777216", ""},
		{"1.2.3.4.5", ""},
		{"08.0.0.1", ""},
		{"0x", ""},
		{"0x.1", ""},
		{"1..1", ""},
		{"a.1", ""},
		{"1_0", ""},
		{"+1", ""},
	}
	for _, tt := range tests {
		got, ok := parseIPv4(tt.in)
		if (tt.want == "") == ok || ok && got.String() != tt.want {
			t.Errorf("parseIPv4(%q) = %v, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestCheckURLForm(t *testing.T) {
	tests := []struct {
		url       string
		allowHTTP bool
		want      error // nil: accepted
	}{
		{"https://example.com/hook", false, nil},
		{"https://Hooks.Example.COM./hook", false, nil},
		{"https://under_score.example.com/hook", false, nil},
		{"https://8.8.8.8:8443/hook", false, nil},
		{"https://[2606:4700:4700::1111]/hook", false, nil},
		{"http://example.com/hook", false, ErrForbiddenURL},
		{"http://example.com/hook", true, nil},
		{"ftp://example.com", true, ErrForbiddenURL},
		{"https:example.com", false, ErrForbiddenURL},
		{"/relative", true, ErrForbiddenURL},
		{"https://", false, ErrForbiddenURL},
		{"https://:443/", false, ErrForbiddenURL},
		{"https://user:pw@example.com", false, ErrForbiddenURL},
		{"::bad", false, ErrForbiddenURL},
		{"https://%31%32%37.0.0.1/", false, ErrForbiddenURL},            // url.Parse refuses ASCII escapes in hosts
		{"https://b%C3%BCcher.example/", false, ErrForbiddenURL},        // non-ASCII: write IDNs as punycode
		{"https://xn--bcher-kva.example/", false, nil},                  //
		{"https://a..b/", false, ErrForbiddenURL},                       // empty label
		{"https://a%25b/", false, ErrForbiddenURL},                      // a percent sign outside brackets
		{"https://[example.com]/", false, ErrForbiddenURL},              // brackets hold IPv6 addresses only
		{"https://[127.0.0.1]/", false, ErrForbiddenURL},                //
		{"https://0x/", false, ErrForbiddenURL},                         // numeric, not judgeable
		{"https://08.0.0.1/", false, ErrForbiddenURL},                   //
		{"https://1.2.3.4.5/", false, ErrForbiddenURL},                  //
		{"https://256.1.1.1/", false, ErrForbiddenURL},                  //
		{"https://4294967296/", false, ErrForbiddenURL},                 //
		{"https://example.123/", false, ErrForbiddenURL},                // a numeric last label is an IPv4 address to browsers
		{"https://0x1g/", false, nil},                                   // a name: judged when dialled
		{"https://127.0.0.1.nip.io/", false, nil},                       // a name: judged when dialled
		{"https://localhost/", false, nil},                              // a name: judged when dialled
		{"https://127.0.0.1/", false, ErrForbiddenAddress},              //
		{"https://[::1%25lo]:8222/", false, ErrForbiddenAddress},        // D2
		{"https://[fe80::1%25eth0]/", false, ErrForbiddenAddress},       // D2
		{"https://[fd00:ec2::254%25eth0]/", false, ErrForbiddenAddress}, // D2
	}
	for _, tt := range tests {
		err := Policy{AllowHTTP: tt.allowHTTP}.CheckURL(tt.url)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("CheckURL(%q, http=%v) = %v, want %v", tt.url, tt.allowHTTP, err, tt.want)
		}
	}
}

// errWouldConnect stands for a connection the guard let through: the test dialers return it from
// Control, after the guard, so that no packet leaves the machine.
var errWouldConnect = errors.New("the guard let this connection through")

// testDialer returns p's dialer with test resolver addrs (see testResolver), stopping before
// connecting.
func testDialer(p Policy, addrs []netip.Addr) *Dialer {
	p.Resolver = testResolver(addrs)
	d := p.Dialer(time.Second)
	d.dialer.Control = func(network, address string, c syscall.RawConn) error {
		if err := p.Control(network, address, c); err != nil {
			return err
		}
		return errWouldConnect
	}
	return d
}

// testResolver resolves a name whose first label is h<i> (h3.test, h3.test.search.domain) to
// addrs[i]: the Go resolver talks DNS to an in-memory server, over a net.Pipe (so with TCP framing).
func testResolver(addrs []netip.Addr) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		client, server := net.Pipe()
		go serveDNS(server, addrs)
		return client, nil
	}}
}

func serveDNS(c net.Conn, addrs []netip.Addr) {
	defer c.Close()
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		r := dnsAnswer(q, addrs)
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(r))), r...)); err != nil {
			return
		}
	}
}

// dnsAnswer answers query q: its question, and an A or AAAA record when the name's first label
// names an address of that family.
func dnsAnswer(q []byte, addrs []netip.Addr) []byte {
	i, first := 12, ""
	for q[i] != 0 {
		l := int(q[i])
		if first == "" {
			first = strings.ToLower(string(q[i+1 : i+1+l]))
		}
		i += 1 + l
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	var rr []byte
	if n, err := strconv.Atoi(strings.TrimPrefix(first, "h")); strings.HasPrefix(first, "h") && err == nil && n < len(addrs) {
		if a := addrs[n]; qtype == 1 && a.Is4() || qtype == 28 && a.Is6() {
			rr = append(rr, 0xc0, 12) // the name: a pointer to the question's
			rr = binary.BigEndian.AppendUint16(rr, qtype)
			rr = binary.BigEndian.AppendUint16(rr, 1) // class IN
			rr = binary.BigEndian.AppendUint32(rr, 60)
			rr = binary.BigEndian.AppendUint16(rr, uint16(a.BitLen()/8))
			rr = append(rr, a.AsSlice()...)
		}
	}
	// ID; response, authoritative, recursion desired and available; one question; answers.
	head := []byte{q[0], q[1], 0x85, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}
	if rr != nil {
		head[7] = 1
	}
	return append(append(head, question...), rr...)
}

// spelling is one way of writing an address in a URL.
type spelling struct {
	form string
	host string     // as written between "https://" and ":port"
	addr netip.Addr // the address a resolver makes of it, with its zone
	// public is whether addr without its zone is public: the guard lets the spelling through
	// (with private networks refused) when it is and addr has no zone.
	public bool
}

// spellings returns the ways of writing ip that the guard must judge; public says whether ip is.
func spellings(ip netip.Addr, public bool) []spelling {
	if ip.Is6() {
		long := ip.StringExpanded()
		return []spelling{
			{"bracketed", "[" + ip.String() + "]", ip, public},
			{"upper case", "[" + strings.ToUpper(ip.String()) + "]", ip, public},
			{"expanded", "[" + long + "]", ip, public},
			{"zoned", "[" + ip.String() + "%25eth0]", ip.WithZone("eth0"), public},
			{"numeric zone", "[" + long + "%251]", ip.WithZone("1"), public},
		}
	}
	b := ip.As4()
	v := binary.BigEndian.Uint32(b[:])
	mapped := netip.AddrFrom16(ip.As16())
	six := func(format string, args ...any) (string, netip.Addr) {
		a := netip.MustParseAddr(fmt.Sprintf(format, args...))
		return "[" + a.String() + "]", a
	}
	nat64Host, nat64Addr := six("64:ff9b::%s", ip)
	sixToFourHost, sixToFourAddr := six("2002:%x:%x::1", v>>16, v&0xffff)
	compatHost, compatAddr := six("::%s", ip)
	localHost, localAddr := six("64:ff9b:1:%x:%x::", v>>16, v&0xffff)
	teredoHost, teredoAddr := six("2001:0:808:808::%x:%x", ^v>>16, ^v&0xffff) // public server, client ip
	return []spelling{
		{"dotted", ip.String(), ip, public},
		{"trailing dot", ip.String() + ".", ip, public},
		{"decimal", strconv.FormatUint(uint64(v), 10), ip, public},
		{"hex", fmt.Sprintf("0x%x", v), ip, public},
		{"upper hex", fmt.Sprintf("0X%X", v), ip, public},
		{"octal", fmt.Sprintf("0%o", v), ip, public},
		{"dotted octal", fmt.Sprintf("0%o.0%o.0%o.0%o", b[0], b[1], b[2], b[3]), ip, public},
		{"dotted hex", fmt.Sprintf("0x%x.0x%x.0x%x.0x%x", b[0], b[1], b[2], b[3]), ip, public},
		{"a.b", fmt.Sprintf("%d.%d", b[0], v&0xffffff), ip, public},
		{"a.b.c", fmt.Sprintf("%d.%d.%d", b[0], b[1], v&0xffff), ip, public},
		{"mixed", fmt.Sprintf("0x%x.0%o.%d.", b[0], b[1], v&0xffff), ip, public},
		{"mapped", "[::ffff:" + ip.String() + "]", mapped, public},
		{"mapped hex", fmt.Sprintf("[::ffff:%x:%x]", v>>16, v&0xffff), mapped, public},
		{"mapped zoned", "[::ffff:" + ip.String() + "%25lo]", mapped.WithZone("lo"), public},
		{"nat64", nat64Host, nat64Addr, public},
		{"6to4", sixToFourHost, sixToFourAddr, public},
		{"ipv4-compatible", compatHost, compatAddr, false},
		{"local-use nat64", localHost, localAddr, false},
		{"teredo", teredoHost, teredoAddr, false},
	}
}

// TestGuard runs every spelling of every address through CheckURL (the address in a URL), Control
// (the address being connected to), and a dial through Policy.Dialer, of the host as written and of
// a host name that resolves to the address. Host names never carry a zone.
func TestGuard(t *testing.T) {
	public := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "198.20.0.1",
		"2606:4700:4700::1111", "2a00:1450:4001:82b::200e"}
	refused := []string{
		"127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "100.100.100.200", "0.0.0.0", "0.1.2.3", "255.255.255.255",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "198.18.0.1", "198.19.255.255", "192.0.0.192",
		"192.0.2.1", "198.51.100.1", "203.0.113.1", "192.88.99.1",
		"::1", "::", "fe80::1", "fd00:ec2::254", "fc00::1", "fec0::1", "ff02::1", "100::1", "5f00::1",
		"2001:db8::1", "3fff::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:2::1",
		"2001:10::1", "2001:20::1", "64:ff9b:1::a00:1", "64:ff9b::a9fe:a9fe", "::7f00:1",
		"::ffff:0:7f00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
	}
	var cases []spelling
	for _, s := range public {
		cases = append(cases, spellings(netip.MustParseAddr(s), true)...)
	}
	for _, s := range refused {
		cases = append(cases, spellings(netip.MustParseAddr(s), false)...)
	}
	// Every address without its zone gets a name, h<i>.test.
	var addrs []netip.Addr
	name := map[netip.Addr]string{}
	for _, c := range cases {
		a := c.addr.WithZone("")
		if _, ok := name[a]; !ok {
			name[a] = fmt.Sprintf("h%d.test", len(addrs))
			addrs = append(addrs, a)
		}
	}
	p := Policy{}
	d := testDialer(p, addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range cases {
		t.Run(c.form+"/"+c.host, func(t *testing.T) {
			allowed := c.public && c.addr.Zone() == ""
			if err := p.CheckURL("https://" + c.host + ":8443/hook"); (err == nil) != allowed ||
				err != nil && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("CheckURL(%s) = %v, want allowed=%v", c.host, err, allowed)
			}
			ap := netip.AddrPortFrom(c.addr, 8443).String()
			if err := p.Control("tcp", ap, nil); (err == nil) != allowed || err != nil && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("Control(%s) = %v, want allowed=%v", ap, err, allowed)
			}
			// A public address spelled in a way Go's dialer does not parse goes to DNS, which
			// knows no such name: only a refusal is wrong then.
			host := strings.ReplaceAll(strings.Trim(c.host, "[]"), "%25", "%")
			_, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, "8443"))
			if allowed && errors.Is(err, ErrForbiddenAddress) || !allowed && !errors.Is(err, ErrForbiddenAddress) ||
				allowed && strings.HasPrefix(c.host, "[") && !errors.Is(err, errWouldConnect) {
				t.Errorf("dial %s: %v, want allowed=%v", host, err, allowed)
			}
			n := name[c.addr.WithZone("")]
			_, err = d.DialContext(ctx, "tcp", net.JoinHostPort(n, "8443"))
			if c.public && !errors.Is(err, errWouldConnect) || !c.public && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("dial %s (%s): %v, want allowed=%v", n, c.addr.WithZone(""), err, c.public)
			}
		})
	}
}

func TestPolicyOptions(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("8.8.8.8")}
	private := Policy{AllowPrivate: true, Denied: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00:ec2::/32"),
	}}
	allowed := Policy{AllowedHosts: []string{"h2.test", "*.partner.test"}}
	metaOnly := Policy{AllowPrivate: true} // cloud metadata stays refused with private networks allowed
	tests := []struct {
		name   string
		policy Policy
		host   string // in a URL, and dialled; h<i> names resolve to addrs[i]
		ok     bool
		// urlOK is CheckURL's verdict when it differs from ok: a name is judged when dialled.
		urlOK bool
	}{
		{"private allowed", private, "192.168.1.1", true, false},
		{"zone allowed with private", private, "[fe80::1%25lo]", true, false},
		{"name of a private address", private, "h1.test", true, false},
		{"denied", private, "10.1.2.3", false, false},
		{"denied, short form", private, "10.1", false, false},
		{"denied, mapped", private, "[::ffff:a01:203]", false, false},
		{"denied, nat64", private, "[64:ff9b::a01:203]", false, false},
		{"denied, 6to4", private, "[2002:a01:203::]", false, false},
		{"denied, zoned", private, "[fd00:ec2::254%25eth0]", false, false},
		{"denied, single address", private, "169.254.169.254", false, false},
		{"denied, by name", private, "h0.test", false, true},
		{"metadata with private allowed", metaOnly, "169.254.169.254", false, false},
		{"metadata, decimal", metaOnly, "2852039166", false, false},
		{"metadata, mapped", metaOnly, "[::ffff:a9fe:a9fe]", false, false},
		{"metadata IPv6, zoned", metaOnly, "[fd00:ec2::254%25eth0]", false, false},
		{"ECS task credentials", metaOnly, "169.254.170.2", false, false},
		{"Azure WireServer (a public address)", Policy{}, "168.63.129.16", false, false},
		{"link-local beside metadata with private allowed", metaOnly, "169.254.169.253", true, false},
		{"allowed host", allowed, "h2.test", true, false},
		{"allowed host, other case and a trailing dot", allowed, "H2.Test.", true, false},
		{"wildcard", allowed, "h2.a.partner.test", true, false},
		{"wildcard does not match the bare name", allowed, "partner.test", false, false},
		{"suffix is not a label boundary", allowed, "h2.evilpartner.test", false, false},
		{"other host", allowed, "h1.test", false, false},
		{"public address not listed", allowed, "8.8.8.8", false, false},
		{"public IPv6 not listed", allowed, "[2606:4700:4700::1111]", false, false},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.policy.CheckURL("https://" + tt.host + "/hook"); (err == nil) != (tt.ok || tt.urlOK) ||
				err != nil && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("CheckURL(%s) = %v, want ok=%v", tt.host, err, tt.ok || tt.urlOK)
			}
			host := strings.ReplaceAll(strings.Trim(tt.host, "[]"), "%25", "%")
			_, err := testDialer(tt.policy, addrs).DialContext(ctx, "tcp", net.JoinHostPort(host, "443"))
			if tt.ok && !errors.Is(err, errWouldConnect) || !tt.ok && !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("dial %s: %v, want ok=%v", host, err, tt.ok)
			}
		})
	}
}

func TestDialerRefusesLoopbackAfterResolution(t *testing.T) {
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
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// "localhost" resolves to the loopback address (system resolver): refused just like the literal.
	for _, host := range []string{"127.0.0.1", "localhost"} {
		_, err := Policy{}.Dialer(time.Second).DialContext(ctx, "tcp", net.JoinHostPort(host, port))
		if !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("dial %s: err = %v, want ErrForbiddenAddress", host, err)
		}
	}
	c, err := Policy{AllowPrivate: true}.Dialer(time.Second).DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial with AllowPrivate: %v", err)
	}
	c.Close()
}
