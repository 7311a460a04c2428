package connection

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// TestCheckSigningBounds pins the edges of a previous secret's until at a fixed clock (SPEC §2):
// after now and at most MaxSigningOverlap ahead, both ends judged exactly.
func TestCheckSigningBounds(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, tc := range []struct {
		until time.Time
		ok    bool
	}{
		{now, false},
		{now.Add(time.Nanosecond), true},
		{now.Add(MaxSigningOverlap), true},
		{now.Add(MaxSigningOverlap + time.Nanosecond), false},
		{now.Add(-time.Hour), false},
	} {
		for _, sec := range []event.HTTPSSecrets{
			{SigningSecret: "a", SigningSecretPrevious: "b", SigningSecretPreviousUntil: tc.until},
			{SigningKey: testSecretKey(1), SigningKeyPrevious: testSecretKey(2), SigningKeyPreviousUntil: tc.until},
		} {
			err := checkSigning(sec, now)
			var inv *InvalidError
			if (err == nil) != tc.ok || (err != nil && !errors.As(err, &inv)) {
				t.Errorf("until now%+v: err %v, want ok %v", tc.until.Sub(now), err, tc.ok)
			}
			if err != nil && fmt.Sprint(inv.Loc) != fmt.Sprint([]any{"body", "signing_secret_previous_until"}) &&
				fmt.Sprint(inv.Loc) != fmt.Sprint([]any{"body", "signing_key_previous_until"}) {
				t.Errorf("until now%+v: loc %v, want the until", tc.until.Sub(now), inv.Loc)
			}
		}
	}
}

// TestSigningKeysOf: the stored public keys are the whpk_ forms of the keys' public halves, the
// previous one with its until; secrets without a key have none.
func TestSigningKeysOf(t *testing.T) {
	until := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	got, err := signingKeysOf(event.HTTPSSecrets{SigningKey: testSecretKey(1), SigningKeyPrevious: testSecretKey(2),
		SigningKeyPreviousUntil: until})
	pub := func(b byte) string {
		return "whpk_" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)).Public().(ed25519.PublicKey))
	}
	if err != nil || got == nil || *got != (SigningKeys{Current: pub(1), Previous: pub(2), PreviousUntil: until}) {
		t.Fatalf("signingKeysOf = %+v, %v; want %s and %s until %s", got, err, pub(1), pub(2), until)
	}
	if got, err := signingKeysOf(event.HTTPSSecrets{SigningSecret: "hmac"}); got != nil || err != nil {
		t.Fatalf("without a key: %+v, %v; want none", got, err)
	}
}

// testSecretKey is the whsk_ seed form of the Ed25519 key of a seed of b.
func testSecretKey(b byte) string {
	return "whsk_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}
