package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// decodeResumeBody decodes the strict resume body of SPEC §7: empty, {} or
// {"derived_identity": {"email"?, "phone_number"?}}, no key repeated in an object. Every problem, malformed JSON included, is a
// 422 listing pydantic-like field errors. It returns nil when the body derives no identity.
func decodeResumeBody(b []byte) (*event.Identity, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		offset := int64(len(b))
		var se *json.SyntaxError
		if errors.As(err, &se) {
			offset = se.Offset
		}
		return nil, api.InvalidField(fmt.Sprintf("Expecting a JSON object: %v", err), "value_error.jsondecode", "body", offset)
	}
	// A repeated key would otherwise be taken silently, the last one winning.
	if err := api.DuplicateKey(b, "body"); err != nil {
		return nil, err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, api.InvalidField("value is not a valid dict", "type_error.dict", "body")
	}
	var problems []api.FieldError
	for _, k := range sortedKeys(top) {
		if k != "derived_identity" {
			problems = append(problems, extra("body", k))
		}
	}
	var derived *event.Identity
	switch d := top["derived_identity"].(type) {
	case nil:
	case map[string]any:
		derived = &event.Identity{}
		for _, k := range sortedKeys(d) {
			loc := []any{"body", "derived_identity", k}
			var dst **string
			switch k {
			case "email":
				dst = &derived.Email
			case "phone_number":
				dst = &derived.PhoneNumber
			default:
				problems = append(problems, extra(loc...))
				continue
			}
			switch v := d[k].(type) {
			case nil:
			case string:
				switch {
				case v == "":
					problems = append(problems, api.FieldError{Loc: loc, Msg: "ensure this value has at least 1 characters", Type: "value_error.any_str.min_length"})
				case utf8.RuneCountInString(v) > event.MaxIdentityValue:
					problems = append(problems, api.FieldError{Loc: loc, Msg: fmt.Sprintf("ensure this value has at most %d characters", event.MaxIdentityValue), Type: "value_error.any_str.max_length"})
				default:
					*dst = &v
				}
			default:
				problems = append(problems, api.FieldError{Loc: loc, Msg: "str type expected", Type: "type_error.str"})
			}
		}
	default:
		problems = append(problems, api.FieldError{Loc: []any{"body", "derived_identity"}, Msg: "value is not a valid dict", Type: "type_error.dict"})
	}
	if len(problems) > 0 {
		return nil, api.Invalid(problems...)
	}
	if derived != nil && derived.Email == nil && derived.PhoneNumber == nil {
		return nil, nil
	}
	return derived, nil
}

func extra(loc ...any) api.FieldError {
	return api.FieldError{Loc: loc, Msg: "extra fields not permitted", Type: "value_error.extra"}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
