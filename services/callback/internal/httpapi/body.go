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

// decodeResumeBody decodes the strict resume body of SPEC §7: empty, {} or {"derived_identity":
// <identity>}, the identity in event.Identity's shape (standard fields: non-empty strings or null;
// custom identities: {"label", "value"} or null), no key repeated in an object. Every problem, malformed JSON included, is a
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
			if dst := derived.Standard(k); dst != nil {
				if v, ok := resumeString(d[k], true, event.MaxIdentityValue, loc, &problems); ok {
					*dst = v
				}
				continue
			}
			if !event.CustomIdentityName(k) {
				problems = append(problems, extra(loc...))
				continue
			}
			c, ok := resumeCustom(d[k], loc, &problems)
			if ok && c != nil {
				if derived.Custom == nil {
					derived.Custom = map[string]event.LabeledIdentity{}
				}
				derived.Custom[k] = *c
			}
		}
		if n := len(derived.Custom); n > event.MaxCustomIdentities {
			problems = append(problems, api.FieldError{Loc: []any{"body", "derived_identity"},
				Msg: fmt.Sprintf("ensure this value has at most %d custom identities", event.MaxCustomIdentities), Type: "value_error.dict.max_items"})
		}
	default:
		problems = append(problems, api.FieldError{Loc: []any{"body", "derived_identity"}, Msg: "value is not a valid dict", Type: "type_error.dict"})
	}
	if len(problems) > 0 {
		return nil, api.Invalid(problems...)
	}
	if derived != nil && derived.IsZero() {
		return nil, nil
	}
	return derived, nil
}

// resumeString checks a string of a resume body at loc: 1-max characters, or null when nullable
// (nil). It appends a problem and reports false when the value is not one of these.
func resumeString(v any, nullable bool, max int, loc []any, problems *[]api.FieldError) (*string, bool) {
	switch v := v.(type) {
	case nil:
		if nullable {
			return nil, true
		}
		*problems = append(*problems, api.FieldError{Loc: loc, Msg: "none is not an allowed value", Type: "type_error.none.not_allowed"})
	case string:
		switch {
		case v == "":
			*problems = append(*problems, api.FieldError{Loc: loc, Msg: "ensure this value has at least 1 characters", Type: "value_error.any_str.min_length"})
		case utf8.RuneCountInString(v) > max:
			*problems = append(*problems, api.FieldError{Loc: loc, Msg: fmt.Sprintf("ensure this value has at most %d characters", max), Type: "value_error.any_str.max_length"})
		default:
			return &v, true
		}
	default:
		*problems = append(*problems, api.FieldError{Loc: loc, Msg: "str type expected", Type: "type_error.str"})
	}
	return nil, false
}

// resumeCustom checks a custom identity of a resume body at loc: {"label", "value"}, both required
// strings within their bounds, or null (nil, it sets nothing); any other value makes the key an
// unknown field. It appends the problems and reports
// false when there are any.
func resumeCustom(v any, loc []any, problems *[]api.FieldError) (*event.LabeledIdentity, bool) {
	if v == nil {
		return nil, true
	}
	obj, ok := v.(map[string]any)
	if !ok {
		// Not a standard field and not a custom identity: an unknown field.
		*problems = append(*problems, extra(loc...))
		return nil, false
	}
	before := len(*problems)
	for _, k := range sortedKeys(obj) {
		if k != "label" && k != "value" {
			*problems = append(*problems, extra(append(slices.Clone(loc), k)...))
		}
	}
	var c event.LabeledIdentity
	for _, f := range []struct {
		name string
		dst  *string
		max  int
	}{{"label", &c.Label, event.MaxIdentityLabel}, {"value", &c.Value, event.MaxIdentityValue}} {
		floc := append(slices.Clone(loc), f.name)
		v, present := obj[f.name]
		if !present {
			*problems = append(*problems, api.FieldError{Loc: floc, Msg: "field required", Type: "value_error.missing"})
			continue
		}
		if s, ok := resumeString(v, false, f.max, floc, problems); ok {
			*f.dst = *s
		}
	}
	return &c, len(*problems) == before
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
