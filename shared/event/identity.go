package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Identity is what is known of the data subject, in fides's shape (SPEC §5). Email and PhoneNumber
// are always present on the wire, null when unknown (fidesops receivers rely on both keys); the
// other standard fields appear only when set. Custom identities are further keys of the identity
// object, each an object {"label", "value"}. Decoding is strict (see UnmarshalJSON); Validate
// checks the bounds.
type Identity struct {
	Email             *string
	PhoneNumber       *string
	GAClientID        *string
	LJTReaderID       *string
	FidesUserDeviceID *string
	ExternalID        *string
	// Custom holds the custom identities by their key, a name of CustomIdentityName's form.
	Custom map[string]LabeledIdentity
}

// LabeledIdentity is a custom identity: a value and the label that says what it is.
type LabeledIdentity struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Names of the standard identity fields on the wire.
const (
	IdentityEmail             = "email"
	IdentityPhoneNumber       = "phone_number"
	IdentityGAClientID        = "ga_client_id"
	IdentityLJTReaderID       = "ljt_readerID"
	IdentityFidesUserDeviceID = "fides_user_device_id"
	IdentityExternalID        = "external_id"
)

// StandardIdentityFields lists the standard identity fields in their wire order.
var StandardIdentityFields = []string{
	IdentityEmail, IdentityPhoneNumber, IdentityGAClientID, IdentityLJTReaderID, IdentityFidesUserDeviceID, IdentityExternalID,
}

var customIdentityName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// CustomIdentityName reports whether k can be the key of a custom identity: 1-64 of a-z0-9_,
// starting with a letter, and not the name of a standard field.
func CustomIdentityName(k string) bool {
	return customIdentityName.MatchString(k) && !slices.Contains(StandardIdentityFields, k)
}

// Standard returns a pointer to the standard field named name, nil when name is none.
func (i *Identity) Standard(name string) **string {
	switch name {
	case IdentityEmail:
		return &i.Email
	case IdentityPhoneNumber:
		return &i.PhoneNumber
	case IdentityGAClientID:
		return &i.GAClientID
	case IdentityLJTReaderID:
		return &i.LJTReaderID
	case IdentityFidesUserDeviceID:
		return &i.FidesUserDeviceID
	case IdentityExternalID:
		return &i.ExternalID
	}
	return nil
}

// standard returns the standard fields' values in the order of StandardIdentityFields.
func (i Identity) standard() []*string {
	return []*string{i.Email, i.PhoneNumber, i.GAClientID, i.LJTReaderID, i.FidesUserDeviceID, i.ExternalID}
}

// IsZero reports whether the identity sets no field at all, not even to an empty string: a
// derived identity that sets nothing changes nothing and is treated as none.
func (i Identity) IsZero() bool {
	for _, v := range i.standard() {
		if v != nil {
			return false
		}
	}
	return len(i.Custom) == 0
}

// Empty reports whether no identity field is known: every standard field is null or empty and
// there is no custom identity with a value.
func (i Identity) Empty() bool {
	for _, v := range i.standard() {
		if v != nil && *v != "" {
			return false
		}
	}
	for _, c := range i.Custom {
		if c.Value != "" {
			return false
		}
	}
	return true
}

// Merge returns i with every field that derived sets replaced, custom identities key by key; other
// fields stay. It never changes i's or derived's custom map.
func (i Identity) Merge(derived Identity) Identity {
	for n, name := range StandardIdentityFields {
		if v := derived.standard()[n]; v != nil {
			*i.Standard(name) = v
		}
	}
	if len(derived.Custom) > 0 {
		custom := maps.Clone(i.Custom)
		if custom == nil {
			custom = make(map[string]LabeledIdentity, len(derived.Custom))
		}
		maps.Copy(custom, derived.Custom)
		i.Custom = custom
	}
	return i
}

// Validate checks the identity's bounds: standard values at most MaxIdentityValue characters; at
// most MaxCustomIdentities custom identities, each under a key of CustomIdentityName's form, with a
// label of 1-MaxIdentityLabel and a value of 1-MaxIdentityValue characters. It does not require a
// value (a derived identity may change nothing). Problems name the field, never its value.
func (i Identity) Validate() error {
	var problems []string
	for n, name := range StandardIdentityFields {
		if v := i.standard()[n]; v != nil && utf8.RuneCountInString(*v) > MaxIdentityValue {
			problems = append(problems, fmt.Sprintf("identity.%s is longer than %d characters", name, MaxIdentityValue))
		}
	}
	if len(i.Custom) > MaxCustomIdentities {
		problems = append(problems, fmt.Sprintf("identity has %d custom identities, at most %d are allowed", len(i.Custom), MaxCustomIdentities))
	}
	for _, k := range slices.Sorted(maps.Keys(i.Custom)) {
		if !CustomIdentityName(k) {
			problems = append(problems, fmt.Sprintf("identity has an unknown field %s (%s)", quoteKey(k), customNameRule))
			continue
		}
		c := i.Custom[k]
		for _, f := range []struct {
			name, v string
			max     int
		}{{"label", c.Label, MaxIdentityLabel}, {"value", c.Value, MaxIdentityValue}} {
			switch n := utf8.RuneCountInString(f.v); {
			case n == 0:
				problems = append(problems, fmt.Sprintf("identity.%s.%s is required", k, f.name))
			case n > f.max:
				problems = append(problems, fmt.Sprintf("identity.%s.%s is longer than %d characters", k, f.name, f.max))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, strings.Join(problems, "; "))
	}
	return nil
}

// customNameRule describes CustomIdentityName's form in reasons.
const customNameRule = "custom identity keys are 1-64 of a-z0-9_ starting with a letter"

// quoteKey quotes a key for a reason, cut to 64 bytes so that a reason stays short whatever was sent.
func quoteKey(k string) string {
	const max = 64
	if len(k) <= max {
		return fmt.Sprintf("%q", k)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(k[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…", k[:cut])
}

// MarshalJSON writes email and phone_number always (null when unknown), the other standard fields
// when set, then the custom identities by key. A custom key that is a standard field's name is an
// error: the object would hold a key twice.
func (i Identity) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(struct {
		Email             *string `json:"email"`
		PhoneNumber       *string `json:"phone_number"`
		GAClientID        *string `json:"ga_client_id,omitempty"`
		LJTReaderID       *string `json:"ljt_readerID,omitempty"`
		FidesUserDeviceID *string `json:"fides_user_device_id,omitempty"`
		ExternalID        *string `json:"external_id,omitempty"`
	}{i.Email, i.PhoneNumber, i.GAClientID, i.LJTReaderID, i.FidesUserDeviceID, i.ExternalID})
	if err != nil || len(i.Custom) == 0 {
		return b, err
	}
	b = b[:len(b)-1]
	for _, k := range slices.Sorted(maps.Keys(i.Custom)) {
		if slices.Contains(StandardIdentityFields, k) {
			return nil, fmt.Errorf("%w: identity: custom identity %q has the name of a standard field", ErrInvalidEvent, k)
		}
		key, _ := json.Marshal(k)
		val, err := json.Marshal(i.Custom[k])
		if err != nil {
			return nil, err
		}
		b = append(append(append(append(b, ','), key...), ':'), val...)
	}
	return append(b, '}'), nil
}

// IdentityError is a problem of an identity's JSON: Field is where (identity.loyalty_id.label),
// Problem what. It never holds a value.
type IdentityError struct {
	Field   string
	Problem string
}

func (e *IdentityError) Error() string { return e.Field + " " + e.Problem }

// UnmarshalJSON decodes an identity strictly (SPEC §5): an object (null leaves i as it is) whose
// standard fields are strings or null, and whose other keys are custom identities of
// CustomIdentityName's form, each an object of the strings label and value (or null, which sets
// nothing). A repeated key, another key or another type is an *IdentityError naming the field.
// Bounds are Validate's.
func (i *Identity) UnmarshalJSON(data []byte) error {
	d, err := DecodeIdentity(data, "identity")
	if err != nil {
		return err
	}
	if d != nil {
		*i = *d
	}
	return nil
}

// DecodeIdentity decodes the identity JSON data as UnmarshalJSON does, naming fields from path
// (identity, derived_identity). It returns nil for null.
func DecodeIdentity(data []byte, path string) (*Identity, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, &IdentityError{path, "is not JSON"}
	}
	if tok == nil {
		return nil, trailing(dec, path)
	}
	if tok != json.Delim('{') {
		return nil, &IdentityError{path, "is not an object"}
	}
	ident := &Identity{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &IdentityError{path, "is not JSON"}
		}
		k := tok.(string)
		field := path + "." + k
		if !customIdentityName.MatchString(k) && ident.Standard(k) == nil {
			return nil, &IdentityError{path, fmt.Sprintf("has an unknown field %s (%s)", quoteKey(k), customNameRule)}
		}
		if seen[k] {
			return nil, &IdentityError{field, "is repeated"}
		}
		seen[k] = true
		if dst := ident.Standard(k); dst != nil {
			s, null, err := stringToken(dec)
			if err != nil {
				return nil, &IdentityError{field, err.Error()}
			}
			if !null {
				*dst = &s
			}
			continue
		}
		c, err := decodeCustom(dec, path, k)
		if err != nil {
			return nil, err
		}
		if c != nil {
			if ident.Custom == nil {
				ident.Custom = map[string]LabeledIdentity{}
			}
			ident.Custom[k] = *c
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, &IdentityError{path, "is not JSON"}
	}
	return ident, trailing(dec, path)
}

// decodeCustom decodes the value of the custom identity k of the identity at path: {"label",
// "value"} or null (nil).
func decodeCustom(dec *json.Decoder, path, k string) (*LabeledIdentity, error) {
	field := path + "." + k
	tok, err := dec.Token()
	if err != nil {
		return nil, &IdentityError{field, "is not JSON"}
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, &IdentityError{path, fmt.Sprintf(`has an unknown field %q (a custom identity is an object {"label", "value"})`, k)}
	}
	c := &LabeledIdentity{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &IdentityError{field, "is not JSON"}
		}
		k := tok.(string)
		var dst *string
		switch k {
		case "label":
			dst = &c.Label
		case "value":
			dst = &c.Value
		default:
			return nil, &IdentityError{field, fmt.Sprintf("has an unknown field %s (a custom identity has label and value)", quoteKey(k))}
		}
		if seen[k] {
			return nil, &IdentityError{field + "." + k, "is repeated"}
		}
		seen[k] = true
		s, null, err := stringToken(dec)
		if err != nil || null {
			return nil, &IdentityError{field + "." + k, "is not a string"}
		}
		*dst = s
	}
	if _, err := dec.Token(); err != nil {
		return nil, &IdentityError{field, "is not JSON"}
	}
	return c, nil
}

// stringToken reads a string or null value.
func stringToken(dec *json.Decoder) (s string, null bool, err error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, errors.New("is not JSON")
	}
	switch v := tok.(type) {
	case nil:
		return "", true, nil
	case string:
		return v, false, nil
	}
	return "", false, errors.New("is not a string")
}

// trailing reports data after the identity's value.
func trailing(dec *json.Decoder, path string) error {
	if _, err := dec.Token(); err != io.EOF {
		return &IdentityError{path, "is not JSON"}
	}
	return nil
}
