// Package secret encrypts values at rest and derives the per-purpose keys of the application from
// APP_ENCRYPTION_KEY.
//
// A sealed value is "ph1.<key id>.<base64url(nonce || AES-256-GCM ciphertext)>". The key id names
// the derived key that sealed it, so that a Keyring built from the current and the previous
// APP_ENCRYPTION_KEY can open values sealed under either while sealing only under the current one.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// AppKeyLength is the exact length APP_ENCRYPTION_KEY must have, as in fidesops.
const AppKeyLength = 32

// Purposes name the independent keys derived from APP_ENCRYPTION_KEY. A value sealed for one
// purpose cannot be opened as another.
const (
	PurposeSecrets      = "connection-secrets"
	PurposeIdentities   = "privacy-identities"
	PurposeAccessTokens = "oauth-access-tokens"
	PurposeResumeTokens = "resume-tokens"
)

const prefix = "ph1"

// ErrInvalidKey reports an application key of the wrong length.
var ErrInvalidKey = fmt.Errorf("encryption key must be exactly %d characters", AppKeyLength)

// ErrUnsealable reports a sealed value that is malformed, was sealed under an unknown key, or fails
// authentication.
var ErrUnsealable = errors.New("secret: value cannot be opened")

// DeriveKey derives the 32-byte key for purpose from the application key with HKDF-SHA256.
func DeriveKey(appKey, purpose string) ([]byte, error) {
	if len(appKey) != AppKeyLength {
		return nil, ErrInvalidKey
	}
	key, err := hkdf.Key(sha256.New, []byte(appKey), nil, "policyhooks/"+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("secret: derive %s key: %w", purpose, err)
	}
	return key, nil
}

type sealingKey struct {
	id   string
	aead cipher.AEAD
}

// Keyring seals with the current key and opens with the current or the previous one.
type Keyring struct {
	current  sealingKey
	previous *sealingKey
}

// NewKeyring derives the purpose's keys from the current and, when not empty, the previous
// application key.
func NewKeyring(current, previous, purpose string) (*Keyring, error) {
	cur, err := newSealingKey(current, purpose)
	if err != nil {
		return nil, err
	}
	k := &Keyring{current: cur}
	if previous != "" {
		prev, err := newSealingKey(previous, purpose)
		if err != nil {
			return nil, fmt.Errorf("previous key: %w", err)
		}
		k.previous = &prev
	}
	return k, nil
}

func newSealingKey(appKey, purpose string) (sealingKey, error) {
	key, err := DeriveKey(appKey, purpose)
	if err != nil {
		return sealingKey{}, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealingKey{}, fmt.Errorf("secret: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sealingKey{}, fmt.Errorf("secret: gcm: %w", err)
	}
	sum := sha256.Sum256(append([]byte("policyhooks key id/"), key...))
	return sealingKey{id: hex.EncodeToString(sum[:4]), aead: aead}, nil
}

// Seal encrypts plaintext under the current key with a random 96-bit nonce. The associated data
// binds the value to its context (for example a connection key): Open must be given the same.
func (k *Keyring) Seal(plaintext, associated []byte) (string, error) {
	nonce := make([]byte, k.current.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("secret: nonce: %w", err)
	}
	out := k.current.aead.Seal(nonce, nonce, plaintext, associated)
	return prefix + "." + k.current.id + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value produced by Seal under the current or the previous key.
func (k *Keyring) Open(sealed string, associated []byte) ([]byte, error) {
	parts := strings.Split(sealed, ".")
	if len(parts) != 3 || parts[0] != prefix {
		return nil, ErrUnsealable
	}
	var key *sealingKey
	switch {
	case parts[1] == k.current.id:
		key = &k.current
	case k.previous != nil && parts[1] == k.previous.id:
		key = k.previous
	default:
		return nil, fmt.Errorf("%w: unknown key id %q", ErrUnsealable, parts[1])
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(raw) < key.aead.NonceSize()+key.aead.Overhead() {
		return nil, ErrUnsealable
	}
	n := key.aead.NonceSize()
	plain, err := key.aead.Open(nil, raw[:n], raw[n:], associated)
	if err != nil {
		return nil, ErrUnsealable
	}
	return plain, nil
}

// IsCurrent reports whether sealed was sealed under the current key; a value that is not can be
// re-sealed to finish a key rotation.
func (k *Keyring) IsCurrent(sealed string) bool {
	parts := strings.Split(sealed, ".")
	return len(parts) == 3 && parts[0] == prefix && parts[1] == k.current.id
}
