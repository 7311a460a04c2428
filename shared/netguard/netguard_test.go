package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestIsPublic(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"8.8.8.8", true},
		{"2606:4700:4700::1111", true},
		{"127.0.0.1", false},
		{"127.9.9.9", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"172.32.0.1", true},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"224.0.0.1", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00:ec2::254", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::7f00:1", false},
		{"2002:7f00:1::", false},
		{"2002:808:808::", true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			if got := IsPublic(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Fatalf("IsPublic(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url       string
		allowHTTP bool
		ok        bool
	}{
		{"https://example.com/hook", false, true},
		{"http://example.com/hook", false, false},
		{"http://example.com/hook", true, true},
		{"ftp://example.com", true, false},
		{"/relative", true, false},
		{"https://", false, false},
		{"https://user:pw@example.com", false, false},
		{"::bad", false, false},
	}
	for _, tt := range tests {
		err := Policy{AllowHTTP: tt.allowHTTP}.CheckURL(tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("CheckURL(%q, http=%v) = %v, want ok=%v", tt.url, tt.allowHTTP, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrForbiddenURL) {
			t.Errorf("CheckURL(%q) err %v does not wrap ErrForbiddenURL", tt.url, err)
		}
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
	// "localhost" resolves to the loopback address: refused just like the literal.
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
