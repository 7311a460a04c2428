package webhook

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Client certificates (mTLS) of connections (SPEC §2, §6). The shared transport presents no
// certificate and cannot pick one per request, so the calls and token requests of a connection
// whose secrets hold one go through a client of its own, built like the shared one (the guarded
// dialer with the proxy, the roots, the timeouts). The clients are kept in a small cache.
const (
	// maxClientTransports bounds the cache; when it is full, the least recently used client is
	// dropped.
	maxClientTransports = 256
	// ClientTransportIdle is how long a connection's client is kept unused before it is dropped
	// with its idle connections.
	ClientTransportIdle = 10 * time.Minute
)

// ErrClientCertificate reports secrets whose client_certificate and client_key cannot be used:
// one without the other, or a pair that does not parse or match. A retry does not fix it.
var ErrClientCertificate = errors.New("the connection's client certificate cannot be used")

// clientTransports are the clients of connections with a client certificate, one per connection
// and certificate (certID). A connection whose certificate changes gets a new client; the old
// one is dropped at once.
type clientTransports struct {
	build func(*tls.Certificate) *http.Client
	now   func() time.Time

	mu        sync.Mutex
	entries   map[string]*clientEntry // by connection key, NUL, certID
	lastSweep time.Time
}

// maxCertsPerConnection bounds the clients kept per connection: its current certificate and the one
// before it.
const maxCertsPerConnection = 2

// clientEntry is the client of one connection and certificate, or why there is none.
type clientEntry struct {
	conn   string
	client *http.Client
	err    error
	used   time.Time
}

// newClientTransports returns an empty cache whose clients build makes.
func newClientTransports(build func(*tls.Certificate) *http.Client) *clientTransports {
	return &clientTransports{build: build, now: time.Now, entries: map[string]*clientEntry{}}
}

// certID names a certificate chain and key by a hash of both: the cache and the token cache hold
// no key material.
func certID(certPEM, keyPEM string) string {
	h := sha256.New()
	h.Write([]byte(certPEM))
	h.Write([]byte{0})
	h.Write([]byte(keyPEM))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// get returns the client of connection conn presenting certPEM and keyPEM (whose certID is id),
// building it on first use. An error wraps ErrClientCertificate and never holds the key.
func (ct *clientTransports) get(conn, id, certPEM, keyPEM string) (*http.Client, error) {
	key := conn + "\x00" + id
	now := ct.now()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.sweep(now)
	if e, ok := ct.entries[key]; ok {
		e.used = now
		return e.client, e.err
	}
	// A connection keeps at most maxCertsPerConnection clients: while a new certificate is rolled
	// out, some calls still present the old one for a moment (a replica whose view of the plans
	// lags, or a request whose policy no longer uses the connection and keeps the secrets it
	// started with), so both may be in use; the least recently used one beyond goes.
	var mine []string
	for k, e := range ct.entries {
		if e.conn == conn {
			mine = append(mine, k)
		}
	}
	for len(mine) >= maxCertsPerConnection {
		oldest := 0
		for i, k := range mine {
			if ct.entries[k].used.Before(ct.entries[mine[oldest]].used) {
				oldest = i
			}
		}
		ct.drop(mine[oldest], ct.entries[mine[oldest]])
		mine = append(mine[:oldest], mine[oldest+1:]...)
	}
	if len(ct.entries) >= maxClientTransports {
		var oldest string
		for k, e := range ct.entries {
			if oldest == "" || e.used.Before(ct.entries[oldest].used) {
				oldest = k
			}
		}
		ct.drop(oldest, ct.entries[oldest])
	}
	e := &clientEntry{conn: conn, used: now}
	switch {
	case certPEM == "" || keyPEM == "":
		e.err = errors.New("client_certificate and client_key must be given together")
	default:
		cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			// The parser's messages name what is wrong, never the key.
			e.err = err
		} else {
			e.client = ct.build(&cert)
		}
	}
	if e.err != nil {
		e.err = fmt.Errorf("%w: %v", ErrClientCertificate, e.err)
	}
	ct.entries[key] = e
	return e.client, e.err
}

// sweep drops the clients unused for ClientTransportIdle, at most once a minute.
func (ct *clientTransports) sweep(now time.Time) {
	if now.Sub(ct.lastSweep) < time.Minute {
		return
	}
	ct.lastSweep = now
	for k, e := range ct.entries {
		if now.Sub(e.used) >= ClientTransportIdle {
			ct.drop(k, e)
		}
	}
}

// drop forgets entry k and closes its idle connections; calls in flight on it finish, and their
// connections close after the transport's idle timeout.
func (ct *clientTransports) drop(k string, e *clientEntry) {
	delete(ct.entries, k)
	if e.client != nil {
		e.client.CloseIdleConnections()
	}
}

// close drops every client.
func (ct *clientTransports) close() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for k, e := range ct.entries {
		ct.drop(k, e)
	}
}
