package main

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance bounds how far a call's webhook-timestamp may be from the receiver's clock: an older
// call is refused as a possible replay.
const Tolerance = 5 * time.Minute

// Verifier checks the Standard Webhooks signatures of calls with a list of HMAC-SHA256 signing
// secrets (v1 signatures) and Ed25519 public keys (v1a signatures). A call is accepted when any of
// the signatures it carries verifies with any configured key of its kind: during a rotation the
// sender signs with the current and the previous key, and a receiver may list either or both.
type Verifier struct {
	secrets    [][]byte
	publicKeys []ed25519.PublicKey
}

// NewVerifier returns a Verifier of secrets ("whsec_<base64>", or any other string as raw bytes)
// and publicKeys ("whpk_<base64>"), nil when both are empty (calls are then not checked). An error
// names the key by its position, never by its value.
func NewVerifier(secrets, publicKeys []string) (*Verifier, error) {
	if len(secrets) == 0 && len(publicKeys) == 0 {
		return nil, nil
	}
	v := &Verifier{}
	for i, s := range secrets {
		key := []byte(s)
		if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
			var err error
			if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
				return nil, fmt.Errorf("signing secret %d: the whsec_ prefix is not followed by standard base64", i+1)
			}
		}
		if len(key) == 0 {
			return nil, fmt.Errorf("signing secret %d is empty", i+1)
		}
		v.secrets = append(v.secrets, key)
	}
	for i, p := range publicKeys {
		rest, ok := strings.CutPrefix(p, "whpk_")
		raw, err := base64.StdEncoding.DecodeString(rest)
		if !ok || err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("public key %d is not whpk_ followed by the standard base64 of an Ed25519 public key (32 bytes)", i+1)
		}
		v.publicKeys = append(v.publicKeys, ed25519.PublicKey(raw))
	}
	return v, nil
}

// String says what v checks with, without the keys.
func (v *Verifier) String() string {
	if v == nil {
		return "no signature check"
	}
	return fmt.Sprintf("%d signing secret(s), %d public key(s)", len(v.secrets), len(v.publicKeys))
}

// Verify checks a call: webhook-id, webhook-timestamp (within Tolerance of now) and
// webhook-signature, a space-separated list of "v1,<base64 HMAC-SHA256>" and "v1a,<base64
// Ed25519 signature>" entries, each over "<webhook-id>.<webhook-timestamp>.<body>". It returns nil
// when one entry verifies with one configured key; entries of other versions are skipped.
func (v *Verifier) Verify(h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad webhook-timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return errors.New("webhook-timestamp too far from now")
	}
	content := []byte(id + "." + ts + ".")
	content = append(content, body...)
	var macs [][]byte // the HMAC of content under each secret, computed on first need
	for _, entry := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		switch version {
		case "v1":
			if macs == nil {
				for _, key := range v.secrets {
					mac := hmac.New(sha256.New, key)
					mac.Write(content)
					macs = append(macs, mac.Sum(nil))
				}
			}
			for _, want := range macs {
				if hmac.Equal(sig, want) {
					return nil
				}
			}
		case "v1a":
			for _, pub := range v.publicKeys {
				if ed25519.Verify(pub, content, sig) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no signature verifies with the configured keys (%s)", v)
}

// GenerateKey writes a new Ed25519 signing key pair to w as two lines that a shell can eval:
// SIGNING_KEY, the whsk_ form of its 32-byte seed for the connection's signing_key, and
// PUBLIC_KEY, the whpk_ form of its public key for -public-key. rand is the source of randomness
// (crypto/rand.Reader, or nil for it).
func GenerateKey(w io.Writer, rand io.Reader) error {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	b64 := base64.StdEncoding.EncodeToString
	_, err = fmt.Fprintf(w, "SIGNING_KEY=whsk_%s\nPUBLIC_KEY=whpk_%s\n", b64(priv.Seed()), b64(pub))
	return err
}

// listFlag is a flag.Value holding the values of a flag given several times, each possibly a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return fmt.Sprintf("%d value(s)", len(*l)) }

// Set adds the comma-separated values of s (empty ones are skipped).
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
