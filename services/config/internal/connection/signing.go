package connection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/signing"
)

// Bounds of the signing fields of https secrets (SPEC §2).
const (
	// MaxSigningSecret is the longest signing_secret and signing_secret_previous, in bytes: room
	// for the "whsec_" form of the largest key the Standard Webhooks spec allows (512 bytes).
	MaxSigningSecret = 1024
	// MaxSigningOverlap is how far ahead of the PUT a previous secret or key may stay in use:
	// long enough for every receiver to take the new one, short enough that a forgotten rotation
	// ends by itself.
	MaxSigningOverlap = 30 * 24 * time.Hour
)

// SigningKeys are the public keys, in the "whpk_" form, of the Ed25519 signing keys of a
// connection's secrets. They are not secret: config stores them beside the sealed secrets when
// the secrets are set, and the API shows them so that receivers can verify v1a signatures.
type SigningKeys struct {
	// Current is the public key of signing_key.
	Current string
	// Previous is the public key of signing_key_previous, "" without one; it is in use until
	// PreviousUntil.
	Previous      string
	PreviousUntil time.Time
}

// ErrNoSigningKey reports a connection whose secrets hold no Ed25519 signing key.
var ErrNoSigningKey = errors.New("connection has no signing key")

// NoSigningKeyError is ErrNoSigningKey for one connection.
type NoSigningKeyError struct{ Key string }

func (e *NoSigningKeyError) Error() string {
	return fmt.Sprintf("connection: %q has no Ed25519 signing key", e.Key)
}

// Is makes errors.Is(err, ErrNoSigningKey) true.
func (e *NoSigningKeyError) Is(target error) bool { return target == ErrNoSigningKey }

// SigningKeys returns the public keys of the Ed25519 signing keys of connection key: the current
// one and, while its until is ahead, the previous one. A connection without a signing key is a
// *NoSigningKeyError.
func (s *Service) SigningKeys(ctx context.Context, key string) (SigningKeys, error) {
	c, err := s.store.GetConnection(ctx, key)
	if err != nil {
		return SigningKeys{}, err
	}
	if c.SigningKeys == nil || c.SigningKeys.Current == "" {
		return SigningKeys{}, &NoSigningKeyError{Key: key}
	}
	keys := *c.SigningKeys
	if keys.Previous == "" || !s.now().Before(keys.PreviousUntil) {
		keys.Previous, keys.PreviousUntil = "", time.Time{}
	}
	return keys, nil
}

// signingKeysOf returns the public keys of sec's Ed25519 signing keys, nil when it has none. sec
// has passed checkSigning.
func signingKeysOf(sec event.HTTPSSecrets) (*SigningKeys, error) {
	if sec.SigningKey == "" {
		return nil, nil
	}
	keys := &SigningKeys{}
	var err error
	if keys.Current, err = signing.PublicKeyOf(sec.SigningKey); err != nil {
		return nil, fmt.Errorf("connection: public key of signing_key: %w", err)
	}
	if sec.SigningKeyPrevious != "" {
		if keys.Previous, err = signing.PublicKeyOf(sec.SigningKeyPrevious); err != nil {
			return nil, fmt.Errorf("connection: public key of signing_key_previous: %w", err)
		}
		keys.PreviousUntil = sec.SigningKeyPreviousUntil
	}
	return keys, nil
}

// checkSigning returns an *InvalidError for the first signing field of sec that is not acceptable
// at now, nil when every one is (SPEC §2):
//   - signing_secret and signing_secret_previous are at most MaxSigningSecret bytes, and after a
//     "whsec_" prefix hold the standard base64 of a key that is not empty;
//   - signing_key and signing_key_previous are Ed25519 secret keys ("whsk_", signing.ParseSecretKey);
//   - a previous secret or key comes with its current one and its until (and an until with its
//     previous), differs from the current one, and its until is after now and at most
//     MaxSigningOverlap ahead.
//
// The messages name the field, never its value.
func checkSigning(sec event.HTTPSSecrets, now time.Time) error {
	for _, f := range []struct{ name, value string }{
		{"signing_secret", sec.SigningSecret}, {"signing_secret_previous", sec.SigningSecretPrevious},
	} {
		if f.value == "" {
			continue
		}
		if len(f.value) > MaxSigningSecret {
			return invalid(f.name, fmt.Sprintf("ensure this value has at most %d bytes", MaxSigningSecret))
		}
		if _, err := signing.HMACKey(f.value); err != nil {
			return invalid(f.name, err.Error())
		}
	}
	for _, f := range []struct{ name, value string }{
		{"signing_key", sec.SigningKey}, {"signing_key_previous", sec.SigningKeyPrevious},
	} {
		if f.value == "" {
			continue
		}
		if _, err := signing.ParseSecretKey(f.value); err != nil {
			return invalid(f.name, err.Error())
		}
	}
	if err := checkPrevious("signing_secret", sec.SigningSecret, sec.SigningSecretPrevious, sec.SigningSecretPreviousUntil,
		sec.SigningSecret == sec.SigningSecretPrevious, now); err != nil {
		return err
	}
	// The same key in two forms (a seed and its 64-byte private key) is the same key.
	current, errCurrent := signing.PublicKeyOf(sec.SigningKey)
	previous, errPrevious := signing.PublicKeyOf(sec.SigningKeyPrevious)
	return checkPrevious("signing_key", sec.SigningKey, sec.SigningKeyPrevious, sec.SigningKeyPreviousUntil,
		errCurrent == nil && errPrevious == nil && current == previous, now)
}

// checkPrevious judges the previous value of the signing field (field+"_previous") and its until
// (field+"_previous_until") at now: both or neither are given, the previous comes with a current
// value and is not the same, and the until is after now and at most MaxSigningOverlap ahead.
func checkPrevious(field, current, previous string, until time.Time, same bool, now time.Time) error {
	previousField, untilField := field+"_previous", field+"_previous_until"
	switch {
	case previous == "" && until.IsZero():
		return nil
	case previous == "":
		return invalid(previousField, "field required: "+untilField+" is given")
	case current == "":
		return invalid(field, "field required: "+previousField+" is given, and is sent beside a current one")
	case until.IsZero():
		return invalid(untilField, "field required: "+previousField+" is given")
	case same:
		return invalid(previousField, "must differ from "+field)
	case !until.After(now):
		return invalid(untilField, "must be in the future")
	case until.After(now.Add(MaxSigningOverlap)):
		return invalid(untilField, fmt.Sprintf("must be at most %d days ahead", int(MaxSigningOverlap/(24*time.Hour))))
	}
	return nil
}

// invalid is the *InvalidError of the body field named field.
func invalid(field, msg string) error { return &InvalidError{Loc: []any{"body", field}, Msg: msg} }
