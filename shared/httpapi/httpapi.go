// Package httpapi holds the HTTP conventions of SPEC §1 shared by the config and callback services:
// JSON bodies (strict decoding, 1 MiB cap), the {"detail": ...} error shape, request ids, bearer
// authorization with OAuth scopes, health, readiness and metrics endpoints, and a server that drains
// on shutdown. Each service maps its own domain errors to an *Error in one place.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/rs/zerolog"
)

// MaxBodyBytes is the largest request body accepted (SPEC §1): larger ones get 413.
const MaxBodyBytes = 1 << 20

// Error is an HTTP error answer: the status and the value of "detail".
type Error struct {
	Status int
	Detail any
	// OAuthCode, when set, is the error code of an OAuth token endpoint answer (RFC 6749 §5.2,
	// such as "invalid_client"): the body then also carries it as "error", and a string Detail as
	// "error_description".
	OAuthCode string
}

func (e *Error) Error() string { return fmt.Sprintf("http %d: %v", e.Status, e.Detail) }

// Errorf returns an *Error whose detail is the formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Detail: fmt.Sprintf(format, args...)}
}

// FieldError is one item of a 422 validation answer.
type FieldError struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

// Invalid returns a 422 *Error listing the given field errors.
func Invalid(errs ...FieldError) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Detail: errs}
}

// InvalidField returns a 422 *Error for one field.
func InvalidField(msg, typ string, loc ...any) *Error {
	return Invalid(FieldError{Loc: loc, Msg: msg, Type: typ})
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// WriteError writes err: an *Error as itself, anything else as 500 with a generic detail (the
// error is logged with the request's logger, never sent).
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var he *Error
	if errors.As(err, &he) {
		body := map[string]any{"detail": he.Detail}
		if he.OAuthCode != "" {
			body["error"] = he.OAuthCode
			if d, ok := he.Detail.(string); ok {
				body["error_description"] = d
			}
		}
		WriteJSON(w, he.Status, body)
		return
	}
	zerolog.Ctx(r.Context()).Error().Err(err).Msg("request failed")
	WriteJSON(w, http.StatusInternalServerError, map[string]any{"detail": "Internal server error"})
}

// ReadBody reads the request body, at most MaxBodyBytes: a larger body is a 413 *Error.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, tooLarge()
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "Could not read the request body.")
	}
	if len(b) > MaxBodyBytes {
		return nil, tooLarge()
	}
	return b, nil
}

func tooLarge() *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "Request body is larger than %d bytes.", MaxBodyBytes)
}

// Decode reads the body and unmarshals it into dst; see Unmarshal.
func Decode(r *http.Request, dst any, strict bool) error {
	b, err := ReadBody(r)
	if err != nil {
		return err
	}
	return Unmarshal(b, dst, strict, "body")
}

// Unmarshal decodes one JSON value into dst. Malformed JSON, or anything but whitespace after the
// value, is a 400 *Error. With strict, a body is also refused with a 422 *Error when an object
// decoded into a struct has a key that is not exactly (case included) one of the struct's JSON
// field names, or when any object repeats a key; values kept as json.RawMessage are not looked
// into. A value of the wrong type is a 422 *Error in both modes. loc prefixes the location of a
// field error (for example "body", 3 for the fourth item of a list).
func Unmarshal(data []byte, dst any, strict bool, loc ...any) error {
	if !json.Valid(data) {
		var skip json.RawMessage
		return malformed(json.Unmarshal(data, &skip))
	}
	if strict {
		problem, err := checkKeys(data, reflect.TypeOf(dst), loc)
		if err != nil {
			return malformed(err)
		}
		if problem != nil {
			return Invalid(*problem)
		}
	}
	err := json.Unmarshal(data, dst)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		l := append(append([]any{}, loc...), fieldPath(typeErr.Field)...)
		return InvalidField(fmt.Sprintf("value is not a valid %s", typeErr.Type), "type_error", l...)
	}
	return malformed(err)
}

// malformed is the 400 answer to a body that is not one well-formed JSON value.
func malformed(err error) error {
	if err == nil {
		err = errTrailing
	}
	return Errorf(http.StatusBadRequest, "Malformed JSON body: %v", strings.TrimPrefix(err.Error(), "json: "))
}

func fieldPath(p string) []any {
	if p == "" {
		return nil
	}
	var out []any
	for _, s := range strings.Split(p, ".") {
		out = append(out, s)
	}
	return out
}
