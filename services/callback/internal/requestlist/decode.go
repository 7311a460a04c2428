package requestlist

import (
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/policyhooks/policyhooks/shared/event"
)

// listed is the part of a record (event.Request) the index reads.
type listed struct {
	ID                   string       `json:"id"`
	PolicyKey            string       `json:"policy_key"`
	ExternalID           string       `json:"external_id"`
	Status               event.Status `json:"status"`
	Step                 event.Step   `json:"step"`
	CreatedAt            time.Time    `json:"created_at"`
	UpdatedAt            time.Time    `json:"updated_at"`
	StartedProcessingAt  *time.Time   `json:"started_processing_at"`
	FinishedProcessingAt *time.Time   `json:"finished_processing_at"`
}

var errSyntax = errors.New("requestlist: not a JSON object the fast path reads")

// decode reads the listed fields of a record. Most of a record is its webhooks' attempts and its
// timeline, which the list does not show: the fast path walks the top-level object and decodes
// only the fields it wants, skipping the other values without decoding them (about seven times
// faster than json.Unmarshal on an executor's record; the watch decodes every write of every
// request). A record the fast path cannot read is decoded by json.Unmarshal, which is the
// reference: both agree on every record json.Unmarshal accepts (TestDecodeAgrees).
func decode(data []byte) (listed, error) {
	var r listed
	if err := decodeFast(data, &r); err == nil {
		return r, nil
	}
	r = listed{}
	err := json.Unmarshal(data, &r)
	return r, err
}

// decodeFast reads data's top-level members; any irregularity (an escaped key or string, a
// duplicate wanted key, bad syntax) is errSyntax, so that decode falls back to json.Unmarshal.
func decodeFast(data []byte, r *listed) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errSyntax
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return trailing(data, i+1)
	}
	var seen uint16
	for {
		key, next, ok := plainString(data, i)
		if !ok {
			return errSyntax
		}
		i = skipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return errSyntax
		}
		start := skipSpace(data, i+1)
		end, ok := skipValue(data, start)
		if !ok {
			return errSyntax
		}
		if bit, err := r.set(key, data[start:end]); err != nil {
			return err
		} else if bit != 0 {
			if seen&bit != 0 {
				return errSyntax // json.Unmarshal takes the last; not worth doing here
			}
			seen |= bit
		}
		i = skipSpace(data, end)
		if i >= len(data) {
			return errSyntax
		}
		if data[i] == '}' {
			return trailing(data, i+1)
		}
		if data[i] != ',' {
			return errSyntax
		}
		i = skipSpace(data, i+1)
	}
}

// set decodes value into the field named key, if it is one the list reads, and returns the
// field's bit (0 for another key).
func (r *listed) set(key []byte, value []byte) (uint16, error) {
	switch string(key) {
	case "id":
		return 1, str(value, &r.ID)
	case "policy_key":
		return 2, str(value, &r.PolicyKey)
	case "external_id":
		return 4, str(value, &r.ExternalID)
	case "status":
		return 8, str(value, (*string)(&r.Status))
	case "step":
		return 16, str(value, (*string)(&r.Step))
	case "created_at":
		return 32, stamp(value, &r.CreatedAt)
	case "updated_at":
		return 64, stamp(value, &r.UpdatedAt)
	case "started_processing_at":
		return 128, optionalStamp(value, &r.StartedProcessingAt)
	case "finished_processing_at":
		return 256, optionalStamp(value, &r.FinishedProcessingAt)
	}
	// json.Unmarshal matches keys without regard to case (Unicode's folding included): a key
	// that is not plain snake case might be one of the above.
	for _, c := range key {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return 0, errSyntax
		}
	}
	return 0, nil
}

// str reads a JSON string without escapes (or null, which leaves dst as it is).
func str(value []byte, dst *string) error {
	if string(value) == "null" {
		return nil
	}
	s, end, ok := plainString(value, 0)
	if !ok || end != len(value) || !utf8.Valid(s) { // json.Unmarshal replaces invalid UTF-8
		return errSyntax
	}
	*dst = string(s)
	return nil
}

// stamp reads an RFC 3339 time (or null, which leaves dst as it is).
func stamp(value []byte, dst *time.Time) error {
	var s string
	if err := str(value, &s); err != nil || string(value) == "null" {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return errSyntax
	}
	*dst = t
	return nil
}

func optionalStamp(value []byte, dst **time.Time) error {
	if string(value) == "null" {
		*dst = nil
		return nil
	}
	var t time.Time
	if err := stamp(value, &t); err != nil {
		return err
	}
	*dst = &t
	return nil
}

// plainString returns the content of the JSON string at data[i] when it holds no escape and no
// control character, and the index after its closing quote.
func plainString(data []byte, i int) ([]byte, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return data[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipValue returns the index after the JSON value at data[i]; its strings may hold escapes.
func skipValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, ok := skipString(data, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	// A number, true, false or null: up to the next delimiter.
	j := i
	for j < len(data) && !delimiter(data[j]) {
		j++
	}
	return j, j > i
}

// skipString returns the index after the JSON string at data[i].
func skipString(data []byte, i int) (int, bool) {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

func delimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// trailing accepts only white space after the object.
func trailing(data []byte, i int) error {
	if skipSpace(data, i) != len(data) {
		return errSyntax
	}
	return nil
}
