package token

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenResume(t *testing.T) {
	s, err := NewSealer(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	in := &ResumeClaims{RequestID: "pri_1", WebhookID: "wh_1", Pause: 2, Scopes: []string{"privacy-request:resume"}}
	raw, err := s.Seal(in, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var out ResumeClaims
	if err := s.Open(raw, &out); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if out.RequestID != "pri_1" || out.WebhookID != "wh_1" || out.Pause != 2 || !out.HasScope("privacy-request:resume") {
		t.Fatalf("claims = %+v", out)
	}
	if out.ID == "" || out.Expiry-out.IssuedAt != 3600 {
		t.Fatalf("registered claims = %+v, want jti and exp = iat+3600", out.Claims)
	}
}

func TestOpenRefuses(t *testing.T) {
	key := newKey(t)
	s, _ := NewSealer(key)
	other, _ := NewSealer(newKey(t))
	good, _ := s.Seal(&AccessClaims{ClientID: "c"}, time.Hour)

	// A token with another content encryption, under the right key.
	enc, _ := jose.NewEncrypter(jose.A128CBC_HS256, jose.Recipient{Algorithm: jose.DIRECT, Key: key}, nil)
	otherEnc, _ := jwt.Encrypted(enc).Claims(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	// A token without expiry.
	enc2, _ := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key}, nil)
	noExp, _ := jwt.Encrypted(enc2).Claims(map[string]any{"client_id": "c"}).Serialize()

	tests := []struct {
		name string
		raw  string
		s    *Sealer
	}{
		{"other key", good, other},
		{"empty", "", s},
		{"garbage", "a.b.c.d.e", s},
		{"too long", strings.Repeat("a", MaxLength+1), s},
		{"other enc", otherEnc, s},
		{"no expiry", noExp, s},
		{"truncated", good[:len(good)-5], s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c AccessClaims
			if err := tt.s.Open(tt.raw, &c); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	s, _ := NewSealer(newKey(t))
	past := s.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	raw, _ := past.Seal(&ResumeClaims{RequestID: "r"}, time.Hour)
	var c ResumeClaims
	if err := s.Open(raw, &c); !errors.Is(err, ErrExpired) {
		t.Fatalf("Open err = %v, want ErrExpired", err)
	}
	if c.RequestID != "r" {
		t.Fatalf("claims of an expired token not filled: %+v", c)
	}
}

func FuzzOpen(f *testing.F) {
	key := make([]byte, 32)
	s, _ := NewSealer(key)
	good, _ := s.Seal(&ResumeClaims{RequestID: "r"}, time.Hour)
	f.Add(good)
	f.Add("")
	f.Add("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0....")
	f.Fuzz(func(t *testing.T, raw string) {
		var c ResumeClaims
		err := s.Open(raw, &c)
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Fatalf("Open err = %v, want ErrInvalid or ErrExpired", err)
		}
	})
}
