package event

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSubmitted decodes and validates privacy.request.submitted payloads the way the executor does
// (json.Unmarshal, then Validate). Whatever Validate accepts must be storable: its id and policy key
// map to valid KV keys, every value is within its bound, and the payload survives a round trip.
func FuzzSubmitted(f *testing.F) {
	for _, s := range []string{
		`{"id":"pri_1","policy_key":"p","identity":{"email":"a@example.com"}}`,
		`{"id":"a.b:c","policy_key":"my.policy","identity":{"phone_number":"+15551234567"},"external_id":"ext"}`,
		`{"id":"..","policy_key":"..","identity":{"email":"x"}}`,
		`{"id":":","policy_key":"-","identity":{"email":"","phone_number":"1"}}`,
		`{"id":"x","policy_key":"p","identity":{"email":null}}`,
		`{"id":"x","policy_key":"p","identity":{"email":"\u0000\ud800"}}`,
		`{"id":"x","policy_key":"p","identity":{"email":"a"},"ID":"y"}`,
		`{"id":"x","policy_key":"p","identity":{"email":"a"}} trailing`,
		`[]`, `null`, `{}`, `{"identity":[]}`,
		`{"id":"x","policy_key":"p","identity":{"ga_client_id":"g","ljt_readerID":"r","fides_user_device_id":"d","external_id":"e"}}`,
		`{"id":"x","policy_key":"p","identity":{"loyalty_id":{"label":"Loyalty ID","value":"CH-1"}}}`,
		`{"id":"x","policy_key":"p","identity":{"email":null,"loyalty_id":{"label":"","value":"CH-1"}}}`,
		`{"id":"x","policy_key":"p","identity":{"loyalty_id":{"label":"L","value":"v","x":1}}}`,
		`{"id":"x","policy_key":"p","identity":{"loyalty_id":null,"email":"a"}}`,
		`{"id":"x","policy_key":"p","identity":{"email":"a","email":"b"}}`,
		`{"id":"x","policy_key":"p","identity":{"ssn":"123"}}`,
		`{"id":"x","policy_key":"p","identity":{"Loyalty":{"label":"L","value":"v"}}}`,
		`{"id":"x","policy_key":"p","identity":{"external_id":{"label":"L","value":"v"}}}`,
		`{"id":"` + strings.Repeat("a", 255) + `","policy_key":"` + strings.Repeat("p", 255) + `","identity":{"email":"` + strings.Repeat("é", MaxIdentityValue) + `"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var sub Submitted
		if json.Unmarshal(data, &sub) != nil {
			return
		}
		if sub.Validate() != nil {
			return
		}
		if !ValidKVKey(KVKey(sub.ID)) {
			t.Fatalf("accepted id %q maps to an invalid KV key %q", sub.ID, KVKey(sub.ID))
		}
		if !ValidKVKey(KVKey(sub.PolicyKey)) {
			t.Fatalf("accepted policy_key %q maps to an invalid KV key %q", sub.PolicyKey, KVKey(sub.PolicyKey))
		}
		if len(sub.ID) > 255 || len(sub.PolicyKey) > MaxPolicyKey || utf8.RuneCountInString(sub.ExternalID) > MaxExternalID {
			t.Fatalf("accepted an out-of-bound field: %+v", sub)
		}
		if sub.Identity.Empty() {
			t.Fatal("accepted an empty identity")
		}
		for _, v := range sub.Identity.standard() {
			if v != nil && utf8.RuneCountInString(*v) > MaxIdentityValue {
				t.Fatalf("accepted an identity value of %d characters", utf8.RuneCountInString(*v))
			}
		}
		if len(sub.Identity.Custom) > MaxCustomIdentities {
			t.Fatalf("accepted %d custom identities", len(sub.Identity.Custom))
		}
		for k, c := range sub.Identity.Custom {
			if !CustomIdentityName(k) || c.Label == "" || c.Value == "" ||
				utf8.RuneCountInString(c.Label) > MaxIdentityLabel || utf8.RuneCountInString(c.Value) > MaxIdentityValue {
				t.Fatalf("accepted a custom identity out of bounds under %q", k)
			}
		}
		// What was accepted is what a redelivery decodes: the executor re-reads the payload.
		again, err := json.Marshal(sub)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var back Submitted
		if err := json.Unmarshal(again, &back); err != nil || !reflect.DeepEqual(back, sub) {
			t.Fatalf("round trip changed the event: %+v -> %+v (%v)", sub, back, err)
		}
		if back.Validate() != nil {
			t.Fatalf("round trip made the event invalid: %v", back.Validate())
		}
	})
}
