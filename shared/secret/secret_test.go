package secret

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const (
	keyA = "0123456789abcdef0123456789abcdef"
	keyB = "fedcba9876543210fedcba9876543210"
)

func TestSealOpen(t *testing.T) {
	k, err := NewKeyring(keyA, "", PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal([]byte("Bearer hunter2"), []byte("conn-1"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "hunter2") {
		t.Fatalf("sealed value contains the plaintext: %s", sealed)
	}
	again, _ := k.Seal([]byte("Bearer hunter2"), []byte("conn-1"))
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	got, err := k.Open(sealed, []byte("conn-1"))
	if err != nil || string(got) != "Bearer hunter2" {
		t.Fatalf("Open = %q, %v; want the plaintext", got, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	k, _ := NewKeyring(keyA, "", PurposeSecrets)
	other, _ := NewKeyring(keyB, "", PurposeSecrets)
	otherPurpose, _ := NewKeyring(keyA, "", PurposeIdentities)
	sealed, _ := k.Seal([]byte("x"), []byte("ctx"))
	tampered := []byte(sealed)
	tampered[len(tampered)-2] ^= 1
	tests := []struct {
		name   string
		ring   *Keyring
		sealed string
		aad    string
	}{
		{"wrong associated data", k, sealed, "other"},
		{"other key", other, sealed, "ctx"},
		{"other purpose", otherPurpose, sealed, "ctx"},
		{"tampered", k, string(tampered), "ctx"},
		{"garbage", k, "not sealed", "ctx"},
		{"empty", k, "", "ctx"},
		{"bad base64", k, "ph1." + strings.Split(sealed, ".")[1] + ".***", "ctx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.ring.Open(tt.sealed, []byte(tt.aad)); !errors.Is(err, ErrUnsealable) {
				t.Fatalf("Open err = %v, want ErrUnsealable", err)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	old, _ := NewKeyring(keyA, "", PurposeSecrets)
	sealed, _ := old.Seal([]byte("s3cret"), nil)
	rotated, err := NewKeyring(keyB, keyA, PurposeSecrets)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rotated.Open(sealed, nil)
	if err != nil || !bytes.Equal(got, []byte("s3cret")) {
		t.Fatalf("Open after rotation = %q, %v", got, err)
	}
	if rotated.IsCurrent(sealed) {
		t.Fatal("IsCurrent = true for a value sealed under the previous key")
	}
	fresh, _ := rotated.Seal([]byte("s3cret"), nil)
	if !rotated.IsCurrent(fresh) {
		t.Fatal("IsCurrent = false for a value sealed under the current key")
	}
	if _, err := old.Open(fresh, nil); !errors.Is(err, ErrUnsealable) {
		t.Fatalf("old keyring opened a value sealed under the new key: %v", err)
	}
}

func TestKeyLength(t *testing.T) {
	for _, k := range []string{"", "short", keyA + "x"} {
		if _, err := NewKeyring(k, "", PurposeSecrets); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("NewKeyring(%d chars) err = %v, want ErrInvalidKey", len(k), err)
		}
	}
	if _, err := NewKeyring(keyA, "bad", PurposeSecrets); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("bad previous key err = %v, want ErrInvalidKey", err)
	}
}
