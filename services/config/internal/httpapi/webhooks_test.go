package httpapi_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/httpapi"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

type orderEntry struct {
	Key   string `json:"key"`
	Order int    `json:"order"`
}

type webhookResource struct {
	ID               string          `json:"id"`
	Key              string          `json:"key"`
	Name             string          `json:"name"`
	Direction        string          `json:"direction"`
	Order            int             `json:"order"`
	ConnectionConfig json.RawMessage `json:"connection_config"`
}

func detail(t *testing.T, b []byte) string {
	t.Helper()
	var d struct {
		Detail any `json:"detail"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("not a {detail} body: %s", b)
	}
	if s, ok := d.Detail.(string); ok {
		return s
	}
	j, _ := json.Marshal(d.Detail)
	return string(j)
}

// forEachRouteFamily runs test once per family of webhook paths (WebhookRouteBases): fidesops's
// /api/v1/policy/... and fides's /api/v1/dsr/policy/..., with the same cases; the test writes
// fidesops's paths and its env sends them to the family's.
func forEachRouteFamily(t *testing.T, test func(t *testing.T, base string)) {
	for _, base := range httpapi.WebhookRouteBases {
		t.Run(strings.TrimPrefix(base, "/"), func(t *testing.T) { test(t, base) })
	}
}

// webhookEnv has policy "p" with pre-execution webhooks a, b, c on https connection "hooks",
// a postgres connection "pg" and a second https connection "other"; its webhook requests go to
// the family of paths below base.
func webhookEnv(t *testing.T, base string) *env {
	e := newEnv(t, envOptions{})
	e.webhookBase = base
	e.https("hooks", "https://example.com/hook", "auth-1")
	e.https("other", "https://example.org/hook", "auth-2")
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Postgres", "key": "pg", "connection_type": "postgres", "access": "write"},
	}, http.StatusOK, nil)
	e.policy("p")
	e.resetHooks("p", "pre_execution", "a", "b", "c")
	return e
}

func (e *env) resetHooks(policyKey, kind string, keys ...string) []webhookResource {
	e.t.Helper()
	items := []any{}
	for _, k := range keys {
		items = append(items, hook(k, "Hook "+strings.ToUpper(k), "one_way", "hooks"))
	}
	var out []webhookResource
	e.call(http.MethodPut, "/api/v1/policy/"+policyKey+"/webhook/"+kind, items, http.StatusOK, &out)
	return out
}

func TestWebhookList(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		var page struct {
			Items []webhookResource `json:"items"`
			Total int               `json:"total"`
			Page  int               `json:"page"`
			Size  int               `json:"size"`
		}
		e.call(http.MethodGet, "/api/v1/policy/p/webhook/pre_execution?page=2&size=2", nil, http.StatusOK, &page)
		if page.Total != 3 || page.Page != 2 || page.Size != 2 || len(page.Items) != 1 || page.Items[0].Key != "c" || page.Items[0].Order != 2 {
			t.Fatalf("page 2 of size 2: got %+v, want total 3, page 2, size 2, items [c at order 2]", page)
		}
		var conn map[string]any
		if err := json.Unmarshal(page.Items[0].ConnectionConfig, &conn); err != nil || conn["key"] != "hooks" || conn["connection_type"] != "https" {
			t.Fatalf("connection_config: got %s, want the hooks connection resource", page.Items[0].ConnectionConfig)
		}
		if _, leaked := conn["secrets"]; leaked {
			t.Fatalf("connection_config carries secrets: %s", page.Items[0].ConnectionConfig)
		}

		tests := []struct {
			name, path string
			status     int
			detail     string
		}{
			{"single", "/api/v1/policy/p/webhook/pre_execution/b", 200, ""},
			{"hyphenated alias", "/api/v1/policy/p/webhook/pre-execution/b", 200, ""},
			{"unknown webhook", "/api/v1/policy/p/webhook/pre_execution/zz", 404, "No Pre-Execution Webhook found for key 'zz' on Policy 'p'."},
			{"unknown post webhook", "/api/v1/policy/p/webhook/post-execution/a", 404, "No Post-Execution Webhook found for key 'a' on Policy 'p'."},
			{"unknown policy list", "/api/v1/policy/nope/webhook/pre_execution", 404, "No Policy found for key nope."},
			{"unknown policy single", "/api/v1/policy/nope/webhook/pre_execution/a", 404, "No Policy found for key nope."},
			{"unknown kind", "/api/v1/policy/p/webhook/during/a", 404, "Not Found"},
			{"bad page size", "/api/v1/policy/p/webhook/pre_execution?size=101", 422, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				status, b, _ := e.raw(http.MethodGet, tc.path, e.root, nil)
				if status != tc.status {
					t.Fatalf("status: got %d, want %d (%s)", status, tc.status, b)
				}
				if tc.detail != "" && detail(t, b) != tc.detail {
					t.Fatalf("detail: got %q, want %q", detail(t, b), tc.detail)
				}
				if tc.status == 200 {
					var w webhookResource
					if err := json.Unmarshal(b, &w); err != nil || w.Key != "b" || w.Order != 1 || w.ID == "" || w.Name != "Hook B" {
						t.Fatalf("got %s, want webhook b at order 1", b)
					}
				}
			})
		}
	})
}

func TestWebhookPutReplaces(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		initial := e.resetHooks("p", "pre_execution", "a", "b", "c")
		ids := map[string]string{}
		for _, w := range initial {
			ids[w.Key] = w.ID
		}
		steps := []struct {
			name string
			keys []string
		}{
			{"create with a new key", []string{"a", "b", "c", "d"}},
			{"reorder", []string{"d", "c", "a", "b"}},
			{"shrink", []string{"c", "a"}},
			{"empty", []string{}},
			{"again", []string{"a"}},
		}
		for _, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				out := e.resetHooks("p", "post-execution", s.keys...)
				got := []string{}
				for i, w := range out {
					got = append(got, w.Key)
					if w.Order != i {
						t.Fatalf("%s has order %d, want %d", w.Key, w.Order, i)
					}
				}
				if !slices.Equal(got, s.keys) {
					t.Fatalf("answer: got %v, want %v", got, s.keys)
				}
				if g := e.orderOf("p", "post_execution"); !slices.Equal(g, s.keys) {
					t.Fatalf("GET after PUT: got %v, want %v", g, s.keys)
				}
			})
		}
		// The pre-execution list was not touched, and its ids are stable across a reordering PUT.
		if g := e.orderOf("p", "pre_execution"); !slices.Equal(g, []string{"a", "b", "c"}) {
			t.Fatalf("pre list: got %v, want [a b c]", g)
		}
		out := e.resetHooks("p", "pre_execution", "c", "a", "b", "x")
		for _, w := range out {
			if id, ok := ids[w.Key]; ok && w.ID != id {
				t.Fatalf("id of %s changed from %s to %s", w.Key, id, w.ID)
			}
		}
		// A key removed and added again gets a new id.
		e.resetHooks("p", "pre_execution", "b")
		again := e.resetHooks("p", "pre_execution", "a", "b")
		if again[0].ID == ids["a"] || again[1].ID != ids["b"] {
			t.Fatalf("ids after remove and re-add: got %s/%s, want new for a and %s for b", again[0].ID, again[1].ID, ids["b"])
		}
	})
}

func TestWebhookPutAllOrNothing(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		good := hook("a", "Hook A", "one_way", "hooks")
		many := []any{}
		for i := range 51 {
			many = append(many, hook(fmt.Sprintf("k%d", i), fmt.Sprintf("N%d", i), "one_way", "hooks"))
		}
		tests := []struct {
			name   string
			policy string
			body   any
			status int
			detail string
		}{
			{"unknown policy", "nope", []any{good}, 404, "No Policy found for key nope."},
			{"unknown connection", "p", []any{good, hook("z", "Z", "one_way", "ghost")}, 404, "No connection configuration found with key 'ghost'."},
			{"non-https connection", "p", []any{good, hook("z", "Z", "one_way", "pg")}, 400, "ConnectionConfig 'pg' is of type postgres: only https connections can back webhooks."},
			{"duplicate key", "p", []any{good, hook("a", "Other", "one_way", "hooks")}, 400, "Check request body: there are multiple webhooks whose keys or names resolve to the same value."},
			{"duplicate name", "p", []any{good, hook("z", "Hook A", "one_way", "hooks")}, 400, "Check request body: there are multiple webhooks whose keys or names resolve to the same value."},
			{"duplicate derived key", "p", []any{
				map[string]any{"name": "Same Name", "direction": "one_way", "connection_config_key": "hooks"},
				map[string]any{"name": "same-name", "direction": "one_way", "connection_config_key": "hooks"},
			}, 400, "Check request body: there are multiple webhooks whose keys or names resolve to the same value."},
			{"bad direction", "p", []any{good, hook("z", "Z", "sideways", "hooks")}, 422, ""},
			{"bad key", "p", []any{good, hook("bad key!", "Z", "one_way", "hooks")}, 422, ""},
			{"missing name", "p", []any{map[string]any{"direction": "one_way", "connection_config_key": "hooks"}}, 422, ""},
			{"unknown field", "p", []any{map[string]any{"key": "z", "name": "Z", "direction": "one_way", "connection_config_key": "hooks", "order": 0}}, 422, ""},
			{"51 items", "p", many, 422, ""},
			{"not a list", "p", map[string]any{"key": "a"}, 422, ""},
			{"malformed JSON", "p", `[{"key": "a",`, 400, ""},
			{"dot-dot key", "p", []any{good, hook("..", "Z", "one_way", "hooks")}, 422, ""},
			{"mis-cased field", "p", `[{"key": "a", "Name": "A", "direction": "one_way", "connection_config_key": "hooks"}]`, 422, ""},
			{"duplicate field", "p", `[{"key": "a", "name": "A", "name": "B", "direction": "one_way", "connection_config_key": "hooks"}]`, 422, ""},
			{"trailing brace", "p", `[{"key": "a", "name": "A", "direction": "one_way", "connection_config_key": "hooks"}]}`, 400, ""},
			{"over 1 MiB", "p", `[{"key": "` + strings.Repeat("a", 1<<20) + `"}]`, 413, ""},
		}
		before := e.snapshot("p")
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				status, b, _ := e.raw(http.MethodPut, "/api/v1/policy/"+tc.policy+"/webhook/pre_execution", e.root, tc.body)
				if status != tc.status {
					t.Fatalf("status: got %d, want %d (%.300s)", status, tc.status, b)
				}
				if tc.detail != "" && detail(t, b) != tc.detail {
					t.Fatalf("detail: got %q, want %q", detail(t, b), tc.detail)
				}
				if after := e.snapshot("p"); after != before {
					t.Fatalf("state changed by a rejected PUT:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	})
}

func TestWebhookPatch(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		type patchAnswer struct {
			Resource webhookResource `json:"resource"`
			NewOrder []orderEntry    `json:"new_order"`
		}
		tests := []struct {
			name      string
			kind, key string
			body      any
			status    int
			detail    string
			wantOrder []string     // the list afterwards (nil: unchanged a, b, c)
			newOrder  []orderEntry // the answer's new_order
			check     func(t *testing.T, w webhookResource)
		}{
			{name: "rename", key: "b", body: map[string]any{"name": "Renamed"}, status: 200, newOrder: []orderEntry{},
				check: func(t *testing.T, w webhookResource) {
					if w.Name != "Renamed" || w.Order != 1 {
						t.Fatalf("got %+v, want b renamed at order 1", w)
					}
				}},
			{name: "direction", key: "a", body: map[string]any{"direction": "two_way"}, status: 200, newOrder: []orderEntry{},
				check: func(t *testing.T, w webhookResource) {
					if w.Direction != "two_way" {
						t.Fatalf("direction: got %s, want two_way", w.Direction)
					}
				}},
			{name: "connection", key: "a", body: map[string]any{"connection_config_key": "other"}, status: 200, newOrder: []orderEntry{},
				check: func(t *testing.T, w webhookResource) {
					if !strings.Contains(string(w.ConnectionConfig), `"key":"other"`) {
						t.Fatalf("connection_config: got %s, want other", w.ConnectionConfig)
					}
				}},
			{name: "reorder down", key: "a", body: map[string]any{"order": 2}, status: 200, wantOrder: []string{"b", "c", "a"},
				newOrder: []orderEntry{{"b", 0}, {"c", 1}, {"a", 2}}},
			{name: "reorder up", key: "c", body: map[string]any{"order": 0, "name": "First"}, status: 200, wantOrder: []string{"c", "a", "b"},
				newOrder: []orderEntry{{"c", 0}, {"a", 1}, {"b", 2}},
				check: func(t *testing.T, w webhookResource) {
					if w.Order != 0 || w.Name != "First" {
						t.Fatalf("got %+v, want c named First at order 0", w)
					}
				}},
			{name: "same order", key: "b", body: map[string]any{"order": 1}, status: 200, newOrder: []orderEntry{}},
			{name: "out of range keeps the rename out too", key: "b", body: map[string]any{"name": "Lost", "order": 3}, status: 400,
				detail: "Cannot set order to 3: there are only 3 PolicyPreWebhook(s) defined on this Policy."},
			{name: "negative order", key: "b", body: map[string]any{"order": -1}, status: 400,
				detail: "Cannot set order to -1: there are only 3 PolicyPreWebhook(s) defined on this Policy."},
			{name: "out of range post", kind: "post_execution", key: "a", body: map[string]any{"order": 5}, status: 400,
				detail: "Cannot set order to 5: there are only 3 PolicyPostWebhook(s) defined on this Policy."},
			{name: "key in body", key: "b", body: map[string]any{"key": "new_key"}, status: 422},
			{name: "unknown field", key: "b", body: map[string]any{"colour": "red"}, status: 422},
			{name: "bad direction", key: "b", body: map[string]any{"direction": "both"}, status: 422},
			{name: "duplicate name", key: "b", body: map[string]any{"name": "Hook A"}, status: 400,
				detail: "Check request body: there are multiple webhooks whose keys or names resolve to the same value."},
			{name: "unknown connection", key: "b", body: map[string]any{"connection_config_key": "ghost"}, status: 404,
				detail: "No connection configuration found with key 'ghost'."},
			{name: "non-https connection", key: "b", body: map[string]any{"connection_config_key": "pg"}, status: 400},
			{name: "unknown webhook", key: "zz", body: map[string]any{"name": "X"}, status: 404,
				detail: "No Pre-Execution Webhook found for key 'zz' on Policy 'p'."},
			{name: "malformed", key: "b", body: `{"name": `, status: 400},
			{name: "mis-cased field", key: "b", body: `{"Order": 0}`, status: 422},
			{name: "duplicate field", key: "b", body: `{"order": 0, "order": 2}`, status: 422},
			{name: "trailing brace", key: "b", body: `{"order": 0}}`, status: 400},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if tc.kind == "" {
					tc.kind = "pre_execution"
				}
				e.resetHooks("p", "pre_execution", "a", "b", "c")
				e.resetHooks("p", "post_execution", "a", "b", "c")
				before := e.snapshot("p")
				status, b, _ := e.raw(http.MethodPatch, "/api/v1/policy/p/webhook/"+tc.kind+"/"+tc.key, e.root, tc.body)
				if status != tc.status {
					t.Fatalf("status: got %d, want %d (%s)", status, tc.status, b)
				}
				if tc.detail != "" && detail(t, b) != tc.detail {
					t.Fatalf("detail: got %q, want %q", detail(t, b), tc.detail)
				}
				if status != 200 {
					if after := e.snapshot("p"); after != before {
						t.Fatalf("state changed by a rejected PATCH:\nbefore %s\nafter  %s", before, after)
					}
					return
				}
				var ans patchAnswer
				if err := json.Unmarshal(b, &ans); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ans.NewOrder, tc.newOrder) {
					t.Fatalf("new_order: got %+v, want %+v", ans.NewOrder, tc.newOrder)
				}
				want := tc.wantOrder
				if want == nil {
					want = []string{"a", "b", "c"}
				}
				if got := e.orderOf("p", tc.kind); !slices.Equal(got, want) {
					t.Fatalf("order afterwards: got %v, want %v", got, want)
				}
				if tc.check != nil {
					tc.check(t, ans.Resource)
				}
			})
		}
	})
}

func TestWebhookDelete(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		tests := []struct {
			name, key string
			status    int
			newOrder  []orderEntry
			remaining []string
		}{
			{"last: nothing moves", "c", 200, []orderEntry{}, []string{"a", "b"}},
			{"first: the others move up", "a", 200, []orderEntry{{"b", 0}, {"c", 1}}, []string{"b", "c"}},
			{"middle", "b", 200, []orderEntry{{"a", 0}, {"c", 1}}, []string{"a", "c"}},
			{"unknown", "zz", 404, nil, []string{"a", "b", "c"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e.resetHooks("p", "pre_execution", "a", "b", "c")
				status, b, _ := e.raw(http.MethodDelete, "/api/v1/policy/p/webhook/pre_execution/"+tc.key, e.root, nil)
				if status != tc.status {
					t.Fatalf("status: got %d, want %d (%s)", status, tc.status, b)
				}
				if status == 200 {
					var ans struct {
						NewOrder []orderEntry `json:"new_order"`
					}
					if err := json.Unmarshal(b, &ans); err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(ans.NewOrder, tc.newOrder) {
						t.Fatalf("new_order: got %+v, want %+v", ans.NewOrder, tc.newOrder)
					}
				}
				if got := e.orderOf("p", "pre_execution"); !slices.Equal(got, tc.remaining) {
					t.Fatalf("remaining: got %v, want %v", got, tc.remaining)
				}
			})
		}
	})
}

// TestSeedGuideExample replays the seed guide: two pre-execution webhooks, then the PATCH that
// makes the first two-way and moves it to order 1.
func TestSeedGuideExample(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := newEnv(t, envOptions{})
		e.webhookBase = base
		e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{{
			"name": "My Webhook Connection Configuration", "key": "test_webhook_connection_config",
			"connection_type": "https", "access": "read",
		}}, http.StatusOK, nil)
		e.call(http.MethodPut, "/api/v1/connection/test_webhook_connection_config/secret?verify=false",
			map[string]any{"url": "https://www.example.com", "authorization": "test_authorization"}, http.StatusOK, nil)
		e.policy("my_policy")
		e.call(http.MethodPut, "/api/v1/policy/my_policy/webhook/pre_execution", []any{
			hook("wake_up_snowflake_db", "Wake up Snowflake DB Webhook", "one_way", "test_webhook_connection_config"),
			hook("prep_systems_webhook", "Prep Systems Webhook", "two_way", "test_webhook_connection_config"),
		}, http.StatusOK, nil)
		var ans struct {
			Resource webhookResource `json:"resource"`
			NewOrder []orderEntry    `json:"new_order"`
		}
		e.call(http.MethodPatch, "/api/v1/policy/my_policy/webhook/pre-execution/wake_up_snowflake_db",
			map[string]any{"direction": "two_way", "order": 1}, http.StatusOK, &ans)
		want := []orderEntry{{"prep_systems_webhook", 0}, {"wake_up_snowflake_db", 1}}
		if !reflect.DeepEqual(ans.NewOrder, want) {
			t.Fatalf("new_order: got %+v, want %+v", ans.NewOrder, want)
		}
		if ans.Resource.Direction != "two_way" || ans.Resource.Order != 1 || ans.Resource.Key != "wake_up_snowflake_db" {
			t.Fatalf("resource: got %+v, want wake_up_snowflake_db two_way at order 1", ans.Resource)
		}
		// The guide also derives keys from names.
		var out []webhookResource
		e.call(http.MethodPut, "/api/v1/policy/my_policy/webhook/post_execution", []any{
			map[string]any{"name": "Poke Snowflake Webhook", "direction": "one_way", "connection_config_key": "test_webhook_connection_config"},
		}, http.StatusOK, &out)
		if len(out) != 1 || out[0].Key != "poke_snowflake_webhook" {
			t.Fatalf("derived key: got %+v, want poke_snowflake_webhook", out)
		}
	})
}

// TestWebhookConcurrentEdits runs many PUTs and reordering PATCHes on one policy at once, then
// many renaming PATCHes: the list stays a gap-free permutation with stable ids, and no rename is
// lost.
func TestWebhookConcurrentEdits(t *testing.T) {
	forEachRouteFamily(t, func(t *testing.T, base string) {
		e := webhookEnv(t, base)
		keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
		initial := e.resetHooks("p", "pre_execution", keys...)
		ids := map[string]string{}
		for _, w := range initial {
			ids[w.Key] = w.ID
		}
		var wg sync.WaitGroup
		errs := make(chan string, 100)
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var status int
				var b []byte
				if i%3 == 0 {
					perm := slices.Clone(keys)
					rand.Shuffle(len(perm), func(x, y int) { perm[x], perm[y] = perm[y], perm[x] })
					items := []any{}
					for _, k := range perm {
						items = append(items, hook(k, "Hook "+strings.ToUpper(k), "one_way", "hooks"))
					}
					status, b, _ = e.raw(http.MethodPut, "/api/v1/policy/p/webhook/pre_execution", e.root, items)
				} else {
					k := keys[rand.IntN(len(keys))]
					status, b, _ = e.raw(http.MethodPatch, "/api/v1/policy/p/webhook/pre_execution/"+k, e.root,
						map[string]any{"order": rand.IntN(len(keys))})
				}
				if status != http.StatusOK {
					errs <- fmt.Sprintf("status %d: %s", status, b)
				}
			}()
		}
		wg.Wait()
		for i, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, b, _ := e.raw(http.MethodPatch, "/api/v1/policy/p/webhook/pre_execution/"+k, e.root,
					map[string]any{"name": "Renamed " + k, "order": (i * 5) % len(keys)})
				if status != http.StatusOK {
					errs <- fmt.Sprintf("rename %s: status %d: %s", k, status, b)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Error(msg)
		}
		var page struct {
			Items []webhookResource `json:"items"`
		}
		e.call(http.MethodGet, "/api/v1/policy/p/webhook/pre_execution?size=100", nil, http.StatusOK, &page)
		got := []string{}
		for i, w := range page.Items {
			if w.Order != i {
				t.Errorf("%s has order %d at position %d", w.Key, w.Order, i)
			}
			if w.ID != ids[w.Key] {
				t.Errorf("id of %s changed: got %s, want %s", w.Key, w.ID, ids[w.Key])
			}
			if w.Name != "Renamed "+w.Key {
				t.Errorf("lost rename of %s: name %q, want %q", w.Key, w.Name, "Renamed "+w.Key)
			}
			got = append(got, w.Key)
		}
		sorted := slices.Sorted(slices.Values(got))
		if !slices.Equal(sorted, keys) {
			t.Fatalf("keys: got %v, want a permutation of %v", got, keys)
		}
		// The published plan shows the same order.
		testkit.Eventually(t, 10*time.Second, "plan with the final order", func() bool {
			p, _, ok := e.plan("p")
			if !ok {
				return false
			}
			pre, _ := p["pre_execution"].([]any)
			if len(pre) != len(got) {
				return false
			}
			for i, w := range pre {
				if w.(map[string]any)["key"] != got[i] {
					return false
				}
			}
			return true
		})
	})
}

// TestFidesWebhookPaths: fides's paths reach the same webhooks as fidesops's (the other tests run
// every case through both; this one asks both paths directly and compares).
func TestFidesWebhookPaths(t *testing.T) {
	e := webhookEnv(t, "")
	for _, tail := range []string{"/p/webhook/pre_execution", "/p/webhook/pre_execution/b", "/p/webhook/pre-execution/b"} {
		s1, b1, _ := e.raw(http.MethodGet, "/api/v1/policy"+tail, e.root, nil)
		s2, b2, _ := e.raw(http.MethodGet, "/api/v1/dsr/policy"+tail, e.root, nil)
		if s1 != http.StatusOK || s2 != s1 || string(b1) != string(b2) {
			t.Errorf("%s: fidesops %d %s, fides %d %s; want the same 200", tail, s1, b1, s2, b2)
		}
	}
	if s, _, _ := e.raw(http.MethodGet, "/api/v1/dsr/policies/p/webhook/pre_execution", e.root, nil); s != http.StatusNotFound {
		t.Errorf("a path of neither family: %d, want 404", s)
	}
}
