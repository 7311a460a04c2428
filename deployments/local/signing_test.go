package main

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/testkit"
)

// signingKeyView is the answer of GET /api/v1/connection/{key}/signing-key.
type signingKeyView struct {
	PublicKey              string     `json:"public_key"`
	PublicKeyPrevious      *string    `json:"public_key_previous"`
	PublicKeyPreviousUntil *time.Time `json:"public_key_previous_until"`
}

// verifier checks the signatures of a call the way a receiver would, with crypto/hmac and
// crypto/ed25519 over the Standard Webhooks signed content "<webhook-id>.<webhook-timestamp>.<body>".
type verifier struct {
	hmac map[string][]byte            // label → raw HMAC key
	ed   map[string]ed25519.PublicKey // label → public key
}

// verify returns, per entry of the call's webhook-signature in order, the label of the key that
// verifies it ("?" when none does), and fails the test when the headers are missing or the
// timestamp is not the call's time.
func (v verifier) verify(t *testing.T, c testkit.Call) []string {
	t.Helper()
	id, ts, sigs := c.Header.Get("webhook-id"), c.Header.Get("webhook-timestamp"), c.Header.Get("webhook-signature")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil || sigs == "" {
		t.Fatalf("call %s: webhook-id %q, webhook-timestamp %q, webhook-signature %q", c, id, ts, sigs)
	}
	if d := c.At.Sub(time.Unix(sec, 0)); d < -time.Second || d > 5*time.Second {
		t.Fatalf("call %s at %s has webhook-timestamp %s", c, c.At, time.Unix(sec, 0))
	}
	content := []byte(id + "." + ts + "." + string(c.Body))
	var out []string
	for _, entry := range strings.Split(sigs, " ") {
		version, b64, _ := strings.Cut(entry, ",")
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("call %s: entry %q is not base64", c, entry)
		}
		who := "?"
		switch version {
		case "v1":
			for label, key := range v.hmac {
				mac := hmac.New(sha256.New, key)
				mac.Write(content)
				if hmac.Equal(mac.Sum(nil), sig) {
					who = "v1:" + label
				}
			}
		case "v1a":
			for label, pub := range v.ed {
				if ed25519.Verify(pub, content, sig) {
					who = "v1a:" + label
				}
			}
		}
		out = append(out, who)
	}
	return out
}

// publicKey parses a whpk_ key of an API answer.
func publicKey(t *testing.T, whpk string) ed25519.PublicKey {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whpk, "whpk_"))
	if !strings.HasPrefix(whpk, "whpk_") || err != nil || len(raw) != ed25519.PublicKeySize {
		t.Fatalf("public key %q is not whpk_ and the base64 of 32 bytes", whpk)
	}
	return ed25519.PublicKey(raw)
}

// TestSigningKeyRotation runs signing key rotation through the whole local stack (SPEC §2, §6): a
// connection holds a current and a previous HMAC secret and a current and a previous Ed25519 key,
// each previous in use for a few seconds. Calls made meanwhile carry four signatures, each verified
// independently — the Ed25519 ones with the public keys the API answers; once the until has passed,
// calls carry the current signatures alone and the API stops showing the previous key.
func TestSigningKeyRotation(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	b64 := base64.StdEncoding.EncodeToString
	newHMAC, oldHMAC := random(32), []byte("the old raw signing secret "+b64(random(9)))
	newEd, oldEd := ed25519.NewKeyFromSeed(random(ed25519.SeedSize)), ed25519.NewKeyFromSeed(random(ed25519.SeedSize))

	f.mustAPI(http.MethodPatch, "/api/v1/policy", `[{"name": "Signed", "key": "signed"}]`)
	f.mustAPI(http.MethodPatch, "/api/v1/connection", `[{"name": "Signed hook", "key": "signed_hook", "connection_type": "https", "access": "read"}]`)
	// The previous keys stay in use for a few seconds: long enough for the first request's call.
	until := time.Now().Add(6 * time.Second).UTC()
	secrets, _ := json.Marshal(map[string]any{
		"url": f.rcv.URL("/signed"), "authorization": "Bearer flow-test",
		"signing_secret": "whsec_" + b64(newHMAC), "signing_secret_previous": string(oldHMAC),
		"signing_secret_previous_until": until.Format(time.RFC3339Nano),
		"signing_key":                   "whsk_" + b64(newEd.Seed()), // the 32-byte seed form
		"signing_key_previous":          "whsk_" + b64(oldEd),        // the 64-byte private key form
		"signing_key_previous_until":    until.Format(time.RFC3339Nano),
	})
	f.mustAPI(http.MethodPut, "/api/v1/connection/signed_hook/secret?verify=false", string(secrets))
	f.mustAPI(http.MethodPut, "/api/v1/policy/signed/webhook/pre_execution",
		`[{"connection_config_key": "signed_hook", "direction": "one_way", "key": "hook", "name": "hook"}]`)

	// The public keys, as a receiver's operator reads them.
	var keys signingKeyView
	if err := json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/connection/signed_hook/signing-key", ""), &keys); err != nil {
		t.Fatal(err)
	}
	wantPub := "whpk_" + b64(newEd.Public().(ed25519.PublicKey))
	wantPrev := "whpk_" + b64(oldEd.Public().(ed25519.PublicKey))
	if keys.PublicKey != wantPub || keys.PublicKeyPrevious == nil || *keys.PublicKeyPrevious != wantPrev ||
		keys.PublicKeyPreviousUntil == nil || !keys.PublicKeyPreviousUntil.Equal(until.Truncate(time.Millisecond)) {
		t.Fatalf("signing-key: got %+v, want %s and previous %s until %s", keys, wantPub, wantPrev, until)
	}
	v := verifier{
		hmac: map[string][]byte{"new": newHMAC, "old": oldHMAC},
		ed:   map[string]ed25519.PublicKey{"new": publicKey(t, keys.PublicKey), "old": publicKey(t, *keys.PublicKeyPrevious)},
	}

	f.submit("pri_signed_1", "signed", "a@example.com")
	f.waitStatus("pri_signed_1", "complete", 20*time.Second)
	first := f.waitCalls("/signed", 1, 5*time.Second)[0]
	if !first.At.Before(until) {
		t.Fatalf("the first call came at %s, after the until %s: the machine is too slow for this test's timing", first.At, until)
	}
	if got, want := v.verify(t, first), []string{"v1:new", "v1:old", "v1a:new", "v1a:old"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("during the rotation the signatures %q verify with %v, want %v", first.Header.Get("webhook-signature"), got, want)
	}

	// After the until (by the executor's clock, the same machine's here) only the current keys sign.
	time.Sleep(time.Until(until.Add(500 * time.Millisecond)))
	f.submit("pri_signed_2", "signed", "b@example.com")
	f.waitStatus("pri_signed_2", "complete", 20*time.Second)
	calls := f.waitCalls("/signed", 2, 5*time.Second)
	second := calls[len(calls)-1]
	if second.RequestID != "pri_signed_2" {
		t.Fatalf("the last call is %s, want one of pri_signed_2", second)
	}
	if got, want := v.verify(t, second), []string{"v1:new", "v1a:new"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the until the signatures %q verify with %v, want %v", second.Header.Get("webhook-signature"), got, want)
	}
	if err := json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/connection/signed_hook/signing-key", ""), &keys); err != nil {
		t.Fatal(err)
	}
	if keys.PublicKey != wantPub || keys.PublicKeyPrevious != nil || keys.PublicKeyPreviousUntil != nil {
		t.Fatalf("signing-key after the until: got %+v, want %s alone", keys, wantPub)
	}
}

// TestRotationReachesRunningRequests: a request paused before a connection's signing secret is
// rotated signs its later call with the new secret (and the old one as previous), not with the one
// it started with: calls take their connection's secrets as last published (SPEC §5.1), so a
// rotation's until holds for running requests too.
func TestRotationReachesRunningRequests(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.answer("/ask", `{"halt": true}`)
	oldKey, newKey := []byte("the secret before the rotation"), []byte("the secret after the rotation")
	f.mustAPI(http.MethodPatch, "/api/v1/policy", `[{"name": "Rotating", "key": "rotating"}]`)
	put := func(conn, path string, extra map[string]any) {
		f.mustAPI(http.MethodPatch, "/api/v1/connection",
			fmt.Sprintf(`[{"name": %q, "key": %q, "connection_type": "https", "access": "read"}]`, conn, conn))
		body := map[string]any{"url": f.rcv.URL(path), "authorization": "Bearer flow-test", "signing_secret": string(oldKey)}
		for k, v := range extra {
			body[k] = v
		}
		b, _ := json.Marshal(body)
		f.mustAPI(http.MethodPut, "/api/v1/connection/"+conn+"/secret?verify=false", string(b))
	}
	put("ask_conn", "/ask", nil)
	put("after_conn", "/after", nil)
	f.mustAPI(http.MethodPut, "/api/v1/policy/rotating/webhook/pre_execution",
		`[{"connection_config_key": "ask_conn", "direction": "two_way", "key": "ask", "name": "ask"}]`)
	f.mustAPI(http.MethodPut, "/api/v1/policy/rotating/webhook/post_execution",
		`[{"connection_config_key": "after_conn", "direction": "one_way", "key": "after", "name": "after"}]`)
	v := verifier{hmac: map[string][]byte{"old": oldKey, "new": newKey}}

	f.submit("pri_rotating", "rotating", "a@example.com")
	f.waitStatus("pri_rotating", "paused", 20*time.Second)
	ask := f.waitCalls("/ask", 1, 5*time.Second)[0]
	if got := v.verify(t, ask); fmt.Sprint(got) != "[v1:old]" {
		t.Fatalf("before the rotation the call is signed by %v, want [v1:old]", got)
	}

	plans, err := f.js.KeyValue(f.ctx, "policy_webhooks")
	if err != nil {
		t.Fatal(err)
	}
	before, err := plans.Get(f.ctx, "rotating")
	if err != nil {
		t.Fatal(err)
	}
	put("after_conn", "/after", map[string]any{"signing_secret": string(newKey), "signing_secret_previous": string(oldKey),
		"signing_secret_previous_until": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	testkit.Eventually(t, 10*time.Second, "the plan re-published with the new secrets", func() bool {
		e, err := plans.Get(f.ctx, "rotating")
		return err == nil && e.Revision() > before.Revision()
	})
	time.Sleep(500 * time.Millisecond) // the executor's watch of policy_webhooks delivers it

	if status, body := f.call(http.MethodPost, ask.Header.Get("reply-to"), `{}`, "Bearer "+ask.Header.Get("reply-to-token")); status != 200 {
		t.Fatalf("resume: %d %s", status, body)
	}
	f.waitStatus("pri_rotating", "complete", 20*time.Second)
	after := f.waitCalls("/after", 1, 5*time.Second)[0]
	if got := v.verify(t, after); fmt.Sprint(got) != "[v1:new v1:old]" {
		t.Fatalf("after the rotation the running request's call is signed by %v (%q), want [v1:new v1:old]", got, after.Header.Get("webhook-signature"))
	}
}

// TestSnapshotSecretsWhenThePolicyDropsTheConnection: a running request whose policy no longer
// uses the connection of a webhook in its snapshot calls it with the snapshot's secrets (SPEC
// §5.1): a later PUT of that connection's secrets does not reach it, since no plan of the policy
// carries them, and the policy's new webhook is not called in its place.
func TestSnapshotSecretsWhenThePolicyDropsTheConnection(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.answer("/ask", `{"halt": true}`)
	put := func(conn, path string) { f.connection(conn, f.rcv.URL(path)) }
	put("ask_conn", "/ask")
	put("crm_conn", "/crm-before")
	put("other_conn", "/other")
	f.mustAPI(http.MethodPatch, "/api/v1/policy", `[{"name": "Dropping", "key": "dropping"}]`)
	f.mustAPI(http.MethodPut, "/api/v1/policy/dropping/webhook/pre_execution",
		`[{"connection_config_key": "ask_conn", "direction": "two_way", "key": "ask", "name": "ask"},
		  {"connection_config_key": "crm_conn", "direction": "one_way", "key": "crm", "name": "crm"}]`)

	f.submit("pri_dropping", "dropping", "a@example.com")
	f.waitStatus("pri_dropping", "paused", 20*time.Second)
	ask := f.waitCalls("/ask", 1, 5*time.Second)[0]

	// The policy's crm webhook moves to another connection; then crm_conn's secrets change.
	f.mustAPI(http.MethodPatch, "/api/v1/policy/dropping/webhook/pre_execution/crm", `{"connection_config_key": "other_conn"}`)
	put("crm_conn", "/crm-after")
	time.Sleep(500 * time.Millisecond) // the executor's watch of policy_webhooks delivers the plan

	if status, body := f.call(http.MethodPost, ask.Header.Get("reply-to"), `{}`, "Bearer "+ask.Header.Get("reply-to-token")); status != 200 {
		t.Fatalf("resume: %d %s", status, body)
	}
	f.waitStatus("pri_dropping", "complete", 20*time.Second)
	got := map[string]int{}
	for _, p := range []string{"/crm-before", "/crm-after", "/other"} {
		got[p] = len(f.callsTo(p))
	}
	if got["/crm-before"] != 1 || got["/crm-after"] != 0 || got["/other"] != 0 {
		t.Fatalf("calls %v: want the snapshot's crm_conn secrets (/crm-before) once, nothing else", got)
	}
}
