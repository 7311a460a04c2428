package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// decodeObject decodes the strict body of a callback route (SPEC §7): empty (nil) or one JSON
// object, no key repeated in any object. Every problem, malformed JSON included, is a 422 listing
// pydantic-like field errors: SPEC §7 makes a malformed body 422. It returns the object and the
// problems of its keys that are not among allowed, so that the caller lists them with its own.
func decodeObject(b []byte, allowed ...string) (map[string]any, []api.FieldError, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil, nil
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		offset := int64(len(b))
		var se *json.SyntaxError
		if errors.As(err, &se) {
			offset = se.Offset
		}
		return nil, nil, api.InvalidField(fmt.Sprintf("Expecting a JSON object: %v", err), "value_error.jsondecode", "body", offset)
	}
	// A repeated key would otherwise be taken silently, the last one winning.
	if err := api.DuplicateKey(b, "body"); err != nil {
		return nil, nil, err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, nil, api.InvalidField("value is not a valid dict", "type_error.dict", "body")
	}
	var problems []api.FieldError
	for _, k := range sortedKeys(top) {
		if !slices.Contains(allowed, k) {
			problems = append(problems, extra("body", k))
		}
	}
	return top, problems, nil
}

// invalid returns the 422 listing problems, or nil when there are none.
func invalid(problems []api.FieldError) error {
	if len(problems) == 0 {
		return nil
	}
	return api.Invalid(problems...)
}

// decodeEmptyBody checks the body of a pre-approval reply or an approval: empty or {}.
func decodeEmptyBody(b []byte) error {
	_, problems, err := decodeObject(b)
	if err != nil {
		return err
	}
	return invalid(problems)
}

// decodeDenyBody decodes the body of a denial: empty, {} or {"reason": <string or null>}, the
// reason at most event.MaxReason bytes. It returns "" when the body gives no reason.
func decodeDenyBody(b []byte) (string, error) {
	top, problems, err := decodeObject(b, "reason")
	if err != nil {
		return "", err
	}
	var reason string
	switch v := top["reason"].(type) {
	case nil:
	case string:
		if len(v) > event.MaxReason {
			problems = append(problems, api.FieldError{Loc: []any{"body", "reason"},
				Msg: fmt.Sprintf("ensure this value has at most %d bytes", event.MaxReason), Type: "value_error.any_str.max_length"})
		}
		reason = v
	default:
		problems = append(problems, api.FieldError{Loc: []any{"body", "reason"}, Msg: "str type expected", Type: "type_error.str"})
	}
	if err := invalid(problems); err != nil {
		return "", err
	}
	return reason, nil
}

// decodeResumeBody decodes the strict resume body of SPEC §7 (see decodeObject): empty, {} or
// {"derived_identity": <identity>}, the identity in event.Identity's shape (standard fields:
// non-empty strings or null; custom identities: {"label", "value"} or null). It returns nil when
// the body derives no identity.
func decodeResumeBody(b []byte) (*event.Identity, error) {
	top, problems, err := decodeObject(b, "derived_identity")
	if err != nil {
		return nil, err
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
	if err := invalid(problems); err != nil {
		return nil, err
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

// maxFilterKey bounds a key a scoped retry filters on (SPEC §1: keys are at most 255 characters).
const maxFilterKey = 255

// decodeReplayBody decodes the strict body of a scoped retry (SPEC §7): empty, {} or any of
// {policy_key, webhook_key, connection_key} (1-255 characters), {errored_since, errored_until}
// (RFC 3339 times, since before until) and status (an HTTP status, 100-599); null is absent.
func decodeReplayBody(b []byte) (resume.Filter, error) {
	top, problems, err := decodeObject(b, "policy_key", "webhook_key", "connection_key", "errored_since", "errored_until", "status")
	if err != nil {
		return resume.Filter{}, err
	}
	var f resume.Filter
	for _, k := range []struct {
		name string
		dst  *string
	}{{"policy_key", &f.PolicyKey}, {"webhook_key", &f.WebhookKey}, {"connection_key", &f.ConnectionKey}} {
		if v, ok := resumeString(top[k.name], true, maxFilterKey, []any{"body", k.name}, &problems); ok && v != nil {
			*k.dst = *v
		}
	}
	for _, k := range []struct {
		name string
		dst  *time.Time
	}{{"errored_since", &f.Since}, {"errored_until", &f.Until}} {
		switch v := top[k.name].(type) {
		case nil:
		case string:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				problems = append(problems, api.FieldError{Loc: []any{"body", k.name}, Msg: "invalid datetime format (RFC 3339)", Type: "value_error.datetime"})
				continue
			}
			*k.dst = t
		default:
			problems = append(problems, api.FieldError{Loc: []any{"body", k.name}, Msg: "str type expected", Type: "type_error.str"})
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		problems = append(problems, api.FieldError{Loc: []any{"body", "errored_until"}, Msg: "errored_until must be after errored_since", Type: "value_error"})
	}
	switch v := top["status"].(type) {
	case nil:
	case float64:
		if v != float64(int(v)) || v < 100 || v > 599 {
			problems = append(problems, api.FieldError{Loc: []any{"body", "status"}, Msg: "ensure this value is an HTTP status, a whole number from 100 to 599", Type: "value_error.number"})
			break
		}
		f.Status = int(v)
	default:
		problems = append(problems, api.FieldError{Loc: []any{"body", "status"}, Msg: "value is not a valid integer", Type: "type_error.integer"})
	}
	if err := invalid(problems); err != nil {
		return resume.Filter{}, err
	}
	return f, nil
}
