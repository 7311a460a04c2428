package netguard

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzGuard checks CheckURL against resolvers' own readings of the host: with private networks
// refused, a URL it accepts never names an address that is not public, nor a zoned one, in the
// reading of Go's parsers or of inet_aton(3) (atonRef, written independently of parseIPv4).
// CheckURL never panics.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{
		"https://example.com/hook", "https://8.8.8.8/", "https://[2606:4700:4700::1111]:8443/",
		"https://127.0.0.1/", "https://127.1/", "https://127.0.0.1./", "https://2130706433/",
		"https://0x7f000001/", "https://0X7F.1/", "https://0177.0.0.1/", "https://017700000001/",
		"https://0x7f.0.0x0.01/", "https://10.1/", "https://10.0.258/", "https://0/", "https://0x/",
		"https://08.0.0.1/", "https://4294967296/", "https://1.2.3.4.5/", "https://169.254.169.254/",
		"https://0xa9.0xfe.0xa9.0xfe/", "https://[::1]/", "https://[::1%25lo]:8222/",
		"https://[fe80::1%25eth0]/", "https://[fd00:ec2::254%25eth0]/", "https://[fd00:ec2::254]/",
		"https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1%25lo]/", "https://[::127.0.0.1]/",
		"https://[64:ff9b::127.0.0.1]/", "https://[64:ff9b:1::a00:1]/", "https://[2002:7f00:1::]/",
		"https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "https://[fec0::1]/", "https://[ff02::1]/",
		"https://LOCALHOST./", "https://%31%32%37.0.0.1/", "https://b%C3%BCcher.example/",
		"https://[127.0.0.1]/", "https://user@127.0.0.1/", "http://[::1]/", "https:127.0.0.1",
		"https://127.0.0.1%2f@example.com/", "https://example.com\\@127.0.0.1/", "https://1e1/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_ = Policy{AllowHTTP: true, AllowPrivate: true}.CheckURL(raw)
		if err := (Policy{AllowHTTP: true}).CheckURL(raw); err != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("CheckURL accepted %q, which url.Parse refuses: %v", raw, err)
		}
		host := u.Hostname()
		if strings.Contains(host, "%") {
			t.Fatalf("CheckURL accepted %q, whose host %q has a zone or a percent sign", raw, host)
		}
		var readings []netip.Addr
		if ip, err := netip.ParseAddr(host); err == nil {
			readings = append(readings, ip)
		}
		if ip := net.ParseIP(host); ip != nil {
			a, _ := netip.AddrFromSlice(ip)
			readings = append(readings, a)
		}
		for _, h := range []string{host, strings.TrimSuffix(host, ".")} {
			if ip, ok := atonRef(h); ok {
				readings = append(readings, ip)
			}
		}
		for _, ip := range readings {
			if !IsPublic(ip) {
				t.Fatalf("CheckURL accepted %q, whose host %q a resolver reads as %s, which is not public", raw, host, ip)
			}
			if err := (Policy{}).Control("tcp", netip.AddrPortFrom(ip, 443).String(), nil); err != nil {
				t.Fatalf("CheckURL accepted %q but Control refuses %s: %v", raw, ip, err)
			}
		}
	})
}

// atonRef is glibc's inet_aton (resolv/inet_addr.c, with strtoul(…, 0) for each part) transcribed
// character by character: a part starts with a decimal digit; 0x (then a hex digit) means hex, a
// leading 0 octal; parts before the last are at most 255; the last fills the bytes left.
func atonRef(s string) (netip.Addr, bool) {
	digit := func(c byte) uint64 {
		switch {
		case '0' <= c && c <= '9':
			return uint64(c - '0')
		case 'a' <= c && c <= 'f':
			return uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			return uint64(c-'A') + 10
		}
		return 99
	}
	var parts []uint64
	i := 0
	for {
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return netip.Addr{}, false
		}
		base := uint64(10)
		if s[i] == '0' {
			base = 8
			if i+2 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') && digit(s[i+2]) < 16 {
				base, i = 16, i+2
			}
		}
		var v uint64
		for ; i < len(s) && digit(s[i]) < base; i++ {
			if v = v*base + digit(s[i]); v > 0xffffffff {
				return netip.Addr{}, false
			}
		}
		parts = append(parts, v)
		if i < len(s) && s[i] == '.' {
			if len(parts) > 3 || v > 0xff {
				return netip.Addr{}, false
			}
			i++
			continue
		}
		break
	}
	last := parts[len(parts)-1]
	if i != len(s) || last > []uint64{0xffffffff, 0xffffff, 0xffff, 0xff}[len(parts)-1] {
		return netip.Addr{}, false
	}
	var b [4]byte
	for j, p := range parts[:len(parts)-1] {
		b[j] = byte(p)
	}
	for j := 3; last > 0; j-- {
		b[j] |= byte(last)
		last >>= 8
	}
	return netip.AddrFrom4(b), true
}
