package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func custom(kv ...string) map[string]LabeledIdentity {
	m := map[string]LabeledIdentity{}
	for n := 0; n+2 < len(kv); n += 3 {
		m[kv[n]] = LabeledIdentity{Label: kv[n+1], Value: kv[n+2]}
	}
	return m
}

func TestIdentityJSON(t *testing.T) {
	tests := []struct {
		name string
		in   Identity
		wire string
	}{
		{"nothing known", Identity{}, `{"email":null,"phone_number":null}`},
		{"email", Identity{Email: ptr("a@example.com")}, `{"email":"a@example.com","phone_number":null}`},
		{"empty strings stay", Identity{Email: ptr(""), ExternalID: ptr("")}, `{"email":"","phone_number":null,"external_id":""}`},
		{"every standard field", Identity{Email: ptr("a"), PhoneNumber: ptr("1"), GAClientID: ptr("ga"), LJTReaderID: ptr("ljt"), FidesUserDeviceID: ptr("dev"), ExternalID: ptr("ext")},
			`{"email":"a","phone_number":"1","ga_client_id":"ga","ljt_readerID":"ljt","fides_user_device_id":"dev","external_id":"ext"}`},
		{"custom identities by key", Identity{PhoneNumber: ptr("1"), Custom: custom("zz", "Z", "z", "loyalty_id", "Loyalty ID", "CH-1")},
			`{"email":null,"phone_number":"1","loyalty_id":{"label":"Loyalty ID","value":"CH-1"},"zz":{"label":"Z","value":"z"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.in)
			if err != nil || string(b) != tt.wire {
				t.Fatalf("Marshal = %s, %v; want %s", b, err, tt.wire)
			}
			var back Identity
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tt.in) {
				t.Fatalf("Unmarshal(%s) = %+v, %v; want %+v", b, back, err, tt.in)
			}
			// Through a pointer, as in a resume's derived_identity.
			b, err = json.Marshal(struct{ D *Identity }{&tt.in})
			if want := `{"D":` + tt.wire + `}`; err != nil || string(b) != want {
				t.Fatalf("Marshal(*Identity) = %s, %v; want %s", b, err, want)
			}
		})
	}
}

func TestIdentityMarshalRefusesStandardNameAsCustom(t *testing.T) {
	_, err := json.Marshal(Identity{Custom: custom("email", "E", "e")})
	if !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("Marshal = %v, want ErrInvalidEvent (the object would hold email twice)", err)
	}
}

func TestIdentityUnmarshal(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Identity
		err  string // the error, "" for none
	}{
		{"nulls are unknown", `{"email":null,"phone_number":null,"ga_client_id":null,"loyalty_id":null}`, Identity{}, ""},
		{"absent keys", `{}`, Identity{}, ""},
		{"null identity", `null`, Identity{}, ""},
		{"fides fields", `{"ljt_readerID":"r","fides_user_device_id":"d","ga_client_id":"g","external_id":"x"}`,
			Identity{LJTReaderID: ptr("r"), FidesUserDeviceID: ptr("d"), GAClientID: ptr("g"), ExternalID: ptr("x")}, ""},
		{"custom", `{"email":"a","loyalty_id":{"value":"CH-1","label":"Loyalty ID"}}`, Identity{Email: ptr("a"), Custom: custom("loyalty_id", "Loyalty ID", "CH-1")}, ""},
		{"not an object", `["a"]`, Identity{}, "identity is not an object"},
		{"standard not a string", `{"email":5}`, Identity{}, "identity.email is not a string"},
		{"fides field not a string", `{"ga_client_id":{"label":"l","value":"v"}}`, Identity{}, "identity.ga_client_id is not a string"},
		{"repeated standard key", `{"email":"a","email":"b"}`, Identity{}, "identity.email is repeated"},
		{"repeated custom key", `{"k":{"label":"l","value":"v"},"k":{"label":"l","value":"w"}}`, Identity{}, "identity.k is repeated"},
		{"custom not an object", `{"ssn":"123"}`, Identity{}, `identity has an unknown field "ssn" (a custom identity is an object {"label", "value"})`},
		{"custom an array", `{"ssn":["123"]}`, Identity{}, `identity has an unknown field "ssn"`},
		{"bad custom key", `{"Loyalty ID":{"label":"l","value":"v"}}`, Identity{}, `identity has an unknown field "Loyalty ID" (custom identity keys are 1-64 of a-z0-9_ starting with a letter)`},
		{"case matters", `{"Email":"a"}`, Identity{}, `identity has an unknown field "Email"`},
		{"long custom key", `{"` + strings.Repeat("k", 65) + `":{"label":"l","value":"v"}}`, Identity{}, `identity has an unknown field "` + strings.Repeat("k", 64) + `"…`},
		{"custom extra key", `{"k":{"label":"l","value":"v","secret":"s"}}`, Identity{}, `identity.k has an unknown field "secret"`},
		{"custom label repeated", `{"k":{"label":"l","label":"m","value":"v"}}`, Identity{}, `identity.k.label is repeated`},
		{"custom value not a string", `{"k":{"label":"l","value":1}}`, Identity{}, `identity.k.value is not a string`},
		{"custom value null", `{"k":{"label":"l","value":null}}`, Identity{}, `identity.k.value is not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Identity
			err := json.Unmarshal([]byte(tt.in), &got)
			if tt.err == "" {
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Unmarshal = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			var ie *IdentityError
			if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), tt.err) {
				t.Fatalf("Unmarshal = %v, want an *IdentityError starting %q", err, tt.err)
			}
			for _, secret := range []string{"123", `"s"`, "CH-1"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q echoes a value", err)
				}
			}
		})
	}
}

func TestSubmittedIdentityErrorNamesField(t *testing.T) {
	var sub Submitted
	err := json.Unmarshal([]byte(`{"id":"x","policy_key":"p","identity":{"email":"a","ssn":"123-45"}}`), &sub)
	var ie *IdentityError
	if !errors.As(err, &ie) || ie.Field != "identity" || !strings.Contains(ie.Problem, `"ssn"`) || strings.Contains(err.Error(), "123") {
		t.Fatalf("Unmarshal = %v, want an *IdentityError naming identity's field ssn, not its value", err)
	}
}

func TestIdentityValidate(t *testing.T) {
	many := map[string]LabeledIdentity{}
	for n := range MaxCustomIdentities + 1 {
		many[fmt.Sprintf("k%d", n)] = LabeledIdentity{"l", "v"}
	}
	long := strings.Repeat("é", MaxIdentityValue+1)
	tests := []struct {
		name string
		in   Identity
		want string // substring of the error, "" for valid
	}{
		{"nothing", Identity{}, ""},
		{"longest values", Identity{GAClientID: ptr(strings.Repeat("é", MaxIdentityValue)), Custom: map[string]LabeledIdentity{
			strings.Repeat("k", 64): {strings.Repeat("é", MaxIdentityLabel), strings.Repeat("é", MaxIdentityValue)}}}, ""},
		{"most custom identities", Identity{Custom: func() map[string]LabeledIdentity {
			m := map[string]LabeledIdentity{}
			for n := range MaxCustomIdentities {
				m[fmt.Sprintf("k%d", n)] = LabeledIdentity{"l", "v"}
			}
			return m
		}()}, ""},
		{"email too long", Identity{Email: ptr(long)}, "identity.email is longer than 1024 characters"},
		{"phone too long", Identity{PhoneNumber: ptr(long)}, "identity.phone_number is longer"},
		{"ga_client_id too long", Identity{GAClientID: ptr(long)}, "identity.ga_client_id is longer"},
		{"ljt_readerID too long", Identity{LJTReaderID: ptr(long)}, "identity.ljt_readerID is longer"},
		{"fides_user_device_id too long", Identity{FidesUserDeviceID: ptr(long)}, "identity.fides_user_device_id is longer"},
		{"external_id too long", Identity{ExternalID: ptr(long)}, "identity.external_id is longer"},
		{"too many custom identities", Identity{Custom: many}, "identity has 21 custom identities, at most 20"},
		{"custom value too long", Identity{Custom: custom("k", "l", long)}, "identity.k.value is longer than 1024"},
		{"custom label too long", Identity{Custom: custom("k", strings.Repeat("l", MaxIdentityLabel+1), "v")}, "identity.k.label is longer than 255"},
		{"custom value empty", Identity{Custom: custom("k", "l", "")}, "identity.k.value is required"},
		{"custom label empty", Identity{Custom: custom("k", "", "v")}, "identity.k.label is required"},
		{"custom key a standard name", Identity{Custom: custom("email", "l", "v")}, `identity has an unknown field "email"`},
		{"custom key upper case", Identity{Custom: custom("Loyalty", "l", "v")}, `identity has an unknown field "Loyalty"`},
		{"custom key starts with a digit", Identity{Custom: custom("1k", "l", "v")}, `unknown field "1k"`},
		{"custom key too long", Identity{Custom: custom(strings.Repeat("k", 65), "l", "v")}, `unknown field "` + strings.Repeat("k", 64) + `"…`},
		{"custom key empty", Identity{Custom: custom("", "l", "v")}, `unknown field ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidEvent containing %q", err, tt.want)
			}
		})
	}
}

func TestIdentityEmptyAndIsZero(t *testing.T) {
	tests := []struct {
		name        string
		in          Identity
		empty, zero bool
	}{
		{"nothing", Identity{}, true, true},
		{"empty email", Identity{Email: ptr("")}, true, false},
		{"empty custom map", Identity{Custom: map[string]LabeledIdentity{}}, true, true},
		{"phone", Identity{PhoneNumber: ptr("1")}, false, false},
		{"ljt_readerID", Identity{LJTReaderID: ptr("r")}, false, false},
		{"external_id", Identity{ExternalID: ptr("x")}, false, false},
		{"custom", Identity{Custom: custom("k", "l", "v")}, false, false},
		{"custom without value", Identity{Custom: custom("k", "l", "")}, true, false},
	}
	for _, tt := range tests {
		if got := tt.in.Empty(); got != tt.empty {
			t.Errorf("%s: Empty() = %v, want %v", tt.name, got, tt.empty)
		}
		if got := tt.in.IsZero(); got != tt.zero {
			t.Errorf("%s: IsZero() = %v, want %v", tt.name, got, tt.zero)
		}
	}
}

func TestIdentityMerge(t *testing.T) {
	base := Identity{Email: ptr("a"), PhoneNumber: ptr("1"), Custom: custom("k", "K", "k1", "m", "M", "m1")}
	tests := []struct {
		name    string
		derived Identity
		want    Identity
	}{
		{"nothing", Identity{}, base},
		{"email replaced", Identity{Email: ptr("b")}, Identity{Email: ptr("b"), PhoneNumber: ptr("1"), Custom: base.Custom}},
		{"empty string replaces", Identity{PhoneNumber: ptr("")}, Identity{Email: ptr("a"), PhoneNumber: ptr(""), Custom: base.Custom}},
		{"fides fields added", Identity{GAClientID: ptr("g"), LJTReaderID: ptr("r"), FidesUserDeviceID: ptr("d"), ExternalID: ptr("x")},
			Identity{Email: ptr("a"), PhoneNumber: ptr("1"), GAClientID: ptr("g"), LJTReaderID: ptr("r"), FidesUserDeviceID: ptr("d"), ExternalID: ptr("x"), Custom: base.Custom}},
		{"custom per key", Identity{Custom: custom("k", "K2", "k2", "n", "N", "n1")},
			Identity{Email: ptr("a"), PhoneNumber: ptr("1"), Custom: custom("k", "K2", "k2", "m", "M", "m1", "n", "N", "n1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := custom("k", "K", "k1", "m", "M", "m1")
			if got := base.Merge(tt.derived); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Merge = %+v, want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(base.Custom, before) {
				t.Fatalf("Merge changed the base's custom identities: %+v", base.Custom)
			}
		})
	}
	if got := (Identity{}).Merge(Identity{Custom: custom("k", "K", "v")}); !reflect.DeepEqual(got.Custom, custom("k", "K", "v")) {
		t.Errorf("Merge into no custom identities = %+v", got.Custom)
	}
}
