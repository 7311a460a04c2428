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

// ParseTwoWay parses a two-way answer {"derived_identity"?: <identity>, "halt"?: bool | "true" |
// "false"}. The derived identity has the shape and strictness of a submitted one (event.Identity:
// standard fields, custom identities {label, value}; unknown or repeated keys and other types are
// refused) and its bounds. An empty body means no change and no halt.
func ParseTwoWay(body []byte) (*event.Identity, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, nil
	}
	if !json.Valid(body) {
		return nil, false, fmt.Errorf("two-way answer is not JSON")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, false, fmt.Errorf("two-way answer is not a JSON object")
	}
	var derived *event.Identity
	if v, ok := obj["derived_identity"]; ok {
		d, err := event.DecodeIdentity(v, "derived_identity")
		if err != nil {
			return nil, false, answerError("%s", err)
		}
		if d != nil {
			if err := d.Validate(); err != nil {
				// Bounded like submitted values, so a derived identity always fits its stores (D15).
				return nil, false, answerError("derived %s", strings.TrimPrefix(err.Error(), event.ErrInvalidEvent.Error()+": "))
			}
		}
		derived = d
	}
	var h any
	if v, ok := obj["halt"]; ok {
		_ = json.Unmarshal(v, &h) // valid JSON: checked above
	}
	halt := false
	switch h := h.(type) {
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
