package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Verdict is how the state machine treats an answer.
type Verdict int

// Verdicts (SPEC §6 table).
const (
	// Done: a 2xx answer accepted (two-way: body parsed).
	Done Verdict = iota
	// Retry: transport error, timeout, 408, 429 or 5xx.
	Retry
	// Ignored: a one-way webhook answered another 3xx/4xx; the request goes on.
	Ignored
	// Refused: the answer or call sets the request to error without retry.
	Refused
)

// Answer is the classified result of a call.
type Answer struct {
	Verdict Verdict
	// Derived is the derived identity of a two-way answer, nil when none.
	Derived *event.Identity
	// Halt is a two-way answer's halt.
	Halt bool
	// Reason explains Retry and Refused.
	Reason string
}

// Classify applies SPEC §6 to a result of a call of a webhook of direction d.
func Classify(d event.Direction, r Result) Answer {
	switch {
	case r.Forbidden:
		return Answer{Verdict: Refused, Reason: r.Err.Error()}
	case r.Status == 0 && r.Err != nil:
		return Answer{Verdict: Retry, Reason: r.Err.Error()}
	case r.Status == http.StatusRequestTimeout, r.Status == http.StatusTooManyRequests, r.Status >= 500:
		return Answer{Verdict: Retry, Reason: fmt.Sprintf("webhook answered %d", r.Status)}
	case r.Status >= 200 && r.Status < 300:
		if r.Err != nil {
			return Answer{Verdict: Retry, Reason: r.Err.Error()}
		}
		if d != event.TwoWay {
			return Answer{Verdict: Done}
		}
		derived, halt, err := ParseTwoWay(r.Body)
		if err != nil {
			return Answer{Verdict: Refused, Reason: err.Error()}
		}
		return Answer{Verdict: Done, Derived: derived, Halt: halt}
	default:
		if d != event.TwoWay {
			return Answer{Verdict: Ignored, Reason: fmt.Sprintf("webhook answered %d", r.Status)}
		}
		return Answer{Verdict: Refused, Reason: fmt.Sprintf("two-way webhook answered %d", r.Status)}
	}
}

// ParseTwoWay parses a two-way answer {"derived_identity"?: {"email"?, "phone_number"?},
// "halt"?: bool | "true" | "false"}. An empty body means no change and no halt.
func ParseTwoWay(body []byte) (*event.Identity, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, nil
	}
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, false, fmt.Errorf("two-way answer is not JSON")
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, false, fmt.Errorf("two-way answer is not a JSON object")
	}
	var derived *event.Identity
	if v, ok := obj["derived_identity"]; ok && v != nil {
		fields, ok := v.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("derived_identity is not an object")
		}
		derived = &event.Identity{}
		for name, value := range fields {
			var dst **string
			switch name {
			case "email":
				dst = &derived.Email
			case "phone_number":
				dst = &derived.PhoneNumber
			default:
				return nil, false, answerError("derived_identity has unknown field %q", name)
			}
			switch s := value.(type) {
			case nil:
			case string:
				*dst = &s
			default:
				return nil, false, answerError("derived_identity.%s is not a string", name)
			}
		}
		if err := derived.Validate(); err != nil {
			// Bounded like submitted values, so a derived identity always fits its stores (D15).
			return nil, false, fmt.Errorf("derived %s", strings.TrimPrefix(err.Error(), event.ErrInvalidEvent.Error()+": "))
		}
	}
	halt := false
	switch h := obj["halt"].(type) {
	case nil:
	case bool:
		halt = h
	case string:
		switch h {
		case "true":
			halt = true
		case "false":
		default:
			return nil, false, answerError("halt must be true or false, got %q", h)
		}
	default:
		return nil, false, fmt.Errorf("halt must be true or false")
	}
	return derived, halt, nil
}

// answerError is an error about a two-way answer that quotes what the receiver sent: cut to
// event.MaxReason as a whole, so that it is recorded as it is and a receiver cannot grow a record
// through it (D15).
func answerError(format string, args ...any) error {
	return errors.New(event.Reason(fmt.Sprintf(format, args...)))
}
