package testkit

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Call is one request a Receiver got.
type Call struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	// RequestID is the body's top-level "privacy_request_id" ("" when it has none).
	RequestID string
	At        time.Time
	// ClientCN is the common name of the client certificate the caller presented ("" when none).
	ClientCN string
	// Host is the request's Host, and ServerName the TLS server name (SNI) the caller sent.
	Host, ServerName string
}

// String is the method, path and request id of c, for failure messages.
func (c Call) String() string { return c.Method + " " + c.Path + " (" + c.RequestID + ")" }

// Decode unmarshals the body of c into v and fails the test when it is not that JSON.
func (c Call) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(c.Body, v); err != nil {
		t.Fatalf("testkit: body of the call to %s %q: %v", c.Path, c.Body, err)
	}
}

// Answer is what a Receiver answers. Status 0 is 200; Sleep delays the answer and ends early when
// the client goes away.
type Answer struct {
	Status int
	Body   string
	Header map[string]string
	Sleep  time.Duration
}

// Receiver is a real HTTPS server (httptest TLS) whose answers are scripted per path. It records
// every call; an unscripted path answers 200 with no body.
type Receiver struct {
	srv    *httptest.Server
	caFile string

	mu     sync.Mutex
	calls  []Call
	script map[string]func(n int, c Call) Answer
}

// NewReceiver starts a Receiver, writes the PEM of its certificate to a file in t.TempDir() (for
// WEBHOOK_CA_FILE) and closes it when the test ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	return NewReceiverTLS(t, nil)
}

// NewReceiverTLS is NewReceiver with the server's TLS configuration cfg (nil: httptest's): a
// receiver that requires client certificates, say. Without certificates in cfg it serves
// httptest's, which every Receiver's CAFile holds.
func NewReceiverTLS(t testing.TB, cfg *tls.Config) *Receiver {
	t.Helper()
	rc := &Receiver{script: map[string]func(int, Call) Answer{}}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	if cfg != nil {
		rc.srv.TLS = cfg.Clone()
	}
	rc.srv.StartTLS()
	t.Cleanup(rc.srv.Close)
	rc.caFile = filepath.Join(t.TempDir(), "receiver-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.srv.Certificate().Raw})
	if err := os.WriteFile(rc.caFile, b, 0o600); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := Call{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, At: time.Now()}
	c.Host = r.Host
	if r.TLS != nil {
		c.ServerName = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 {
			c.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
	}
	var id struct {
		ID string `json:"privacy_request_id"`
	}
	if json.Unmarshal(body, &id) == nil {
		c.RequestID = id.ID
	}
	rc.mu.Lock()
	n := 0
	for _, prev := range rc.calls {
		if prev.Path == c.Path && prev.RequestID == c.RequestID {
			n++
		}
	}
	rc.calls = append(rc.calls, c)
	fn := rc.script[c.Path]
	rc.mu.Unlock()

	a := Answer{}
	if fn != nil {
		a = fn(n, c)
	}
	if a.Sleep > 0 {
		timer := time.NewTimer(a.Sleep)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
		}
	}
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	if a.Status == 0 {
		a.Status = http.StatusOK
	}
	w.WriteHeader(a.Status)
	_, _ = io.WriteString(w, a.Body)
}

// On scripts the answers for path, replacing an earlier script of it. n is how many calls of path
// for the same privacy request came before c (0 for the first).
func (rc *Receiver) On(path string, fn func(n int, c Call) Answer) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.script[path] = fn
}

// URL returns the HTTPS URL of path on the receiver.
func (rc *Receiver) URL(path string) string { return rc.srv.URL + path }

// CAFile returns the path of a PEM file holding the receiver's certificate.
func (rc *Receiver) CAFile() string { return rc.caFile }

// Client returns an HTTP client that trusts the receiver.
func (rc *Receiver) Client() *http.Client { return rc.srv.Client() }

// Calls returns every call so far, in the order they came.
func (rc *Receiver) Calls() []Call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Call(nil), rc.calls...)
}

// CallsOf returns, in order, the calls for privacy request requestID to path; an empty requestID
// or path matches any.
func (rc *Receiver) CallsOf(requestID, path string) []Call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Call
	for _, c := range rc.calls {
		if (requestID == "" || c.RequestID == requestID) && (path == "" || c.Path == path) {
			out = append(out, c)
		}
	}
	return out
}
