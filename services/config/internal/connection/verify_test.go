package connection

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/policyhooks/policyhooks/shared/netguard"
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
		err := refuse.verify(context.Background(), "https://"+host+":"+port+"/hook")
		if !errors.Is(err, netguard.ErrForbiddenAddress) {
			t.Errorf("verify %s: %v, want ErrForbiddenAddress", host, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("refused destinations got %d connections, want 0", n)
	}
	allow := &Service{guard: netguard.Policy{AllowHTTP: true, AllowPrivate: true}}
	if err := allow.verify(context.Background(), "http://127.0.0.1:"+port+"/hook"); err != nil {
		t.Fatalf("verify with private networks allowed: %v", err)
	}
	if err := allow.verify(context.Background(), "https://127.0.0.1:"+port+"/hook"); err == nil ||
		!strings.Contains(err.Error(), "tls handshake") {
		t.Fatalf("verify https against a plain listener: %v, want a TLS handshake error", err)
	}
	ln.Close()
	if accepted.Load() != 2 {
		t.Errorf("got %d connections, want 2 (direct, not through the proxy)", accepted.Load())
	}
}
