package secrets

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/secret"
)

const (
	appKey   = "0123456789abcdef0123456789abcdef"
	oldKey   = "fedcba9876543210fedcba9876543210"
	otherKey = "ffffffffffffffffffffffffffffffff"
)

func keyring(t *testing.T, current, previous string) *secret.Keyring {
	t.Helper()
	k, err := secret.NewKeyring(current, previous, secret.PurposeSecrets)
	if err != nil {
		t.Fatalf("keyring: %v", err)
	}
	return k
}

// seal seals plain for connection with k, as config does.
func seal(t *testing.T, k *secret.Keyring, connection, plain string) string {
	t.Helper()
	s, err := k.Seal([]byte(plain), []byte(connection))
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return s
}

func sealJSON(t *testing.T, k *secret.Keyring, connection string, v event.HTTPSSecrets) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return seal(t, k, connection, string(b))
}

// TestOpen checks what Open returns for each kind of sealed value: the secrets sealed with the
// connection key as associated data, or the message a failed request records.
func TestOpen(t *testing.T) {
	current := keyring(t, appKey, oldKey)
	previous := keyring(t, oldKey, "")
	other := keyring(t, otherKey, "")
	identities, err := secret.NewKeyring(appKey, "", secret.PurposeIdentities)
	if err != nil {
		t.Fatal(err)
	}
	want := event.HTTPSSecrets{URL: "https://hooks.example/x", Authorization: "Bearer t",
		Headers: map[string]string{"X-A": "1"}, SigningSecret: "whsec_c2VjcmV0"}
	for _, tc := range []struct {
		name    string
		w       event.PlanWebhook
		want    event.HTTPSSecrets
		wantMsg string
	}{
		{name: "sealed for the connection", want: want,
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealJSON(t, current, "conn_a", want)}},
		{name: "sealed with the previous key", want: want,
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealJSON(t, previous, "conn_a", want)}},
		{name: "sealed for another connection key", wantMsg: "connection conn_a: secrets cannot be opened with the current keys",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealJSON(t, current, "conn_b", want)}},
		{name: "sealed with an unknown key", wantMsg: "connection conn_a: secrets cannot be opened with the current keys",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealJSON(t, other, "conn_a", want)}},
		{name: "sealed for another purpose", wantMsg: "connection conn_a: secrets cannot be opened with the current keys",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealJSON(t, identities, "conn_a", want)}},
		{name: "not a sealed value", wantMsg: "connection conn_a: secrets cannot be opened with the current keys",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: `{"url":"https://x"}`}},
		{name: "no secrets", wantMsg: "connection conn_a has no secrets",
			w: event.PlanWebhook{ConnectionKey: "conn_a"}},
		{name: "malformed JSON", wantMsg: "connection conn_a: secrets are malformed",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: seal(t, current, "conn_a", `{"url": `)}},
		{name: "JSON of another shape", wantMsg: "connection conn_a: secrets are malformed",
			w: event.PlanWebhook{ConnectionKey: "conn_a", Secrets: seal(t, current, "conn_a", `["https://x"]`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOpener(current)
			got, msg := o.Open(tc.w)
			if msg != tc.wantMsg {
				t.Errorf("message %q, want %q", msg, tc.wantMsg)
			}
			if tc.wantMsg == "" && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("secrets %+v, want %+v", got, tc.want)
			}
			// A second Open gives the same answer (from the cache).
			again, msg2 := o.Open(tc.w)
			if msg2 != msg || !reflect.DeepEqual(again, got) {
				t.Errorf("second Open: %+v %q, want %+v %q", again, msg2, got, msg)
			}
		})
	}
}

// TestOpenCache checks that the same sealed value of the same connection is opened once (the same
// shared secrets come back), that the cache is keyed by connection too (a value sealed for one
// connection is not served for another), and that it stays bounded.
func TestOpenCache(t *testing.T) {
	k := keyring(t, appKey, "")
	o := NewOpener(k)
	s := event.HTTPSSecrets{URL: "https://a", Headers: map[string]string{"X": "1"}}
	sealed := sealJSON(t, k, "conn_a", s)

	first, msg := o.Open(event.PlanWebhook{ConnectionKey: "conn_a", Secrets: sealed})
	if msg != "" {
		t.Fatalf("open: %q", msg)
	}
	second, _ := o.Open(event.PlanWebhook{ID: "another webhook", ConnectionKey: "conn_a", Secrets: sealed})
	if got, want := reflect.ValueOf(second.Headers).Pointer(), reflect.ValueOf(first.Headers).Pointer(); got != want {
		t.Errorf("second Open of the same sealed value: headers map %#x, want the cached %#x", got, want)
	}
	// The same sealed value named by another connection must not be opened from the cache.
	if _, msg := o.Open(event.PlanWebhook{ConnectionKey: "conn_b", Secrets: sealed}); msg == "" {
		t.Errorf("value sealed for conn_a opened for conn_b (from the cache?), want a message")
	}
	// A value sealed again (new nonce) is another entry, opened to equal secrets.
	resealed := sealJSON(t, k, "conn_a", s)
	third, msg := o.Open(event.PlanWebhook{ConnectionKey: "conn_a", Secrets: resealed})
	if msg != "" || !reflect.DeepEqual(third, s) {
		t.Errorf("resealed: %+v %q, want %+v", third, msg, s)
	}

	for i := range maxOpened + 10 {
		o.Open(event.PlanWebhook{ConnectionKey: fmt.Sprintf("conn_%d", i), Secrets: sealed})
	}
	o.mu.Lock()
	n := len(o.opened)
	o.mu.Unlock()
	if n > maxOpened {
		t.Errorf("cache holds %d entries, want at most %d", n, maxOpened)
	}
}
