package webhook

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/signing"
)

// Signed reports whether calls with sec are signed (SPEC §6): sec holds an HMAC signing secret,
// an Ed25519 signing key, or both.
func Signed(sec event.HTTPSSecrets) bool {
	return sec.SigningSecret != "" || sec.SigningKey != ""
}

// Signature returns the webhook-signature value of a call with id and body made at now, whose Unix
// seconds are its webhook-timestamp: space-separated, "v1,<HMAC-SHA256>" with the signing secret,
// then with the previous secret while now is before its until, then "v1a,<Ed25519>" with the
// signing key, then with the previous key while now is before its until. A previous secret or key
// is used only beside a current one and with an until. The error names the field of the secrets
// that cannot be used, never its value; "" without error means that sec signs nothing.
func Signature(sec event.HTTPSSecrets, id string, now time.Time, body []byte) (string, error) {
	ts := now.Unix()
	var sigs []string
	for _, k := range []struct {
		field, value string
		use          bool
		signer       func(value string) (signer, error)
	}{
		{"signing_secret", sec.SigningSecret, sec.SigningSecret != "", hmacSignature},
		{"signing_secret_previous", sec.SigningSecretPrevious,
			sec.SigningSecret != "" && sec.SigningSecretPrevious != "" && now.Before(sec.SigningSecretPreviousUntil), hmacSignature},
		{"signing_key", sec.SigningKey, sec.SigningKey != "", ed25519Signature},
		{"signing_key_previous", sec.SigningKeyPrevious,
			sec.SigningKey != "" && sec.SigningKeyPrevious != "" && now.Before(sec.SigningKeyPreviousUntil), ed25519Signature},
	} {
		if !k.use {
			continue
		}
		sig, err := k.signer(k.value)
		if err != nil {
			return "", fmt.Errorf("%s of the connection's secrets cannot be used: %w", k.field, err)
		}
		sigs = append(sigs, sig(id, ts, body))
	}
	return strings.Join(sigs, " "), nil
}

// signer signs "<id>.<timestamp>.<body>" with one key, in its version's form ("v1,…", "v1a,…").
type signer func(id string, timestamp int64, body []byte) string

// hmacSignature returns the signer of the v1 signature with the HMAC secret value.
func hmacSignature(value string) (signer, error) {
	key, err := signing.HMACKey(value)
	if err != nil {
		return nil, err
	}
	return func(id string, ts int64, body []byte) string { return Sign(key, id, ts, body) }, nil
}

// ed25519Signature returns the signer of the v1a signature with the Ed25519 secret key value.
func ed25519Signature(value string) (signer, error) {
	key, err := signing.ParseSecretKey(value)
	if err != nil {
		return nil, err
	}
	return func(id string, ts int64, body []byte) string { return SignEd25519(key, id, ts, body) }, nil
}

// Sign returns the symmetric signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>" with key.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(signedPrefix(id, timestamp))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SignEd25519 returns the asymmetric signature "v1a,<base64 Ed25519 signature of
// id.timestamp.body>" with key.
func SignEd25519(key ed25519.PrivateKey, id string, timestamp int64, body []byte) string {
	msg := append(signedPrefix(id, timestamp), body...)
	return "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(key, msg))
}

// signedPrefix is what the Standard Webhooks signed content "<id>.<timestamp>.<body>" holds before
// the body.
func signedPrefix(id string, timestamp int64) []byte {
	return []byte(id + "." + strconv.FormatInt(timestamp, 10) + ".")
}
