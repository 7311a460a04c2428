package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/callback/internal/oauthclients"
	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// waitListed waits until the list's index holds n rows.
func (f *fixture) waitListed(n int) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f.list.Ready() || f.list.Len() != n {
		if time.Now().After(deadline) {
			f.t.Fatalf("the request list holds %d rows (ready %v), want %d", f.list.Len(), f.list.Ready(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// list GETs the list with query and returns its page.
func (f *fixture) listPage(auth, query string) (api.Page[listItem], *httptest.ResponseRecorder) {
	f.t.Helper()
	w := f.do(http.MethodGet, "/api/v1/privacy-request?"+query, auth, "")
	var p api.Page[listItem]
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			f.t.Fatal(err)
		}
	}
	return p, w
}

func idsOf(p api.Page[listItem]) []string {
	ids := []string{}
	for _, it := range p.Items {
		ids = append(ids, it.ID)
	}
	return ids
}

// listed is a request for the list: policy, status, and created minutes after t0; started a
// second later unless pending, finished a minute later when complete or in error.
func listed(id, policy string, status event.Status, minute int) event.Request {
	created := t0.Add(time.Duration(minute) * time.Minute)
	req := event.Request{ID: id, PolicyKey: policy, ExternalID: "ext-" + id, Status: status, Step: event.StepPreWebhooks,
		CreatedAt: created, UpdatedAt: created.Add(2 * time.Second)}
	if status != event.StatusPending {
		started := created.Add(time.Second)
		req.StartedProcessingAt = &started
	}
	if status == event.StatusComplete || status == event.StatusError {
		finished := created.Add(time.Minute)
		req.FinishedProcessingAt = &finished
		req.Step = event.StepPostWebhooks
	}
	return req
}

// TestList: the list filters, sorts and pages the records of privacy_requests as the watch
// delivers them, and follows their changes and removals.
func TestList(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	for _, r := range []event.Request{
		listed("pri_a", "p1", event.StatusComplete, 0),
		listed("pri_b", "p1", event.StatusPaused, 1),
		listed("pri_c", "p2", event.StatusError, 2),
		listed("pri_d", "p2", event.StatusPending, 3),
		listed("pri:e.1", "p1", event.StatusError, 4),
	} {
		f.putStored(r)
	}
	f.waitListed(5)

	tests := []struct {
		query string
		want  []string
		total int
	}{
		{"", []string{"pri:e.1", "pri_d", "pri_c", "pri_b", "pri_a"}, 5},
		{"sort_direction=asc", []string{"pri_a", "pri_b", "pri_c", "pri_d", "pri:e.1"}, 5},
		{"status=error", []string{"pri:e.1", "pri_c"}, 2},
		{"status=error&status=paused", []string{"pri:e.1", "pri_c", "pri_b"}, 3},
		{"status=error&status=error", []string{"pri:e.1", "pri_c"}, 2},
		{"policy_key=p2", []string{"pri_d", "pri_c"}, 2},
		{"policy_key=nope", []string{}, 0},
		{"id=pri:e.1", []string{"pri:e.1"}, 1},
		{"request_id=pri_b", []string{"pri_b"}, 1},
		{"id=pri_zz", []string{}, 0},
		{"external_id=ext-pri_c", []string{"pri_c"}, 1},
		{"created_gt=2025-03-01T12:01:00Z", []string{"pri:e.1", "pri_d", "pri_c"}, 3},
		{"created_gt=2025-03-01T12:00:30Z&created_lt=2025-03-01T12:03:00Z", []string{"pri_c", "pri_b"}, 2},
		{"started_gt=2025-03-01T12:00:00Z&started_lt=2025-03-01T12:02:30Z", []string{"pri_c", "pri_b", "pri_a"}, 3},
		{"completed_lt=2025-03-01T12:04:00Z", []string{"pri_c", "pri_a"}, 2},
		{"sort_field=finished_processing_at", []string{"pri:e.1", "pri_c", "pri_a", "pri_b", "pri_d"}, 5},
		{"sort_field=started_processing_at&sort_direction=asc", []string{"pri_a", "pri_b", "pri_c", "pri:e.1", "pri_d"}, 5},
		{"sort_field=updated_at&size=2", []string{"pri:e.1", "pri_d"}, 5},
		{"size=2&page=2", []string{"pri_c", "pri_b"}, 5},
		{"size=2&page=3", []string{"pri_a"}, 5},
		{"size=2&page=4", []string{}, 5},
		{"status=error&policy_key=p1&created_lt=2026-01-01T00:00:00%2B01:00", []string{"pri:e.1"}, 1},
	}
	for _, tt := range tests {
		p, w := f.listPage(auth, tt.query)
		if w.Code != http.StatusOK {
			t.Errorf("?%s: got %d %s, want 200", tt.query, w.Code, w.Body)
			continue
		}
		if !slices.Equal(idsOf(p), tt.want) || p.Total != tt.total {
			t.Errorf("?%s: got %v of %d, want %v of %d", tt.query, idsOf(p), p.Total, tt.want, tt.total)
		}
	}

	// The page's shape: fidesops's, and nothing else of a record (no plan, no identity).
	w := f.do(http.MethodGet, "/api/v1/privacy-request?size=2&page=1&status=error", auth, "")
	var raw map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if raw["total"] != 2.0 || raw["page"] != 1.0 || raw["size"] != 2.0 || raw["pages"] != 1.0 {
		t.Errorf("page fields: %s", w.Body)
	}
	item := raw["items"].([]any)[1].(map[string]any)
	var keys []string
	for k := range item {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"created_at", "external_id", "finished_processing_at", "id", "policy_key", "started_processing_at", "status", "step", "updated_at"}; !slices.Equal(keys, want) {
		t.Errorf("item keys %v, want %v", keys, want)
	}
	if item["id"] != "pri_c" || item["external_id"] != "ext-pri_c" || item["status"] != "error" || item["step"] != "post_webhooks" ||
		item["created_at"] != "2025-03-01T12:02:00Z" || item["finished_processing_at"] != "2025-03-01T12:03:00Z" {
		t.Errorf("item: %v", item)
	}

	// Changes and removals follow: pri_b is resumed and completes, pri_d goes.
	f.putStored(listed("pri_b", "p1", event.StatusComplete, 1))
	if err := f.requests.Delete(context.Background(), "pri_d"); err != nil {
		t.Fatal(err)
	}
	f.waitListed(4)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, _ := f.listPage(auth, "status=complete")
		if slices.Equal(idsOf(p), []string{"pri_b", "pri_a"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status=complete after pri_b completed: %v", idsOf(p))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p, _ := f.listPage(auth, "status=paused"); len(p.Items) != 0 {
		t.Errorf("status=paused after pri_b completed: %v", idsOf(p))
	}
}

// problems returns a 422 answer's items as "loc.loc: msg" lines.
func problems(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var lines []string
	items, _ := detail(t, w).([]any)
	for _, item := range items {
		m, _ := item.(map[string]any)
		var loc []string
		for _, l := range m["loc"].([]any) {
			loc = append(loc, fmt.Sprint(l))
		}
		lines = append(lines, strings.Join(loc, ".")+": "+fmt.Sprint(m["msg"]))
	}
	return strings.Join(lines, "\n")
}

// TestListRejects: a query the list does not know, or cannot read, is answered 422 naming every
// problem, and nothing is listed.
func TestListRejects(t *testing.T) {
	f := newFixture(t)
	auth := bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))
	f.waitListed(0)
	long := strings.Repeat("x", 256)
	tests := []struct {
		query string
		want  string // the summary of the detail
	}{
		{"Status=error", "query.Status: extra fields not permitted"},
		{"include_identities=true", "query.include_identities: extra fields not permitted"},
		{"status=erorr", "query.status: value is not a valid enumeration member"},
		{"status=", "query.status: value is not a valid enumeration member"},
		{"page=0", "query.page: ensure this value is a whole number from 1 to 2147483647"},
		{"page=1&page=2", "query.page: given more than once"},
		{"size=101", "query.size: ensure this value is a whole number from 1 to 100"},
		{"size=ten", "query.size: ensure this value is a whole number from 1 to 100"},
		{"created_gt=yesterday", "query.created_gt: invalid datetime format"},
		{"completed_gt=2025-03-01T12:00:00Z&completed_lt=2025-03-01T12:00:00Z", "query.completed_lt: completed_lt must be after completed_gt"},
		{"sort_field=status", "query.sort_field: value is not a valid enumeration member"},
		{"sort_direction=DESC", "query.sort_direction: value is not a valid enumeration member"},
		{"id=" + long, "query.id: ensure this value has 1 to 255 characters"},
		{"external_id=", "query.external_id: ensure this value has 1 to 255 characters"},
		{"id=pri_a&request_id=pri_a", "query.request_id: give id or request_id"},
	}
	for _, tt := range tests {
		_, w := f.listPage(auth, tt.query)
		if w.Code != http.StatusUnprocessableEntity || !strings.Contains(problems(t, w), tt.want) {
			t.Errorf("?%s: got %d %s, want 422 with %q", tt.query, w.Code, w.Body, tt.want)
		}
	}
	// Every problem is named at once.
	_, w := f.listPage(auth, "size=0&sort_direction=up&nope=1")
	if s := problems(t, w); w.Code != 422 || !strings.Contains(s, "query.size") || !strings.Contains(s, "query.sort_direction") || !strings.Contains(s, "query.nope") {
		t.Errorf("three problems: got %d %s", w.Code, w.Body)
	}

	// The scope and the token.
	if _, w := f.listPage("", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("no token: got %d, want 401", w.Code)
	}
	if _, w := f.listPage(bearer(f.accessToken(rootClientID, scope.PrivacyRequestResume)), ""); w.Code != http.StatusForbidden {
		t.Errorf("without privacy-request:read: got %d, want 403", w.Code)
	}
}

// TestListLoading: until its index has read the bucket whole, a replica answers the list 503 with
// Retry-After, and the other routes as usual: a request is read and resumed.
func TestListLoading(t *testing.T) {
	f := newFixture(t)
	router := NewRouter(Deps{Log: zerolog.Nop(), Registry: prometheus.NewRegistry(), Resume: f.svc, List: requestlist.New(),
		Auth: api.NewAuthorizer(f.access, oauthclients.New(f.clients, rootClientID)), Ready: map[string]api.Check{}, OpenAPI: []byte(`{}`)})
	r := httptest.NewRequest(http.MethodGet, "/api/v1/privacy-request?status=error", nil)
	r.Header.Set("Authorization", bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead)))
	w := httptest.NewRecorder()
	router.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
		!strings.Contains(fmt.Sprint(detail(t, w)), "The request list is loading") {
		t.Errorf("loading: got %d %q %s, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}

	req := pausedRequest("pri_loading", 1)
	f.putRequest(req)
	serve := func(method, path, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(`{}`))
		r.Header.Set("Authorization", auth)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		router.ServeHTTP(w, r)
		return w
	}
	if w := serve(http.MethodGet, "/api/v1/privacy-request/pri_loading", bearer(f.accessToken(rootClientID, scope.PrivacyRequestRead))); w.Code != 200 ||
		!strings.Contains(w.Body.String(), `"paused"`) {
		t.Errorf("read while the list loads: %d %s, want 200 paused", w.Code, w.Body)
	}
	raw, jti := f.replyToken(req.ID, req.PausedWebhookID, 1)
	if w := serve(http.MethodPost, resumePath(req.ID), bearer(raw)); w.Code != 200 {
		t.Errorf("resume while the list loads: %d %s, want 200", w.Code, w.Body)
	}
	if got := len(f.resumesOf(jti)); got != 1 {
		t.Errorf("resumes published while the list loads: %d, want 1", got)
	}
}
