package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// testEdKey is an Ed25519 key of the tests from a seed of b: its "whsk_" forms (32-byte seed and
// 64-byte private key) and its public key as the standard base64 of ed25519.PublicKey.
type testEdKey struct {
	seed, long, public string
}

func newTestEdKey(b byte) testEdKey {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	b64 := base64.StdEncoding.EncodeToString
	return testEdKey{seed: "whsk_" + b64(priv.Seed()), long: "whsk_" + b64(priv), public: b64(priv.Public().(ed25519.PublicKey))}
}

// signingSecrets returns https secrets with a current and previous HMAC secret and Ed25519 key,
// each previous in use for an hour, mutated by change.
func signingSecrets(change func(s map[string]any)) map[string]any {
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	s := map[string]any{
		"url":                           "https://example.com/h",
		"authorization":                 "auth",
		"signing_secret":                "whsec_" + base64.StdEncoding.EncodeToString([]byte("current-SECRET-0123456789")),
		"signing_secret_previous":       "previous-SECRET-raw",
		"signing_secret_previous_until": until,
		"signing_key":                   newTestEdKey(1).seed,
		"signing_key_previous":          newTestEdKey(2).long,
		"signing_key_previous_until":    until,
	}
	if change != nil {
		change(s)
	}
	return s
}

// storedSigning returns the stored sealed secrets and public keys of key, as raw BSON text.
func (e *env) storedSigning(key string) string {
	e.t.Helper()
	raw, err := e.st.Collection("connections").FindOne(context.Background(), bson.D{{Key: "_id", Value: key}}).Raw()
	if err != nil {
		e.t.Fatal(err)
	}
	return raw.Lookup("secrets").String() + " " + raw.Lookup("signing_public_keys").String()
}

// TestSecretsSigningValidation puts https secrets with signing rotation and Ed25519 keys through
// the API (SPEC §2): valid ones are stored, every broken field is a 422 that names the field,
// echoes no secret and changes nothing (neither the sealed secrets nor the public keys).
func TestSecretsSigningValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("hooks", "https://example.com", "auth")
	k1, k2 := newTestEdKey(1), newTestEdKey(2)
	at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
	set := func(kv ...any) func(s map[string]any) {
		return func(s map[string]any) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == nil {
					delete(s, kv[i].(string))
					continue
				}
				s[kv[i].(string)] = kv[i+1]
			}
		}
	}
	only := func(kv ...any) map[string]any {
		s := map[string]any{"url": "https://example.com/h", "authorization": "auth"}
		set(kv...)(s)
		return s
	}
	tests := []struct {
		name   string
		body   any
		status int
		loc    string // the loc of the 422, joined by "."
	}{
		{"valid: everything", signingSecrets(nil), 200, ""},
		{"valid: hmac rotation only", only("signing_secret", "current-SECRET", "signing_secret_previous", "previous-SECRET",
			"signing_secret_previous_until", at(time.Hour)), 200, ""},
		{"valid: ed25519 seed only", only("signing_key", k1.seed), 200, ""},
		{"valid: ed25519 private key only", only("signing_key", k1.long), 200, ""},
		{"valid: ed25519 rotation only", only("signing_key", k1.long, "signing_key_previous", k2.seed,
			"signing_key_previous_until", at(time.Minute)), 200, ""},
		{"valid: until with an offset and fractions", signingSecrets(set("signing_key_previous_until",
			time.Now().Add(2*time.Hour).In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano))), 200, ""},
		{"valid: until 29 days ahead", signingSecrets(set("signing_secret_previous_until", at(29*24*time.Hour))), 200, ""},
		{"valid: nulls are absent", only("signing_secret_previous", nil, "signing_key", k1.seed, "signing_key_previous", nil), 200, ""},
		{"valid: secret at the bound", only("signing_secret", "S3CRET"+strings.Repeat("s", 1018)), 200, ""},

		{"previous secret without until", signingSecrets(set("signing_secret_previous_until", nil)), 422, "body.signing_secret_previous_until"},
		{"until without previous secret", signingSecrets(set("signing_secret_previous", nil)), 422, "body.signing_secret_previous"},
		{"previous secret without a current one", signingSecrets(set("signing_secret", nil)), 422, "body.signing_secret"},
		{"previous secret equal to the current one", signingSecrets(set("signing_secret", "same-SECRET", "signing_secret_previous", "same-SECRET")),
			422, "body.signing_secret_previous"},
		{"secret until in the past", signingSecrets(set("signing_secret_previous_until", at(-time.Minute))), 422, "body.signing_secret_previous_until"},
		{"secret until more than 30 days ahead", signingSecrets(set("signing_secret_previous_until", at(31*24*time.Hour))),
			422, "body.signing_secret_previous_until"},
		{"secret until without offset", signingSecrets(set("signing_secret_previous_until", "2030-01-02T15:04:05")), 422, "body.signing_secret_previous_until"},
		{"secret until as a date", signingSecrets(set("signing_secret_previous_until", "2030-01-02")), 422, "body.signing_secret_previous_until"},
		{"secret until empty", signingSecrets(set("signing_secret_previous_until", "")), 422, "body.signing_secret_previous_until"},
		{"secret until as a number", signingSecrets(set("signing_secret_previous_until", 1900000000)), 422, "body.signing_secret_previous_until"},
		{"secret oversize", signingSecrets(set("signing_secret", "S3CRET"+strings.Repeat("s", 1019))), 422, "body.signing_secret"},
		{"previous secret oversize", signingSecrets(set("signing_secret_previous", "S3CRET"+strings.Repeat("s", 4096))), 422, "body.signing_secret_previous"},
		{"secret whsec_ not base64", signingSecrets(set("signing_secret", "whsec_S3CRET***")), 422, "body.signing_secret"},
		{"previous secret whsec_ empty", signingSecrets(set("signing_secret_previous", "whsec_")), 422, "body.signing_secret_previous"},
		{"secret not a string", signingSecrets(set("signing_secret_previous", []string{"S3CRET"})), 422, "body.signing_secret_previous"},

		{"key without prefix", signingSecrets(set("signing_key", strings.TrimPrefix(k1.seed, "whsk_"))), 422, "body.signing_key"},
		{"key with the public prefix", signingSecrets(set("signing_key", "whpk_"+k1.public)), 422, "body.signing_key"},
		{"key of 31 bytes", signingSecrets(set("signing_key", "whsk_"+base64.StdEncoding.EncodeToString(make([]byte, 31)))), 422, "body.signing_key"},
		{"key not base64", signingSecrets(set("signing_key", "whsk_S3CRET!!")), 422, "body.signing_key"},
		{"key oversize", signingSecrets(set("signing_key", k1.seed+strings.Repeat("A", 64<<10))), 422, "body.signing_key"},
		{"key whose public half is another's", signingSecrets(set("signing_key", "whsk_"+base64.StdEncoding.EncodeToString(
			append(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{9}, 32)...)))), 422, "body.signing_key"},
		{"previous key bad", signingSecrets(set("signing_key_previous", "whsk_S3CRET")), 422, "body.signing_key_previous"},
		{"previous key without a current one", signingSecrets(set("signing_key", nil)), 422, "body.signing_key"},
		{"previous key is the current one in its other form", signingSecrets(set("signing_key_previous", k1.long)), 422, "body.signing_key_previous"},
		{"previous key without until", signingSecrets(set("signing_key_previous_until", nil)), 422, "body.signing_key_previous_until"},
		{"key until without previous key", signingSecrets(set("signing_key_previous", nil)), 422, "body.signing_key_previous"},
		{"key until in the past", signingSecrets(set("signing_key_previous_until", at(-time.Second))), 422, "body.signing_key_previous_until"},
		{"key until more than 30 days ahead", signingSecrets(set("signing_key_previous_until", at(30*24*time.Hour+time.Minute))),
			422, "body.signing_key_previous_until"},
		{"key until not a time", signingSecrets(set("signing_key_previous_until", "soon")), 422, "body.signing_key_previous_until"},

		{"mis-cased field", signingSecrets(set("Signing_Key", k2.seed)), 422, "body.Signing_Key"},
		{"unknown field", signingSecrets(set("signing_key_previous_untill", at(time.Hour))), 422, "body.signing_key_previous_untill"},
		{"public key field", signingSecrets(set("public_key", "whpk_"+k1.public)), 422, "body.public_key"},
		{"repeated field", `{"url": "https://example.com/h", "authorization": "a", "signing_key": "` + k1.seed +
			`", "signing_key": "` + k2.seed + `"}`, 422, "body.signing_key"},
	}
	secretTexts := []string{"S3CRET", strings.TrimPrefix(k1.seed, "whsk_"), strings.TrimPrefix(k1.long, "whsk_"),
		strings.TrimPrefix(k2.seed, "whsk_"), strings.TrimPrefix(k2.long, "whsk_"), "current-SECRET", "previous-SECRET",
		base64.StdEncoding.EncodeToString([]byte("current-SECRET-0123456789"))}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from a stored rotation, so that a rejected PUT could be seen undoing it.
			e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", signingSecrets(nil), 200, nil)
			before := e.storedSigning("hooks")
			status, b, _ := e.raw(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d (%s), want %d", status, b, tc.status)
			}
			for _, s := range secretTexts {
				if strings.Contains(string(b), s) {
					t.Fatalf("the answer echoes a secret: %s", b)
				}
			}
			if status == http.StatusOK {
				return
			}
			if after := e.storedSigning("hooks"); after != before {
				t.Fatalf("a rejected PUT changed the stored secrets or public keys:\n before %s\n after  %s", before, after)
			}
			var out struct {
				Detail []struct {
					Loc []any `json:"loc"`
				} `json:"detail"`
			}
			if err := json.Unmarshal(b, &out); err != nil || len(out.Detail) == 0 {
				t.Fatalf("422 body %s: want a detail list", b)
			}
			var parts []string
			for _, p := range out.Detail[0].Loc {
				j, _ := json.Marshal(p)
				parts = append(parts, strings.Trim(string(j), `"`))
			}
			if loc := strings.Join(parts, "."); loc != tc.loc {
				t.Fatalf("loc: got %s (%s), want %s", loc, b, tc.loc)
			}
		})
	}
}

// signingKeyAnswer is the answer of GET /connection/{key}/signing-key.
type signingKeyAnswer struct {
	PublicKey              string     `json:"public_key"`
	PublicKeyPrevious      *string    `json:"public_key_previous"`
	PublicKeyPreviousUntil *time.Time `json:"public_key_previous_until"`
}

// TestSigningKeyRoute reads the public keys of a connection's Ed25519 signing keys (SPEC §2): the
// current one, the previous one with its until while it is in use, in the whpk_ form, with scope
// connection:read; never a private key. Secrets without a key, and a connection without secrets,
// have none (404).
func TestSigningKeyRoute(t *testing.T) {
	e := newEnv(t, envOptions{})
	k1, k2, k3 := newTestEdKey(1), newTestEdKey(2), newTestEdKey(3)
	path := "/api/v1/connection/hooks/signing-key"
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Hooks", "key": "hooks", "connection_type": "https", "access": "read"},
	}, http.StatusOK, nil)
	if b := e.call(http.MethodGet, path, nil, 404, nil); !strings.Contains(string(b), "ConnectionConfig 'hooks' has no Ed25519 signing key.") {
		t.Fatalf("no secrets yet: %s", b)
	}
	if b := e.call(http.MethodGet, "/api/v1/connection/ghost/signing-key", nil, 404, nil); !strings.Contains(string(b), "No connection configuration found with key 'ghost'.") {
		t.Fatalf("unknown connection: %s", b)
	}
	put := func(body map[string]any) []byte {
		return e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false", body, 200, nil)
	}
	secretTexts := func(ks ...testEdKey) []string {
		var out []string
		for _, k := range ks {
			out = append(out, strings.TrimPrefix(k.seed, "whsk_"), strings.TrimPrefix(k.long, "whsk_"))
		}
		return out
	}

	until := time.Now().Add(90 * time.Minute).UTC().Truncate(time.Second)
	answers := []string{string(put(signingSecrets(func(s map[string]any) {
		s["signing_key"], s["signing_key_previous"], s["signing_key_previous_until"] = k3.long, k2.seed, until.Format(time.RFC3339)
	})))}
	var got signingKeyAnswer
	answers = append(answers, string(e.call(http.MethodGet, path, nil, 200, &got)))
	if got.PublicKey != "whpk_"+k3.public || got.PublicKeyPrevious == nil || *got.PublicKeyPrevious != "whpk_"+k2.public ||
		got.PublicKeyPreviousUntil == nil || !got.PublicKeyPreviousUntil.Equal(until) {
		t.Fatalf("rotation: got %s, want whpk_%s, previous whpk_%s until %s", answers[1], k3.public, k2.public, until)
	}

	// A reader holding connection:read only reads it; one without is refused.
	_, _, reader := e.client("connection:read")
	if status, b, _ := e.raw(http.MethodGet, path, reader, nil); status != 200 || !strings.Contains(string(b), k3.public) {
		t.Fatalf("with connection:read: %d %s", status, b)
	}
	_, _, other := e.client("policy:read")
	if status, b, _ := e.raw(http.MethodGet, path, other, nil); status != 403 {
		t.Fatalf("without connection:read: %d %s, want 403", status, b)
	}

	// A key alone: no previous, nulls in the answer.
	put(map[string]any{"url": "https://example.com/h", "authorization": "a", "signing_key": k1.seed})
	b := e.call(http.MethodGet, path, nil, 200, nil)
	answers = append(answers, string(b))
	if strings.TrimSpace(string(b)) != `{"public_key":"whpk_`+k1.public+`","public_key_previous":null,"public_key_previous_until":null}` {
		t.Fatalf("a key alone: got %s", b)
	}

	// The previous key is shown while it is in use, not after its until.
	soon := time.Now().Add(1500 * time.Millisecond).UTC()
	put(map[string]any{"url": "https://example.com/h", "authorization": "a", "signing_key": k1.seed,
		"signing_key_previous": k2.seed, "signing_key_previous_until": soon.Format(time.RFC3339Nano)})
	e.call(http.MethodGet, path, nil, 200, &got)
	if got.PublicKeyPrevious == nil {
		t.Fatalf("previous key in use: got none")
	}
	time.Sleep(time.Until(soon.Add(50 * time.Millisecond)))
	e.call(http.MethodGet, path, nil, 200, &got)
	if got.PublicKey != "whpk_"+k1.public || got.PublicKeyPrevious != nil || got.PublicKeyPreviousUntil != nil {
		t.Fatalf("after the until: got %+v, want the current key alone", got)
	}

	// Secrets without a key drop the public keys.
	put(map[string]any{"url": "https://example.com/h", "authorization": "a", "signing_secret": "hmac-only"})
	e.call(http.MethodGet, path, nil, 404, nil)

	for _, a := range answers {
		for _, s := range secretTexts(k1, k2, k3) {
			if strings.Contains(a, s) {
				t.Fatalf("an answer holds a private key: %s", a)
			}
		}
	}
}
