package webhook

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// testKey is a signing key of the tests, known to them in every form: the HMAC secret with its
// raw key bytes, or the Ed25519 seed with its public key.
type testKey struct {
	label  string
	secret string // the value of the secrets field
	hmac   []byte // the raw HMAC key; nil for an Ed25519 key
	pub    ed25519.PublicKey
}

func hmacKey(label string, raw []byte) testKey {
	return testKey{label: label, secret: "whsec_" + base64.StdEncoding.EncodeToString(raw), hmac: raw}
}

func rawHMACKey(label, secret string) testKey {
	return testKey{label: label, secret: secret, hmac: []byte(secret)}
}

// edKey returns an Ed25519 key from a seed of b: in the whsk_ seed form, or in the 64-byte private
// key form when long.
func edKey(label string, b byte, long bool) testKey {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	raw := []byte(priv.Seed())
	if long {
		raw = priv
	}
	return testKey{label: label, secret: "whsk_" + base64.StdEncoding.EncodeToString(raw), pub: priv.Public().(ed25519.PublicKey)}
}

// verifiedBy checks a webhook-signature value the way a receiver would, independently of Sign,
// SignEd25519 and Signature: each space-separated entry is "v1,<base64>" or "v1a,<base64>", and
// is checked with crypto/hmac or crypto/ed25519 over the signed content of the Standard Webhooks
// spec, "<id>.<timestamp>.<body>", against every key. It returns, per entry in order, the label of
// the key that verifies it ("?" when none does).
func verifiedBy(t *testing.T, header, id string, ts int64, body []byte, keys []testKey) []string {
	t.Helper()
	content := []byte(id + "." + strconv.FormatInt(ts, 10) + "." + string(body))
	out := []string{}
	if header == "" {
		return out
	}
	for _, entry := range strings.Split(header, " ") {
		version, b64, ok := strings.Cut(entry, ",")
		sig, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil {
			t.Fatalf("entry %q of %q is not <version>,<base64>", entry, header)
		}
		who := "?"
		for _, k := range keys {
			switch {
			case version == "v1" && k.hmac != nil:
				mac := hmac.New(sha256.New, k.hmac)
				mac.Write(content)
				if hmac.Equal(mac.Sum(nil), sig) {
					who = "v1:" + k.label
				}
			case version == "v1a" && k.pub != nil:
				if ed25519.Verify(k.pub, content, sig) {
					who = "v1a:" + k.label
				}
			}
		}
		out = append(out, who)
	}
	return out
}

// TestSignature signs with every combination of current and previous HMAC secrets and Ed25519 keys
// (SPEC §6) and verifies each signature independently: the header lists, in order, the current HMAC
// signature, the previous one while its until is ahead, the current Ed25519 signature and the
// previous one while its until is ahead; keys that cannot be used are an error naming the field,
// never the value.
func TestSignature(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC)
	ahead, past := now.Add(time.Second), now.Add(-time.Second)
	var (
		hCur  = hmacKey("hmac-cur", []byte("current-hmac-key-0123456789abcdef"))
		hPrev = hmacKey("hmac-prev", []byte("previous-hmac-key-0123456789abcde"))
		hRaw  = rawHMACKey("hmac-raw", "a raw signing secret")
		eCur  = edKey("ed-cur", 1, false)
		ePrev = edKey("ed-prev", 2, false)
		eLong = edKey("ed-long", 3, true)
	)
	all := []testKey{hCur, hPrev, hRaw, eCur, ePrev, eLong}
	brokenLong := edKey("broken", 4, true)
	b, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(brokenLong.secret, "whsk_"))
	b[len(b)-1] ^= 1
	brokenLong.secret = "whsk_" + base64.StdEncoding.EncodeToString(b)

	for _, tc := range []struct {
		name string
		sec  event.HTTPSSecrets
		want []string // the key label verifying each entry, in order
		err  string   // the field the error names
	}{
		{name: "nothing to sign", want: []string{}},
		{name: "hmac whsec_", sec: event.HTTPSSecrets{SigningSecret: hCur.secret}, want: []string{"v1:hmac-cur"}},
		{name: "hmac raw", sec: event.HTTPSSecrets{SigningSecret: hRaw.secret}, want: []string{"v1:hmac-raw"}},
		{name: "hmac with an active previous",
			sec:  event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: ahead},
			want: []string{"v1:hmac-cur", "v1:hmac-prev"}},
		{name: "hmac with a raw previous",
			sec:  event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hRaw.secret, SigningSecretPreviousUntil: ahead},
			want: []string{"v1:hmac-cur", "v1:hmac-raw"}},
		{name: "hmac previous ended",
			sec:  event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: past},
			want: []string{"v1:hmac-cur"}},
		{name: "hmac previous ends at its until",
			sec:  event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: now},
			want: []string{"v1:hmac-cur"}},
		{name: "hmac previous without until", sec: event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret},
			want: []string{"v1:hmac-cur"}},
		{name: "hmac previous without current", sec: event.HTTPSSecrets{SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: ahead},
			want: []string{}},
		{name: "ed25519 seed", sec: event.HTTPSSecrets{SigningKey: eCur.secret}, want: []string{"v1a:ed-cur"}},
		{name: "ed25519 64-byte private key", sec: event.HTTPSSecrets{SigningKey: eLong.secret}, want: []string{"v1a:ed-long"}},
		{name: "ed25519 with an active previous",
			sec:  event.HTTPSSecrets{SigningKey: eCur.secret, SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: ahead},
			want: []string{"v1a:ed-cur", "v1a:ed-prev"}},
		{name: "ed25519 previous ended",
			sec:  event.HTTPSSecrets{SigningKey: eCur.secret, SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: past},
			want: []string{"v1a:ed-cur"}},
		{name: "ed25519 previous without current", sec: event.HTTPSSecrets{SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: ahead},
			want: []string{}},
		{name: "both, both previous active",
			sec: event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: ahead,
				SigningKey: eCur.secret, SigningKeyPrevious: eLong.secret, SigningKeyPreviousUntil: ahead},
			want: []string{"v1:hmac-cur", "v1:hmac-prev", "v1a:ed-cur", "v1a:ed-long"}},
		{name: "both, each previous on its own until",
			sec: event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: past,
				SigningKey: eCur.secret, SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: ahead},
			want: []string{"v1:hmac-cur", "v1a:ed-cur", "v1a:ed-prev"}},
		{name: "both, previous ended",
			sec: event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: past,
				SigningKey: eCur.secret, SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: past},
			want: []string{"v1:hmac-cur", "v1a:ed-cur"}},
		{name: "bad whsec_", sec: event.HTTPSSecrets{SigningSecret: "whsec_S3CRET***"}, err: "signing_secret "},
		{name: "empty whsec_", sec: event.HTTPSSecrets{SigningSecret: "whsec_"}, err: "signing_secret "},
		{name: "bad active previous",
			sec: event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: "whsec_S3CRET***", SigningSecretPreviousUntil: ahead},
			err: "signing_secret_previous "},
		{name: "bad ended previous is not used",
			sec:  event.HTTPSSecrets{SigningSecret: hCur.secret, SigningSecretPrevious: "whsec_S3CRET***", SigningSecretPreviousUntil: past},
			want: []string{"v1:hmac-cur"}},
		{name: "key without prefix", sec: event.HTTPSSecrets{SigningKey: strings.TrimPrefix(eCur.secret, "whsk_")}, err: "signing_key "},
		{name: "key of 31 bytes", sec: event.HTTPSSecrets{SigningKey: "whsk_" + base64.StdEncoding.EncodeToString(make([]byte, 31))}, err: "signing_key "},
		{name: "key whose public half is another's", sec: event.HTTPSSecrets{SigningKey: brokenLong.secret}, err: "signing_key "},
		{name: "bad active previous key",
			sec: event.HTTPSSecrets{SigningKey: eCur.secret, SigningKeyPrevious: "whsk_S3CRET", SigningKeyPreviousUntil: ahead},
			err: "signing_key_previous "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(`{"privacy_request_id":"pri_1","identity":{"email":"a@example.com"}}`)
			got, err := Signature(tc.sec, "msg_abc", now, body)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "S3CRET") || strings.Contains(err.Error(), strings.TrimPrefix(eCur.secret, "whsk_")) {
					t.Fatalf("the error echoes the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if signed := Signed(tc.sec); signed != (tc.sec.SigningSecret != "" || tc.sec.SigningKey != "") {
				t.Fatalf("Signed = %v", signed)
			}
			who := verifiedBy(t, got, "msg_abc", now.Unix(), body, all)
			if fmt.Sprint(who) != fmt.Sprint(tc.want) {
				t.Fatalf("signatures %q verify with %v, want %v", got, who, tc.want)
			}
			// Any change of the signed content breaks every signature.
			for _, changed := range [][]string{
				verifiedBy(t, got, "msg_abd", now.Unix(), body, all),
				verifiedBy(t, got, "msg_abc", now.Unix()+1, body, all),
				verifiedBy(t, got, "msg_abc", now.Unix(), append(bytes.Clone(body), ' '), all),
			} {
				for _, w := range changed {
					if w != "?" {
						t.Fatalf("a signature of %q verifies with changed content (%v)", got, changed)
					}
				}
			}
		})
	}
}

// TestSendSignsAtEachAttempt sends the same call through a Sender whose clock moves past the
// previous keys' until: the first attempt carries the current and previous signatures, the second
// only the current ones, each over its own webhook-timestamp (the attempt's clock) and the same
// webhook-id. A key that cannot be used refuses the call for good without reaching the receiver or
// echoing the key.
func TestSendSignsAtEachAttempt(t *testing.T) {
	srv, rec := newRecorder(t)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true}})
	defer s.Close()
	// The sender's clock also sets the calls' deadlines: the until is a little ahead of real time.
	until := time.Now().Add(time.Minute).Truncate(time.Second)
	var clock time.Time
	s.now = func() time.Time { return clock }

	hCur, hPrev := hmacKey("hmac-cur", []byte("current-hmac-key")), hmacKey("hmac-prev", []byte("previous-hmac-key"))
	eCur, ePrev := edKey("ed-cur", 1, false), edKey("ed-prev", 2, true)
	sec := event.HTTPSSecrets{URL: srv.URL + "/hook",
		SigningSecret: hCur.secret, SigningSecretPrevious: hPrev.secret, SigningSecretPreviousUntil: until,
		SigningKey: eCur.secret, SigningKeyPrevious: ePrev.secret, SigningKeyPreviousUntil: until}
	call := Call{Secrets: sec, WebhookID: "msg_rotate", Body: Body{PrivacyRequestID: "pri_1"}}
	for _, at := range []time.Time{until.Add(-time.Millisecond), until} {
		clock = at
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res := s.Send(ctx, call)
		cancel()
		if res.Status != http.StatusOK {
			t.Fatalf("send at %s: %+v", at, res)
		}
	}
	want := [][]string{
		{"v1:hmac-cur", "v1:hmac-prev", "v1a:ed-cur", "v1a:ed-prev"},
		{"v1:hmac-cur", "v1a:ed-cur"},
	}
	keys := []testKey{hCur, hPrev, eCur, ePrev}
	got, bodies := rec.calls()
	if len(got) != 2 {
		t.Fatalf("%d calls, want 2", len(got))
	}
	for i, h := range got {
		ts := until.Add(-time.Millisecond).Unix()
		if i == 1 {
			ts = until.Unix()
		}
		if h.Get("webhook-id") != "msg_rotate" || h.Get("webhook-timestamp") != strconv.FormatInt(ts, 10) {
			t.Fatalf("call %d: webhook-id %q timestamp %q, want msg_rotate and %d", i, h.Get("webhook-id"), h.Get("webhook-timestamp"), ts)
		}
		if who := verifiedBy(t, h.Get("webhook-signature"), "msg_rotate", ts, bodies[i], keys); fmt.Sprint(who) != fmt.Sprint(want[i]) {
			t.Fatalf("call %d: signatures verify with %v, want %v", i, who, want[i])
		}
	}

	bad := call
	bad.Secrets.SigningKey = "whsk_S3CRET-not-a-key"
	res := s.Send(context.Background(), bad)
	if !res.Forbidden || res.Err == nil || strings.Contains(res.Err.Error(), "S3CRET") || Classify(event.OneWay, res).Verdict != Refused {
		t.Fatalf("bad signing key: %+v, want refused for good without the value", res)
	}
	if got, _ := rec.calls(); len(got) != 2 {
		t.Fatalf("the call with a bad signing key reached the receiver")
	}
}

// TestSendCarriesTraceContext: a call made within a span carries its traceparent and tracestate,
// and its signatures still verify (they cover the body, not the headers); a call made without one
// (tracing off) carries none.
func TestSendCarriesTraceContext(t *testing.T) {
	srv, rec := newRecorder(t)
	s := NewSender(Config{Timeout: 2 * time.Second, Policy: netguard.Policy{AllowHTTP: true, AllowPrivate: true}})
	defer s.Close()
	key := hmacKey("hmac", []byte("a-signing-key-of-the-test"))
	call := Call{Secrets: event.HTTPSSecrets{URL: srv.URL + "/hook", SigningSecret: key.secret}, WebhookID: "msg_traced",
		Body: Body{PrivacyRequestID: "pri_1"}}

	p := tracing.WithExporter("executor", tracetest.NewInMemoryExporter())
	defer p.Shutdown(context.Background())
	parent := nats.Header{}
	parent.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	parent.Set("tracestate", "vendor=opaque")
	ctx, span := p.Start(p.Extract(context.Background(), parent), "webhook call")
	if res := s.Send(ctx, call); res.Status != http.StatusOK {
		t.Fatalf("traced call: %+v", res)
	}
	span.End()
	if res := s.Send(context.Background(), call); res.Status != http.StatusOK {
		t.Fatalf("untraced call: %+v", res)
	}
	got, bodies := rec.calls()
	if len(got) != 2 {
		t.Fatalf("%d calls, want 2", len(got))
	}
	if tp, want := got[0].Get("traceparent"), tracing.Traceparent(ctx); tp == "" || tp != want || got[0].Get("tracestate") != "vendor=opaque" {
		t.Errorf("traced call: traceparent %q tracestate %q, want %q and vendor=opaque", tp, got[0].Get("tracestate"), want)
	}
	if tp := got[1].Get("traceparent"); tp != "" {
		t.Errorf("untraced call carried traceparent %q", tp)
	}
	for i, h := range got {
		ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		if who := verifiedBy(t, h.Get("webhook-signature"), "msg_traced", ts, bodies[i], []testKey{key}); fmt.Sprint(who) != "[v1:hmac]" {
			t.Errorf("call %d: signatures verify with %v, want [v1:hmac]", i, who)
		}
	}
}

// recorder keeps the headers and body of every call its server received.
type recorder struct {
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
}

// newRecorder starts an HTTP server that answers 200 and records each call; it stops with the test.
func newRecorder(t *testing.T) (*httptest.Server, *recorder) {
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(r.Body)
		rec.mu.Lock()
		rec.headers = append(rec.headers, r.Header.Clone())
		rec.bodies = append(rec.bodies, b.Bytes())
		rec.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

// calls returns the headers and bodies recorded so far, in order.
func (r *recorder) calls() ([]http.Header, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...), append([][]byte(nil), r.bodies...)
}
