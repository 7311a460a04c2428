// Package signing reads and writes the key forms of Standard Webhooks signing: the HMAC-SHA256
// signing secret ("whsec_<base64>", or any other string as raw bytes), the Ed25519 secret key
// "whsk_<base64>" and the Ed25519 public key "whpk_<base64>". Config validates the keys of a
// connection's secrets with it and derives their public keys; the executor reads the same keys to
// sign calls, so that what config accepts is what the executor can use.
//
// No error of this package holds the value it was given: the values are secrets.
package signing

import (
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"
)

// Prefixes of the Standard Webhooks key forms.
const (
	// SecretPrefix marks an HMAC signing secret: the base64 of the key follows.
	SecretPrefix = "whsec_"
	// SecretKeyPrefix marks an Ed25519 secret key: the base64 of the 32-byte seed or of the
	// 64-byte private key follows.
	SecretKeyPrefix = "whsk_"
	// PublicKeyPrefix marks an Ed25519 public key: the base64 of its 32 bytes follows.
	PublicKeyPrefix = "whpk_"
)

// Errors of the key parsers; none holds the key.
var (
	ErrSecretNotBase64   = errors.New("the whsec_ prefix is not followed by standard base64")
	ErrSecretEmpty       = errors.New("the signing secret holds no key")
	ErrSecretKeyForm     = errors.New("not an Ed25519 secret key: whsk_ followed by the standard base64 of a 32-byte seed or a 64-byte private key")
	ErrSecretKeyMismatch = errors.New("a 64-byte Ed25519 private key whose public half does not belong to its seed")
	ErrPublicKeyForm     = errors.New("not an Ed25519 public key: whpk_ followed by the standard base64 of 32 bytes")
)

// HMACKey returns the HMAC-SHA256 key of a signing secret: the bytes the standard base64 after a
// "whsec_" prefix decodes to, else the secret's own bytes. An empty key is refused.
func HMACKey(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		if secret == "" {
			return nil, ErrSecretEmpty
		}
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, ErrSecretNotBase64
	}
	if len(key) == 0 {
		return nil, ErrSecretEmpty
	}
	return key, nil
}

// ParseSecretKey returns the Ed25519 private key of s: "whsk_" followed by the standard base64 of
// either the 32-byte seed (the form of the Standard Webhooks Go library, and of FormatSecretKey) or
// the 64-byte private key, seed then public key (the form of Go's crypto/ed25519 and of
// libsodium). A 64-byte key whose public half is not the one of its seed is refused, as a key
// damaged in transit would be.
func ParseSecretKey(s string) (ed25519.PrivateKey, error) {
	rest, ok := strings.CutPrefix(s, SecretKeyPrefix)
	if !ok || len(rest) > base64.StdEncoding.EncodedLen(ed25519.PrivateKeySize) {
		return nil, ErrSecretKeyForm
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, ErrSecretKeyForm
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		key := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if subtle.ConstantTimeCompare(key[ed25519.SeedSize:], raw[ed25519.SeedSize:]) != 1 {
			return nil, ErrSecretKeyMismatch
		}
		return key, nil
	}
	return nil, ErrSecretKeyForm
}

// FormatSecretKey returns the "whsk_" form of key: the standard base64 of its 32-byte seed.
func FormatSecretKey(key ed25519.PrivateKey) string {
	return SecretKeyPrefix + base64.StdEncoding.EncodeToString(key.Seed())
}

// FormatPublicKey returns the "whpk_" form of pub.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// PublicKeyOf returns the "whpk_" form of the public key of the secret key s ("whsk_", see
// ParseSecretKey).
func PublicKeyOf(s string) (string, error) {
	key, err := ParseSecretKey(s)
	if err != nil {
		return "", err
	}
	return FormatPublicKey(key.Public().(ed25519.PublicKey)), nil
}

// ParsePublicKey returns the Ed25519 public key of s, "whpk_" followed by the standard base64 of
// its 32 bytes.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok || len(rest) > base64.StdEncoding.EncodedLen(ed25519.PublicKeySize) {
		return nil, ErrPublicKeyForm
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, ErrPublicKeyForm
	}
	return ed25519.PublicKey(raw), nil
}
