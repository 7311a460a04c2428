package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// signV1 and signV1a sign as the sender does, over "<id>.<ts>.<body>".
func signV1(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func signV1a(key ed25519.PrivateKey, id string, ts int64, body []byte) string {
	msg := append([]byte(id+"."+strconv.FormatInt(ts, 10)+"."), body...)
	return "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(key, msg))
}

func edKey(b byte) (ed25519.PrivateKey, string) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	return priv, "whpk_" + base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

// TestVerifier: a call is accepted when any signature it carries verifies with any configured key
// of its kind — the current or the previous HMAC secret, the current or the previous Ed25519 public
// key — and refused otherwise, or when its timestamp is too far from now.
func TestVerifier(t *testing.T) {
	body := []byte(`{"privacy_request_id":"pri_1"}`)
	now := time.Now()
	ts := now.Unix()
	newKey, oldKey := []byte("0123456789abcdef-new"), []byte("0123456789abcdef-old")
	whsec := func(k []byte) string { return "whsec_" + base64.StdEncoding.EncodeToString(k) }
	edNew, pubNew := edKey(1)
	edOld, pubOld := edKey(2)
	_, pubOther := edKey(3)
	v1New, v1Old := signV1(newKey, "msg_1", ts, body), signV1(oldKey, "msg_1", ts, body)
	v1aNew, v1aOld := signV1a(edNew, "msg_1", ts, body), signV1a(edOld, "msg_1", ts, body)
	tests := []struct {
		name       string
		secrets    []string
		publicKeys []string
		sig        string
		ts         int64
		body       []byte
		ok         bool
	}{
		{name: "raw secret", secrets: []string{"raw-secret"}, sig: signV1([]byte("raw-secret"), "msg_1", ts, body), ok: true},
		{name: "whsec secret", secrets: []string{whsec(newKey)}, sig: v1New, ok: true},
		{name: "rotation: new and old sent, new configured", secrets: []string{whsec(newKey)}, sig: v1New + " " + v1Old, ok: true},
		{name: "rotation: new and old sent, old configured", secrets: []string{whsec(oldKey)}, sig: v1New + " " + v1Old, ok: true},
		{name: "rotation: old sent, both configured", secrets: []string{whsec(newKey), whsec(oldKey)}, sig: v1Old, ok: true},
		{name: "old sent, new configured", secrets: []string{whsec(newKey)}, sig: v1Old},
		{name: "ed25519", publicKeys: []string{pubNew}, sig: v1aNew, ok: true},
		{name: "ed25519 rotation, old configured", publicKeys: []string{pubOld}, sig: v1aNew + " " + v1aOld, ok: true},
		{name: "ed25519 rotation, both configured", publicKeys: []string{pubOther, pubNew}, sig: v1aOld + " " + v1aNew, ok: true},
		{name: "ed25519 of another key", publicKeys: []string{pubOther}, sig: v1aNew + " " + v1aOld},
		{name: "all four sent, public key configured", publicKeys: []string{pubNew}, sig: strings.Join([]string{v1New, v1Old, v1aNew, v1aOld}, " "), ok: true},
		{name: "all four sent, old secret configured", secrets: []string{whsec(oldKey)}, sig: strings.Join([]string{v1New, v1Old, v1aNew, v1aOld}, " "), ok: true},
		{name: "v1a only, secret configured", secrets: []string{whsec(newKey)}, sig: v1aNew},
		{name: "v1 only, public key configured", publicKeys: []string{pubNew}, sig: v1New},
		{name: "an HMAC signature presented as v1a", publicKeys: []string{pubNew}, secrets: []string{whsec(newKey)}, sig: "v1a," + strings.TrimPrefix(v1New, "v1,")},
		{name: "malformed entries are skipped", secrets: []string{whsec(newKey)}, sig: "garbage v1,!!! v2," + strings.TrimPrefix(v1New, "v1,") + " " + v1New, ok: true},
		{name: "old timestamp", secrets: []string{whsec(newKey)}, ts: now.Add(-time.Hour).Unix(), sig: signV1(newKey, "msg_1", now.Add(-time.Hour).Unix(), body)},
		{name: "tampered body", secrets: []string{whsec(newKey)}, publicKeys: []string{pubNew}, body: []byte(`{}`), sig: v1New + " " + v1aNew},
		{name: "no signature", secrets: []string{whsec(newKey)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.secrets, tt.publicKeys)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			h.Set("webhook-id", "msg_1")
			h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
			if tt.ts != 0 {
				h.Set("webhook-timestamp", strconv.FormatInt(tt.ts, 10))
			}
			h.Set("webhook-signature", tt.sig)
			b := body
			if tt.body != nil {
				b = tt.body
			}
			if err := v.Verify(h, b, now); (err == nil) != tt.ok {
				t.Fatalf("Verify err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestNewVerifier: keys that cannot be used are refused by position, without their value; no key
// at all is no check.
func TestNewVerifier(t *testing.T) {
	_, pub := edKey(1)
	for _, tc := range []struct {
		secrets, publicKeys []string
		err                 string
	}{
		{secrets: []string{"ok", "whsec_S3CRET***"}, err: "signing secret 2"},
		{secrets: []string{"whsec_"}, err: "signing secret 1 is empty"},
		{publicKeys: []string{pub, strings.TrimPrefix(pub, "whpk_")}, err: "public key 2"},
		{publicKeys: []string{"whpk_" + base64.StdEncoding.EncodeToString([]byte("S3CRET-31-bytes-long-0123456789"))}, err: "public key 1"},
		{publicKeys: []string{"whsk_S3CRET"}, err: "public key 1"},
	} {
		_, err := NewVerifier(tc.secrets, tc.publicKeys)
		if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "S3CRET") {
			t.Errorf("NewVerifier(%q, %q) = %v, want an error naming %q without the value", tc.secrets, tc.publicKeys, err, tc.err)
		}
	}
	if v, err := NewVerifier(nil, nil); v != nil || err != nil {
		t.Errorf("no keys: %v %v, want no verifier", v, err)
	}
}

// TestSigningFlags: -signing-secret and -public-key may be repeated and each hold a
// comma-separated list.
func TestSigningFlags(t *testing.T) {
	var secrets, keys listFlag
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	fs.Var(&secrets, "signing-secret", "")
	fs.Var(&keys, "public-key", "")
	if err := fs.Parse([]string{"-signing-secret", "a,b", "-signing-secret", "c", "-public-key", "whpk_x, whpk_y,"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(secrets, " ") != "a b c" || strings.Join(keys, " ") != "whpk_x whpk_y" {
		t.Fatalf("secrets %q keys %q", secrets, keys)
	}
}

// TestGenerateKey: -gen-key prints a whsk_ seed and its whpk_ public key; a call signed with the
// first verifies with the second.
func TestGenerateKey(t *testing.T) {
	var out bytes.Buffer
	if err := GenerateKey(&out, nil); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		vars[k] = v
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(vars["SIGNING_KEY"], "whsk_"))
	if !strings.HasPrefix(vars["SIGNING_KEY"], "whsk_") || err != nil || len(seed) != ed25519.SeedSize {
		t.Fatalf("SIGNING_KEY %q: want whsk_ and the base64 of a 32-byte seed", vars["SIGNING_KEY"])
	}
	v, err := NewVerifier(nil, []string{vars["PUBLIC_KEY"]})
	if err != nil {
		t.Fatalf("PUBLIC_KEY %q: %v", vars["PUBLIC_KEY"], err)
	}
	now := time.Now()
	body := []byte(`{}`)
	h := http.Header{}
	h.Set("webhook-id", "msg_gen")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", signV1a(ed25519.NewKeyFromSeed(seed), "msg_gen", now.Unix(), body))
	if err := v.Verify(h, body, now); err != nil {
		t.Fatalf("a call signed with SIGNING_KEY does not verify with PUBLIC_KEY: %v", err)
	}
	var again bytes.Buffer
	_ = GenerateKey(&again, nil)
	if again.String() == out.String() {
		t.Fatal("two generated keys are the same")
	}
}

// TestReceiverRefusesUnverifiedCalls: with a verifier, a call whose signatures do not verify is
// answered 401 and not acted on; a signed one is answered.
func TestReceiverRefusesUnverifiedCalls(t *testing.T) {
	priv, pub := edKey(1)
	v, err := NewVerifier([]string{"old-secret"}, []string{pub})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewReceiver(Options{Verifier: v}, io.Discard))
	defer srv.Close()
	body := []byte(`{"privacy_request_id":"pri_1","policy_key":"p","direction":"one_way","callback_type":"post"}`)
	// post sends the call signed by sign at the call's timestamp (unsigned when sign is nil).
	post := func(sign func(ts int64) string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		ts := time.Now().Unix()
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		if sign != nil {
			req.Header.Set("webhook-signature", sign(ts))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(nil); got != http.StatusUnauthorized {
		t.Fatalf("unsigned call: %d, want 401", got)
	}
	if got := post(func(ts int64) string { return signV1([]byte("another"), "msg_1", ts, body) }); got != http.StatusUnauthorized {
		t.Fatalf("call signed with another secret: %d, want 401", got)
	}
	both := func(ts int64) string {
		return signV1([]byte("new-secret"), "msg_1", ts, body) + " " + signV1a(priv, "msg_1", ts, body)
	}
	if got := post(both); got != http.StatusOK {
		t.Fatalf("call with a verifying v1a signature: %d, want 200", got)
	}
}
