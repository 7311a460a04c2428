package httpapi

import (
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// The request list's page size (SPEC §7): fidesops's default and largest.
const (
	defaultPageSize = 50
	maxPageSize     = 100
	// maxQueryValue bounds a query value (SPEC §1: keys are at most 255 characters).
	maxQueryValue = 255
)

// sortFields are the values of sort_field.
var sortFields = map[string]requestlist.Field{
	"created_at":             requestlist.ByCreated,
	"started_processing_at":  requestlist.ByStarted,
	"finished_processing_at": requestlist.ByFinished,
	"updated_at":             requestlist.ByUpdated,
}

// timeFilters are the time filters: a name's _gt and _lt bound the Range dst returns.
var timeFilters = []struct {
	name string
	dst  func(*requestlist.Query) *requestlist.Range
}{
	{"created", func(q *requestlist.Query) *requestlist.Range { return &q.Created }},
	{"started", func(q *requestlist.Query) *requestlist.Range { return &q.Started }},
	{"completed", func(q *requestlist.Query) *requestlist.Range { return &q.Finished }},
}

// listItem is one request of the list: what the list filters and sorts on, and no personal data.
type listItem struct {
	ID                   string       `json:"id"`
	ExternalID           *string      `json:"external_id"`
	PolicyKey            string       `json:"policy_key"`
	Status               event.Status `json:"status"`
	Step                 event.Step   `json:"step"`
	CreatedAt            time.Time    `json:"created_at"`
	UpdatedAt            time.Time    `json:"updated_at"`
	StartedProcessingAt  *time.Time   `json:"started_processing_at"`
	FinishedProcessingAt *time.Time   `json:"finished_processing_at"`
}

// handleList answers the request list (SPEC §7) from the index.
func handleList(x *requestlist.Index) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := decodeListQuery(r.URL.Query())
		if err != nil {
			writeError(w, r, err)
			return
		}
		res, err := x.Query(q)
		if err != nil {
			writeError(w, r, err)
			return
		}
		items := make([]listItem, 0, len(res.Rows))
		for _, row := range res.Rows {
			items = append(items, listItem{ID: row.ID, ExternalID: optional(row.ExternalID),
				PolicyKey: row.PolicyKey, Status: row.Status, Step: row.Step, CreatedAt: row.CreatedAt,
				UpdatedAt: row.UpdatedAt, StartedProcessingAt: row.StartedProcessingAt,
				FinishedProcessingAt: row.FinishedProcessingAt})
		}
		api.WriteJSON(w, http.StatusOK, api.NewPage(items, res.Total, q.Page, q.Size))
	}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// decodeListQuery decodes the list's query strictly: every parameter is known, given once
// (status may repeat), and valid; every problem is reported, each at ["query", name].
func decodeListQuery(v url.Values) (requestlist.Query, error) {
	q := requestlist.Query{Page: 1, Size: defaultPageSize}
	var problems []api.FieldError
	bad := func(name, msg, typ string) {
		problems = append(problems, api.FieldError{Loc: []any{"query", name}, Msg: msg, Type: typ})
	}
	known := []string{"status", "id", "request_id", "external_id", "policy_key", "sort_field", "sort_direction", "page", "size"}
	for _, f := range timeFilters {
		known = append(known, f.name+"_gt", f.name+"_lt")
	}
	for _, name := range sortedKeys(anyValues(v)) {
		switch {
		case !slices.Contains(known, name):
			bad(name, "extra fields not permitted", "value_error.extra")
		case name != "status" && len(v[name]) > 1:
			bad(name, "given more than once", "value_error.repeated")
		}
	}
	for _, s := range v["status"] {
		if !slices.Contains(event.Statuses, event.Status(s)) {
			bad("status", "value is not a valid enumeration member; permitted: "+joinStatuses(), "type_error.enum")
			continue
		}
		if !slices.Contains(q.Statuses, event.Status(s)) {
			q.Statuses = append(q.Statuses, event.Status(s))
		}
	}
	str := func(name string, dst *string) {
		if !v.Has(name) {
			return
		}
		s := v.Get(name)
		if s == "" || len(s) > maxQueryValue {
			bad(name, "ensure this value has 1 to 255 characters", "value_error.any_str")
			return
		}
		*dst = s
	}
	str("id", &q.ID)
	if v.Has("request_id") {
		if v.Has("id") {
			bad("request_id", "give id or request_id (its fidesops name), not both", "value_error")
		} else {
			str("request_id", &q.ID)
		}
	}
	str("external_id", &q.ExternalID)
	str("policy_key", &q.PolicyKey)
	for _, f := range timeFilters {
		rng := f.dst(&q)
		for _, b := range []struct {
			suffix string
			dst    *time.Time
		}{{"_gt", &rng.After}, {"_lt", &rng.Before}} {
			name := f.name + b.suffix
			if !v.Has(name) {
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, v.Get(name))
			if err != nil {
				bad(name, "invalid datetime format (RFC 3339, such as 2026-12-01T00:00:00Z)", "value_error.datetime")
				continue
			}
			*b.dst = t
		}
		if !rng.After.IsZero() && !rng.Before.IsZero() && !rng.After.Before(rng.Before) {
			bad(f.name+"_lt", f.name+"_lt must be after "+f.name+"_gt", "value_error")
		}
	}
	if v.Has("sort_field") {
		f, ok := sortFields[v.Get("sort_field")]
		if !ok {
			bad("sort_field", "value is not a valid enumeration member; permitted: 'created_at', 'started_processing_at', 'finished_processing_at', 'updated_at'", "type_error.enum")
		}
		q.Sort = f
	}
	if v.Has("sort_direction") {
		switch v.Get("sort_direction") {
		case "desc":
		case "asc":
			q.Ascending = true
		default:
			bad("sort_direction", "value is not a valid enumeration member; permitted: 'asc', 'desc'", "type_error.enum")
		}
	}
	integer := func(name string, lo, hi int, dst *int) {
		if !v.Has(name) {
			return
		}
		n, err := strconv.Atoi(v.Get(name))
		if err != nil || n < lo || n > hi {
			bad(name, "ensure this value is a whole number from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi), "value_error.number")
			return
		}
		*dst = n
	}
	integer("page", 1, math.MaxInt32, &q.Page)
	integer("size", 1, maxPageSize, &q.Size)
	if err := invalid(problems); err != nil {
		return requestlist.Query{}, err
	}
	return q, nil
}

func anyValues(v url.Values) map[string]any {
	m := make(map[string]any, len(v))
	for k := range v {
		m[k] = nil
	}
	return m
}

func joinStatuses() string {
	s := ""
	for i, st := range event.Statuses {
		if i > 0 {
			s += ", "
		}
		s += "'" + string(st) + "'"
	}
	return s
}
