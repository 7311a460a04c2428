package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"
)

// fuzzInner and fuzzBody are the destination of FuzzStrictUnmarshal: a nested struct, a list of
// structs, a map and pointers.
type fuzzInner struct {
	Email *string `json:"email"`
	N     int     `json:"n"`
}

type fuzzBody struct {
	Name    string            `json:"name"`
	Order   *int              `json:"order"`
	Tags    []string          `json:"tags"`
	Headers map[string]string `json:"headers"`
	Inner   *fuzzInner        `json:"inner"`
	List    []fuzzInner       `json:"list"`
}

// FuzzStrictUnmarshal checks strict decoding on any input: it never panics, refuses only with a
// 400 or 422 *Error, and what it accepts has no repeated key and no key other than the exact field
// names, decodes as encoding/json decodes it, and decodes again to the same value once re-encoded.
func FuzzStrictUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"name":"a"}`,
		`{"name":"a","order":3,"tags":["x","y"],"headers":{"X-A":"1"},"inner":{"email":"e","n":1},"list":[{"n":2},{"email":null}]}`,
		`{"Name":"a"}`,
		`{"URL":"a","Url":"b"}`,
		`{"name":"a","name":"b"}`,
		`{"headers":{"a":"1","a":"2"}}`,
		`{"list":[{"n":1,"N":2}]}`,
		`{"name":"a"}}`,
		`{"name":"a"}]`,
		`{"name":"a"} {}`,
		`{"n\u0061me":"a"}`,
		`{"nameſ":1}`,
		`{"order":1e400}`,
		`[]`, `null`, ``, `{`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got fuzzBody
		err := Unmarshal(data, &got, true, "body")
		if err != nil {
			var he *Error
			if !errors.As(err, &he) || (he.Status != 400 && he.Status != 422) {
				t.Fatalf("Unmarshal(%q): err = %v, want a 400 or 422 *Error", data, err)
			}
			return
		}
		if problem := oracleProblem(data); problem != "" {
			t.Fatalf("Unmarshal(%q) accepted a body with %s", data, problem)
		}
		var std fuzzBody
		if err := json.Unmarshal(data, &std); err != nil || !reflect.DeepEqual(got, std) {
			t.Fatalf("Unmarshal(%q) = %+v; encoding/json gives %+v, %v", data, got, std, err)
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", got, err)
		}
		var round fuzzBody
		if err := Unmarshal(again, &round, true, "body"); err != nil || !reflect.DeepEqual(got, round) {
			t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", again, round, err, got)
		}
	})
}

// oracleProblem independently walks data (one well-formed JSON value) with the layout of fuzzBody
// written out by hand, and names the first repeated key or key that is not an exact field name.
func oracleProblem(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	top := []string{"name", "order", "tags", "headers", "inner", "list"}
	inner := []string{"email", "n"}
	var walk func(names []string, child func(key string) []string) string
	// walk reads one value; for an object, names are the allowed keys (nil: any key) and child
	// gives the allowed keys of a member's value.
	walk = func(names []string, child func(key string) []string) string {
		tok, err := dec.Token()
		if err != nil {
			return "a token error: " + err.Error()
		}
		switch tok {
		case json.Delim('['):
			for dec.More() {
				if p := walk(names, child); p != "" {
					return p
				}
			}
			_, _ = dec.Token()
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, _ := dec.Token()
				key := kt.(string)
				if seen[key] {
					return "the repeated key " + key
				}
				seen[key] = true
				if names != nil && !slices.Contains(names, key) {
					return "the key " + key
				}
				var next []string
				if child != nil {
					next = child(key)
				}
				if p := walk(next, nil); p != "" {
					return p
				}
			}
			_, _ = dec.Token()
		}
		return ""
	}
	problem := walk(top, func(key string) []string {
		if key == "inner" || key == "list" {
			return inner
		}
		return nil
	})
	if _, err := dec.Token(); problem == "" && err != io.EOF {
		problem = "trailing data"
	}
	return problem
}
