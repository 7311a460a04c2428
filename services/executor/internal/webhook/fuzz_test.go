package webhook

import (
	"encoding/json"
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
			for _, v := range []*string{derived.Email, derived.PhoneNumber} {
				if v != nil && utf8.RuneCountInString(*v) > event.MaxIdentityValue {
					t.Fatalf("accepted a derived value of %d characters", utf8.RuneCountInString(*v))
				}
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
