package httpapi

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode"
)

// Messages of the field errors of a strict body.
const (
	msgExtraField     = "extra fields not permitted"
	msgDuplicateField = "duplicate field: each field may appear only once in an object"
)

// errTrailing reports data after the one JSON value of a body.
var errTrailing = errors.New("trailing data after the JSON value")

// shape is what the key check knows of the Go type a JSON value decodes into.
type shape struct {
	// opaque values (json.RawMessage, other json.Unmarshaler or encoding.TextUnmarshaler types)
	// are not looked into: their type decides what they accept.
	opaque bool
	// fields, for a struct, maps each exact JSON field name to the shape of its value. A key that is
	// not in it is an extra field. Nil for anything that is not a struct.
	fields map[string]*shape
	// elem is the shape of a map's values or a slice's or array's items; nil means "any value".
	elem *shape
}

// anyShape is the shape of an interface or a scalar: keys are free, but not repeated.
var anyShape = &shape{}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	shapes          sync.Map // reflect.Type → *shape
)

// shapeOf returns the shape of values decoded into t (cached per type).
func shapeOf(t reflect.Type) *shape {
	if t == nil {
		return anyShape
	}
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	s := buildShape(t, map[reflect.Type]*shape{})
	shapes.Store(t, s)
	return s
}

// buildShape builds the shape of t; inProgress breaks the cycles of recursive types.
func buildShape(t reflect.Type, inProgress map[reflect.Type]*shape) *shape {
	if s, ok := inProgress[t]; ok {
		return s
	}
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return &shape{opaque: true}
	}
	switch t.Kind() {
	case reflect.Pointer:
		seen := map[reflect.Type]bool{}
		for t.Kind() == reflect.Pointer {
			if seen[t] { // a pointer type that points to itself
				return anyShape
			}
			seen[t] = true
			t = t.Elem()
		}
		return buildShape(t, inProgress)
	case reflect.Map, reflect.Slice, reflect.Array:
		s := &shape{}
		inProgress[t] = s
		s.elem = buildShape(t.Elem(), inProgress)
		return s
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}}
		inProgress[t] = s
		for name, ft := range jsonFields(t) {
			s.fields[name] = buildShape(ft, inProgress)
		}
		return s
	}
	return anyShape
}

// jsonField is a candidate for a JSON name of a struct.
type jsonField struct {
	typ    reflect.Type
	depth  int
	tagged bool
}

// jsonFields returns the JSON names of struct t and their Go types, by the rules of encoding/json:
// exported fields, named by their tag or else their Go name, "-" left out, the fields of untagged
// embedded structs promoted, and among fields of one name the shallowest wins, a tagged one before
// an untagged one at the same depth, and a tie hides the name.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	candidates := map[string][]jsonField{}
	visited := map[reflect.Type]bool{}
	level := []reflect.Type{t}
	for depth := 0; len(level) > 0; depth++ {
		var next []reflect.Type
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				f := st.Field(i)
				ft := f.Type
				if f.Anonymous && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if f.Anonymous {
					if !f.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !f.IsExported() {
					continue
				}
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !validTagName(name) {
					name = ""
				}
				if name == "" && f.Anonymous && ft.Kind() == reflect.Struct {
					next = append(next, ft)
					continue
				}
				tagged := name != ""
				if !tagged {
					name = f.Name
				}
				candidates[name] = append(candidates[name], jsonField{typ: f.Type, depth: depth, tagged: tagged})
			}
		}
		level = next
	}
	out := map[string]reflect.Type{}
	for name, fs := range candidates {
		if f, ok := dominant(fs); ok {
			out[name] = f.typ
		}
	}
	return out
}

// dominant picks the field that a JSON name denotes among fs, if any.
func dominant(fs []jsonField) (jsonField, bool) {
	minDepth := fs[0].depth
	for _, f := range fs {
		minDepth = min(minDepth, f.depth)
	}
	var shallow, tagged []jsonField
	for _, f := range fs {
		if f.depth == minDepth {
			shallow = append(shallow, f)
			if f.tagged {
				tagged = append(tagged, f)
			}
		}
	}
	switch {
	case len(shallow) == 1:
		return shallow[0], true
	case len(tagged) == 1:
		return tagged[0], true
	}
	return jsonField{}, false
}

// validTagName reports whether encoding/json takes name from a tag (else it uses the Go name).
func validTagName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", r) && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			return false
		}
	}
	return true
}

// DuplicateKey returns the first key that repeats a key of the same object anywhere in data, one
// well-formed JSON value, as a 422 *Error at loc plus the key's path, or nil when none repeats (or
// data is malformed: the caller's decoding reports that). It is for bodies decoded without a
// destination type (the callback's resume body); Unmarshal with strict checks this itself.
func DuplicateKey(data []byte, loc ...any) error {
	if problem, err := checkKeys(data, nil, loc); err == nil && problem != nil {
		return Invalid(*problem)
	}
	return nil
}

// keyCheck walks the tokens of one JSON value and finds the first key that is not an exact field
// name of the destination or that repeats a key of the same object.
type keyCheck struct {
	dec     *json.Decoder
	problem *FieldError
}

// checkKeys checks data, one JSON value to be decoded into a value of type t, as a strict body
// must be: every key of an object decoded into a struct is one of its exact JSON field names, no
// object repeats a key, and nothing follows the value. It returns the first field problem (nil
// when none) or, for malformed JSON or trailing data, an error.
func checkKeys(data []byte, t reflect.Type, loc []any) (*FieldError, error) {
	c := keyCheck{dec: json.NewDecoder(bytes.NewReader(data))}
	c.dec.UseNumber() // numbers are not converted, so none is out of range
	if err := c.value(shapeOf(t), loc); err != nil {
		return nil, err
	}
	if _, err := c.dec.Token(); err != io.EOF {
		return nil, errTrailing
	}
	return c.problem, nil
}

// value reads one value of shape s at loc.
func (c *keyCheck) value(s *shape, loc []any) error {
	if s.opaque {
		var skip json.RawMessage
		return c.dec.Decode(&skip)
	}
	tok, err := c.dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return c.object(s, loc)
	case json.Delim('['):
		for i := 0; c.dec.More(); i++ {
			if err := c.value(elemShape(s), with(loc, i)); err != nil {
				return err
			}
		}
		_, err := c.dec.Token() // ']'
		return err
	}
	return nil
}

// object reads the members of an object of shape s at loc, its '{' already read.
func (c *keyCheck) object(s *shape, loc []any) error {
	seen := map[string]bool{}
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		at := with(loc, key)
		child := elemShape(s)
		switch {
		case seen[key]:
			c.report(at, msgDuplicateField, "value_error.duplicate")
		case s.fields != nil && s.fields[key] == nil:
			c.report(at, msgExtraField, "value_error.extra")
		case s.fields != nil:
			child = s.fields[key]
		}
		seen[key] = true
		if err := c.value(child, at); err != nil {
			return err
		}
	}
	_, err := c.dec.Token() // '}'
	return err
}

// report keeps the first problem found.
func (c *keyCheck) report(loc []any, msg, typ string) {
	if c.problem == nil {
		c.problem = &FieldError{Loc: loc, Msg: msg, Type: typ}
	}
}

func elemShape(s *shape) *shape {
	if s.elem == nil {
		return anyShape
	}
	return s.elem
}

// with returns loc followed by p, never sharing loc's backing array.
func with(loc []any, p any) []any {
	return append(loc[:len(loc):len(loc)], p)
}
