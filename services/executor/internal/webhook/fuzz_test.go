package webhook

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/policyhooks/policyhooks/shared/event"
)

// FuzzTwoWayAnswer parses two-way answers (SPEC §6). An accepted answer's derived identity is within
// the bounds of a submitted one, a halt comes only from true or "true", and an error is short enough
// to be recorded as it is (D15): a receiver cannot grow a record through its answer.
func FuzzTwoWayAnswer(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `null`, `[]`, `"x"`,
		`{"halt":true}`, `{"halt":"true"}`, `{"halt":"false"}`, `{"halt":"TRUE"}`, `{"halt":1}`,
		`{"halt":"` + strings.Repeat("h", 4000) + `"}`,
		`{"derived_identity":{"email":"a@example.com"}}`,
		`{"derived_identity":{"phone_number":"+1555","email":null},"halt":false}`,
		`{"derived_identity":{"Email":"a"}}`,
		`{"derived_identity":{"email":"` + strings.Repeat("é", event.MaxIdentityValue+1) + `"}}`,
		`{"derived_identity":[],"halt":true}`,
		`{"halt":true,"halt":false}`,
		`{"derived_identity":{"email":1}}`,
		`{"halt":true} trailing`,
		`{"derived_identity":{"ga_client_id":"g","ljt_readerID":"r","fides_user_device_id":"d","external_id":"x"},"halt":"true"}`,
		`{"derived_identity":{"loyalty_id":{"label":"Loyalty ID","value":"CH-1"},"email":"a"}}`,
		`{"derived_identity":{"loyalty_id":null}}`,
		`{"derived_identity":{"loyalty_id":"CH-1"}}`,
		`{"derived_identity":{"Loyalty ID":{"label":"L","value":"v"}}}`,
		`{"derived_identity":{"k":{"label":"L","value":"v","x":"y"}}}`,
		`{"derived_identity":{"k":{"label":"","value":"v"}}}`,
		`{"derived_identity":{"k":{"label":"L","value":"v"},"k":{"label":"L","value":"w"}}}`,
		`{"derived_identity":{"email":"a","email":"b"}}`,
		`{"derived_identity":{"` + strings.Repeat("k", 300) + `":{"label":"L","value":"v"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		derived, halt, err := ParseTwoWay(body)
		if err != nil {
			if derived != nil || halt {
				t.Fatalf("an error came with a result: %v %v %v", derived, halt, err)
			}
			if n := len(err.Error()); n > event.MaxReason {
				t.Fatalf("error of %d bytes exceeds MaxReason: %.80q", n, err.Error())
			}
			return
		}
		if derived != nil {
			if verr := derived.Validate(); verr != nil {
				t.Fatalf("accepted a derived identity that does not validate: %v", verr)
			}
			for _, v := range []*string{derived.Email, derived.PhoneNumber, derived.GAClientID, derived.LJTReaderID, derived.FidesUserDeviceID, derived.ExternalID} {
				if v != nil && utf8.RuneCountInString(*v) > event.MaxIdentityValue {
					t.Fatalf("accepted a derived value of %d characters", utf8.RuneCountInString(*v))
				}
			}
			if len(derived.Custom) > event.MaxCustomIdentities {
				t.Fatalf("accepted %d derived custom identities", len(derived.Custom))
			}
			for k, c := range derived.Custom {
				if !event.CustomIdentityName(k) || c.Label == "" || c.Value == "" {
					t.Fatalf("accepted a derived custom identity out of bounds under %q", k)
				}
			}
			// What is accepted is stored as JSON and read back: it must survive the round trip.
			b, err := json.Marshal(derived)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			var back event.Identity
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, derived) {
				t.Fatalf("round trip changed the derived identity: %s (%v)", b, err)
			}
		}
		if halt {
			// A halt must have been said: the body decodes to an object whose halt is true or "true".
			var obj map[string]json.RawMessage
			if json.Unmarshal(body, &obj) != nil {
				t.Fatalf("halt from a body that is not an object: %q", body)
			}
			if h := string(obj["halt"]); h != "true" && h != `"true"` {
				t.Fatalf("halt from halt=%s", h)
			}
		}
	})
}
