package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func (e *env) storedSecrets(key string) string {
	e.t.Helper()
	var doc struct {
		Secrets string `bson:"secrets"`
	}
	err := e.st.Collection("connections").FindOne(context.Background(), bson.D{{Key: "_id", Value: key}}).Decode(&doc)
	if err != nil && key != "ghost" {
		e.t.Fatal(err)
	}
	return doc.Secrets
}

// TestSecretsNeverExposed sets secrets and checks that no answer, log line, stored document or
// KV entry holds any of their plaintext values, and that the plan's sealed value opens to them.
func TestSecretsNeverExposed(t *testing.T) {
	e := newEnv(t, envOptions{})
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	k1, k2 := newTestEdKey(5), newTestEdKey(6)
	plain := event.HTTPSSecrets{
		URL:                        "https://example.com/hook?token=url-SECRET-q1",
		Authorization:              "Bearer auth-SECRET-a1",
		Headers:                    map[string]string{"X-Api-Key": "header-SECRET-h1"},
		SigningSecret:              "signing-SECRET-s1",
		SigningSecretPrevious:      "signing-previous-SECRET-s2",
		SigningSecretPreviousUntil: until,
		SigningKey:                 k1.seed,
		SigningKeyPrevious:         k2.long,
		SigningKeyPreviousUntil:    until,
	}
	needles := []string{"url-SECRET-q1", "auth-SECRET-a1", "header-SECRET-h1", "signing-SECRET-s1", "signing-previous-SECRET-s2",
		strings.TrimPrefix(k1.seed, "whsk_"), strings.TrimPrefix(k1.long, "whsk_"),
		strings.TrimPrefix(k2.seed, "whsk_"), strings.TrimPrefix(k2.long, "whsk_")}
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Hooks", "key": "hooks", "connection_type": "https", "access": "read"},
	}, http.StatusOK, nil)
	e.policy("p")
	e.call(http.MethodPut, "/api/v1/policy/p/webhook/pre_execution", []any{hook("w", "W", "one_way", "hooks")}, 200, nil)

	var answers []string
	answers = append(answers, string(e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", plain, 200, nil)))
	// A rejected PUT echoes nothing of the body either.
	bad := plain
	bad.URL = "http://example.com/?token=url-SECRET-q1"
	_, b, _ := e.raw(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", e.root, bad)
	answers = append(answers, string(b))
	e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", plain, 200, nil)
	for _, path := range []string{
		"/api/v1/connection", "/api/v1/connection/hooks", "/api/v1/policy/p/webhook/pre_execution",
		"/api/v1/policy/p/webhook/pre_execution/w", "/api/v1/policy", "/api/v1/policy/p",
		"/api/v1/connection/hooks/signing-key",
	} {
		answers = append(answers, string(e.call(http.MethodGet, path, nil, 200, nil)))
	}
	_, planRaw, ok := e.plan("p")
	if !ok {
		t.Fatal("no plan published")
	}
	raw, err := e.st.Collection("connections").FindOne(context.Background(), bson.D{{Key: "_id", Value: "hooks"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"answers": strings.Join(answers, "\n"), "logs": e.logs.String(), "mongodb": raw.String(), "kv": string(planRaw),
	}
	for where, text := range places {
		for _, n := range needles {
			if strings.Contains(text, n) {
				t.Errorf("%s contains the plaintext %q", where, n)
			}
		}
	}
	// The public keys are not secret: they are stored and shown.
	for _, pub := range []string{k1.public, k2.public} {
		if !strings.Contains(places["mongodb"], pub) || !strings.Contains(places["answers"], "whpk_"+pub) {
			t.Errorf("the public key %s is not stored and shown", pub)
		}
	}
	if !strings.Contains(e.logs.String(), "/api/v1/connection/{key}/secret") {
		t.Fatal("the log capture saw no access line for the secret route; the check above would be vacuous")
	}

	var plan event.Plan
	if err := json.Unmarshal(planRaw, &plan); err != nil {
		t.Fatal(err)
	}
	kr, err := secret.NewKeyring(testAppKey, "", secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := kr.Open(plan.Pre[0].Secrets, []byte("hooks"))
	if err != nil {
		t.Fatalf("open the plan's secrets with the connection key as associated data: %v", err)
	}
	var got event.HTTPSSecrets
	if err := json.Unmarshal(opened, &got); err != nil || got.Authorization != plain.Authorization || got.URL != plain.URL ||
		got.SigningSecret != plain.SigningSecret || got.Headers["X-Api-Key"] != "header-SECRET-h1" ||
		got.SigningSecretPrevious != plain.SigningSecretPrevious || !got.SigningSecretPreviousUntil.Equal(until) ||
		got.SigningKey != plain.SigningKey || got.SigningKeyPrevious != plain.SigningKeyPrevious || !got.SigningKeyPreviousUntil.Equal(until) {
		t.Fatalf("opened secrets: got %+v, want %+v", got, plain)
	}
	if plan.Pre[0].Secrets != e.storedSecrets("hooks") {
		t.Fatal("the plan's sealed secrets differ from the stored value")
	}
	if _, err := kr.Open(plan.Pre[0].Secrets, []byte("other")); err == nil {
		t.Fatal("the sealed secrets open under another connection key")
	}
	if plan.Pre[0].URL != "https://example.com" {
		t.Fatalf("informational url: got %q, want the scheme and host only", plan.Pre[0].URL)
	}
}

// TestSecretsKeyRotation seals under one key, restarts with a new key and the old one as
// previous: the secrets stay readable, are re-sealed under the new key at start, and the plans
// follow.
func TestSecretsKeyRotation(t *testing.T) {
	first := newEnv(t, envOptions{appKey: testAppKey})
	first.https("hooks", "https://example.com/h", "auth-ROTATE-1")
	first.policy("p")
	first.call(http.MethodPut, "/api/v1/policy/p/webhook/pre_execution", []any{hook("w", "W", "one_way", "hooks")}, 200, nil)
	old := first.storedSecrets("hooks")

	rotating, err := secret.NewKeyring(otherAppKey, testAppKey, secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotating.Open(old, []byte("hooks")); err != nil {
		t.Fatalf("old value with the old key as previous: %v", err)
	}
	if rotating.IsCurrent(old) {
		t.Fatal("old value counts as current under the new key")
	}

	second := newEnv(t, envOptions{appKey: otherAppKey, previousKey: testAppKey, db: first.db, nats: first.nats})
	now := second.storedSecrets("hooks")
	if now == old || !rotating.IsCurrent(now) {
		t.Fatal("the secrets were not re-sealed under the new key at start")
	}
	newOnly, err := secret.NewKeyring(otherAppKey, "", secret.PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := newOnly.Open(now, []byte("hooks"))
	if err != nil || !strings.Contains(string(plain), "auth-ROTATE-1") {
		t.Fatalf("open with the new key alone: %v", err)
	}
	var plan event.Plan
	_, raw, ok := second.plan("p")
	if !ok || json.Unmarshal(raw, &plan) != nil || plan.Pre[0].Secrets != now {
		t.Fatalf("plan after rotation: got %s, want the re-sealed value", raw)
	}
	second.call(http.MethodGet, "/api/v1/connection/hooks", nil, 200, nil)
}
