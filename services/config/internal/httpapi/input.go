package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/policyhooks/policyhooks/services/config/internal/keys"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// MaxBulkItems is the longest list a bulk endpoint takes (SPEC §1).
const MaxBulkItems = 50

// decodeItems reads the body of a bulk endpoint: a JSON array of at most MaxBulkItems items. Each
// item is decoded strictly into an I and turned into a T by convert, which records the item's field
// problems in fe under ("body", index). An item that does not decode stops the reading; the field
// problems of all items are answered together as one 422.
func decodeItems[I, T any](r *http.Request, convert func(it I, fe *fieldErrors, index int) T) ([]T, error) {
	b, err := api.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := api.Unmarshal(b, &raw, false, "body"); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, api.InvalidField("value is not a valid list", "type_error.list", "body")
	}
	if len(raw) > MaxBulkItems {
		return nil, api.InvalidField(fmt.Sprintf("ensure this value has at most %d items", MaxBulkItems), "value_error.list.max_items", "body")
	}
	var fe fieldErrors
	out := make([]T, 0, len(raw))
	for i, b := range raw {
		var it I
		if err := api.Unmarshal(b, &it, true, "body", i); err != nil {
			return nil, err
		}
		out = append(out, convert(it, &fe, i))
	}
	return out, fe.err()
}

// fieldErrors collects the validation problems of a body.
type fieldErrors []api.FieldError

func (fe *fieldErrors) add(msg, typ string, loc ...any) {
	*fe = append(*fe, api.FieldError{Loc: loc, Msg: msg, Type: typ})
}

func (fe *fieldErrors) required(loc ...any) { fe.add("field required", "value_error.missing", loc...) }

func (fe fieldErrors) err() error {
	if len(fe) == 0 {
		return nil
	}
	return api.Invalid(fe...)
}

// notEmpty records a problem when the body's field, given, is empty.
func (fe *fieldErrors) notEmpty(value *string, field string) {
	if value != nil && *value == "" {
		fe.add("ensure this value has at least 1 characters", "value_error.any_str.min_length", "body", field)
	}
}

// resolveKey returns key, or the key derived from name when key is nil, recording a problem
// when the result is not a valid key.
func (fe *fieldErrors) resolveKey(key *string, name string, loc ...any) string {
	k := ""
	if key != nil {
		k = *key
	} else {
		k = keys.FromName(name)
	}
	if msg := keys.Problem(k); msg != "" {
		fe.add(msg, "value_error", append(loc, "key")...)
	}
	return k
}

// page reads ?page= (≥1, default 1) and ?size= (1..100, default 50).
func page(r *http.Request) (int, int, error) {
	q := r.URL.Query()
	var fe fieldErrors
	num := func(name string, def, lo, hi int) int {
		v := q.Get(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			fe.add(fmt.Sprintf("must be a whole number from %d to %d", lo, hi), "value_error.number", "query", name)
			return def
		}
		return n
	}
	p := num("page", 1, 1, 1<<30)
	s := num("size", 50, 1, 100)
	return p, s, fe.err()
}

// slicePage returns the page p of size s of all.
func slicePage[T any](all []T, p, s int) api.Page[T] {
	start := min((p-1)*s, len(all))
	end := min(start+s, len(all))
	return api.NewPage(all[start:end], len(all), p, s)
}

// bulkResult is the answer of a bulk upsert.
type bulkResult[T, D any] struct {
	Succeeded []T             `json:"succeeded"`
	Failed    []failedItem[D] `json:"failed"`
}

// failedItem is an item of a bulk upsert that was not applied: detail of its error, and the item.
type failedItem[D any] struct {
	Message string `json:"message"`
	Data    D      `json:"data"`
}

// newBulkResult returns the answer of a bulk upsert; item splits a failed item of the service into
// the item and its error.
func newBulkResult[T, F, D any](succeeded []T, failed []F, item func(F) (D, error)) bulkResult[T, D] {
	out := bulkResult[T, D]{Succeeded: succeeded, Failed: make([]failedItem[D], 0, len(failed))}
	for _, f := range failed {
		d, err := item(f)
		out.Failed = append(out.Failed, failedItem[D]{Message: detail(err), Data: d})
	}
	return out
}
