package signing

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// seed is a fixed Ed25519 seed of the tests.
var seed = bytes.Repeat([]byte{7}, ed25519.SeedSize)

func TestHMACKey(t *testing.T) {
	for _, tc := range []struct {
		secret string
		want   string
		err    error
	}{
		{"whsec_aGVsbG8=", "hello", nil},
		{"raw secret", "raw secret", nil},
		{"whsec", "whsec", nil}, // no prefix: raw bytes
		{"whsec_***", "", ErrSecretNotBase64},
		{"whsec_aGVsbG8", "", ErrSecretNotBase64}, // standard base64 keeps its padding
		{"whsec_", "", ErrSecretEmpty},
		{"", "", ErrSecretEmpty},
	} {
		got, err := HMACKey(tc.secret)
		if !errors.Is(err, tc.err) || string(got) != tc.want {
			t.Errorf("HMACKey(%q) = %q, %v; want %q, %v", tc.secret, got, err, tc.want, tc.err)
		}
	}
}

func TestParseSecretKey(t *testing.T) {
	want := ed25519.NewKeyFromSeed(seed)
	b64 := base64.StdEncoding.EncodeToString
	tampered := bytes.Clone(want)
	tampered[ed25519.PrivateKeySize-1] ^= 1
	for _, tc := range []struct {
		name string
		in   string
		err  error
	}{
		{"seed", "whsk_" + b64(seed), nil},
		{"private key", "whsk_" + b64(want), nil},
		{"formatted", FormatSecretKey(want), nil},
		{"public half of another seed", "whsk_" + b64(tampered), ErrSecretKeyMismatch},
		{"no prefix", b64(seed), ErrSecretKeyForm},
		{"public key prefix", "whpk_" + b64(seed), ErrSecretKeyForm},
		{"hmac prefix", "whsec_" + b64(seed), ErrSecretKeyForm},
		{"not base64", "whsk_" + strings.Repeat("*", 44), ErrSecretKeyForm},
		{"url alphabet without padding", "whsk_" + base64.RawURLEncoding.EncodeToString(seed), ErrSecretKeyForm},
		{"31 bytes", "whsk_" + b64(seed[:31]), ErrSecretKeyForm},
		{"33 bytes", "whsk_" + b64(append(bytes.Clone(seed), 1)), ErrSecretKeyForm},
		{"empty", "whsk_", ErrSecretKeyForm},
		{"oversize", "whsk_" + strings.Repeat("A", 1<<20), ErrSecretKeyForm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSecretKey(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if strings.Contains(err.Error(), b64(seed)[:16]) {
					t.Fatalf("the error echoes the key: %v", err)
				}
				return
			}
			if !got.Equal(want) {
				t.Fatalf("key %x, want %x", got, want)
			}
		})
	}
}

func TestPublicKey(t *testing.T) {
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	got, err := PublicKeyOf(FormatSecretKey(key))
	if err != nil || got != "whpk_"+base64.StdEncoding.EncodeToString(pub) {
		t.Fatalf("PublicKeyOf = %q, %v; want whpk_ and the base64 of %x", got, err, pub)
	}
	parsed, err := ParsePublicKey(got)
	if err != nil || !parsed.Equal(pub) {
		t.Fatalf("ParsePublicKey(%q) = %x, %v; want %x", got, parsed, err, pub)
	}
	if _, err := PublicKeyOf("whsk_x"); !errors.Is(err, ErrSecretKeyForm) {
		t.Fatalf("PublicKeyOf of a bad key: %v, want ErrSecretKeyForm", err)
	}
	for _, bad := range []string{
		base64.StdEncoding.EncodeToString(pub), "whsk_" + base64.StdEncoding.EncodeToString(pub),
		"whpk_" + base64.StdEncoding.EncodeToString(pub[:31]), "whpk_" + base64.StdEncoding.EncodeToString(key),
		"whpk_!", "whpk_" + strings.Repeat("A", 4096),
	} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrPublicKeyForm) {
			t.Errorf("ParsePublicKey(%.20q…) = %v, want ErrPublicKeyForm", bad, err)
		}
	}
}
