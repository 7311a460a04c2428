package httpapi_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/policyhooks/policyhooks/shared/event"
)

const preApprovalPath = "/api/v1/dsr/webhook/pre_approval"

// preApprovalResource is fides's PreApprovalWebhookResponse.
type preApprovalResource struct {
	Key              string          `json:"key"`
	Name             string          `json:"name"`
	ConnectionConfig json.RawMessage `json:"connection_config"`
}

// preApprovalEnv has https connections "hooks" and "other", a postgres connection "pg", policies
// p1 and p2, and the pre-approval webhooks a, b, c on "hooks".
func preApprovalEnv(t *testing.T, opt envOptions) *env {
	e := newEnv(t, opt)
	e.https("hooks", "https://example.com/hook", "auth-PRE-1")
	e.https("other", "https://example.org/hook", "auth-PRE-2")
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Postgres", "key": "pg", "connection_type": "postgres", "access": "write"},
	}, http.StatusOK, nil)
	e.policy("p1")
	e.policy("p2")
	e.resetPreApproval("a", "b", "c")
	return e
}

// preHook is an item of the pre-approval PUT.
func preHook(key, name, conn string) map[string]any {
	return map[string]any{"key": key, "name": name, "connection_config_key": conn}
}

func (e *env) resetPreApproval(keys ...string) []preApprovalResource {
	e.t.Helper()
	items := []any{}
	for _, k := range keys {
		items = append(items, preHook(k, "Hook "+strings.ToUpper(k), "hooks"))
	}
	var out []preApprovalResource
	e.call(http.MethodPut, preApprovalPath, items, http.StatusOK, &out)
	return out
}

// preApprovalKeys returns the keys of the pre-approval webhooks in order, as GET shows them.
func (e *env) preApprovalKeys() []string {
	e.t.Helper()
	var page struct {
		Items []preApprovalResource `json:"items"`
	}
	e.call(http.MethodGet, preApprovalPath+"?size=100", nil, http.StatusOK, &page)
	keys := []string{}
	for _, it := range page.Items {
		keys = append(keys, it.Key)
	}
	return keys
}

// planStage returns the pre-approval stage of policy key's plan as stored, and the stored JSON.
func (e *env) planStage(key string) (*event.PreApproval, string) {
	e.t.Helper()
	p, ok := e.planOf(key)
	if !ok {
		e.t.Fatalf("no plan for %s", key)
	}
	_, raw, _ := e.plan(key)
	return p.PreApproval, string(raw)
}

// stageWebhooks returns the pre-approval webhooks of policy key's plan, failing unless there is a
// stage with n of them.
func (e *env) stageWebhooks(key string, n int) []event.PlanWebhook {
	e.t.Helper()
	stage, raw := e.planStage(key)
	if stage == nil || len(stage.Webhooks) != n {
		e.t.Fatalf("plan of %s: %s, want a pre-approval stage with %d webhooks", key, raw, n)
	}
	return stage.Webhooks
}

func TestPreApprovalList(t *testing.T) {
	e := preApprovalEnv(t, envOptions{})
	var page struct {
		Items []map[string]json.RawMessage `json:"items"`
		Total int                          `json:"total"`
		Page  int                          `json:"page"`
		Size  int                          `json:"size"`
	}
	e.call(http.MethodGet, preApprovalPath+"?page=2&size=2", nil, http.StatusOK, &page)
	if page.Total != 3 || page.Page != 2 || page.Size != 2 || len(page.Items) != 1 || string(page.Items[0]["key"]) != `"c"` {
		t.Fatalf("page 2 of size 2: got %+v, want total 3, page 2, size 2, items [c]", page)
	}
	fields := []string{}
	for k := range page.Items[0] {
		fields = append(fields, k)
	}
	if slices.Sort(fields); !slices.Equal(fields, []string{"connection_config", "key", "name"}) {
		t.Fatalf("resource fields: got %v, want fides's connection_config, key, name", fields)
	}
	var conn map[string]any
	if err := json.Unmarshal(page.Items[0]["connection_config"], &conn); err != nil || conn["key"] != "hooks" || conn["connection_type"] != "https" {
		t.Fatalf("connection_config: got %s, want the hooks connection resource", page.Items[0]["connection_config"])
	}
	if _, leaked := conn["secrets"]; leaked {
		t.Fatalf("connection_config carries secrets: %s", page.Items[0]["connection_config"])
	}

	tests := []struct {
		name, path string
		status     int
		detail     string
	}{
		{"single", preApprovalPath + "/b", 200, ""},
		{"unknown webhook", preApprovalPath + "/zz", 404, "No PreApprovalWebhook found for key zz."},
		{"bad page size", preApprovalPath + "?size=101", 422, ""},
		{"bad page", preApprovalPath + "?page=0", 422, ""},
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
				var w preApprovalResource
				if err := json.Unmarshal(b, &w); err != nil || w.Key != "b" || w.Name != "Hook B" || !strings.Contains(string(w.ConnectionConfig), `"key":"hooks"`) {
					t.Fatalf("got %s, want webhook b on hooks", b)
				}
			}
		})
	}
}

func TestPreApprovalPutReplaces(t *testing.T) {
	e := preApprovalEnv(t, envOptions{preApproval: true})
	ids := map[string]string{}
	stage, _ := e.planStage("p1")
	for _, w := range stage.Webhooks {
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
		{"again", []string{"b"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			out := e.resetPreApproval(s.keys...)
			got := []string{}
			for _, w := range out {
				got = append(got, w.Key)
			}
			if !slices.Equal(got, s.keys) {
				t.Fatalf("answer: got %v, want %v", got, s.keys)
			}
			if g := e.preApprovalKeys(); !slices.Equal(g, s.keys) {
				t.Fatalf("GET after PUT: got %v, want %v", g, s.keys)
			}
			stage, _ := e.planStage("p2")
			planKeys := []string{}
			for _, w := range stage.Webhooks {
				planKeys = append(planKeys, w.Key)
				if id, ok := ids[w.Key]; ok && s.name != "again" && w.ID != id {
					t.Fatalf("id of %s changed from %s to %s", w.Key, id, w.ID)
				}
				ids[w.Key] = w.ID
			}
			if !slices.Equal(planKeys, s.keys) {
				t.Fatalf("plan of p2: got %v, want %v", planKeys, s.keys)
			}
		})
	}
	// A key removed and added again gets a new id; one kept keeps its id.
	before := e.stageWebhooks("p1", 1)
	e.resetPreApproval("b", "a")
	after := e.stageWebhooks("p1", 2)
	if after[0].ID != before[0].ID || after[1].ID == ids["a"] || after[1].ID == "" {
		t.Fatalf("ids: got %+v, want b's kept (%s) and a new one for a", after, before[0].ID)
	}
	// The key is derived from the name when missing.
	var out []preApprovalResource
	e.call(http.MethodPut, preApprovalPath, []any{map[string]any{"name": "Ask Legal Webhook", "connection_config_key": "other"}}, 200, &out)
	if len(out) != 1 || out[0].Key != "ask_legal_webhook" {
		t.Fatalf("derived key: got %+v, want ask_legal_webhook", out)
	}
}

// TestPreApprovalRejected sends every bad PUT, PATCH and DELETE: each gets its error and changes
// neither the list nor the plans.
func TestPreApprovalRejected(t *testing.T) {
	e := preApprovalEnv(t, envOptions{preApproval: true})
	good := preHook("a", "Hook A", "hooks")
	many := []any{}
	for i := range 51 {
		many = append(many, preHook("k"+strings.Repeat("x", i), "N"+strings.Repeat("x", i), "hooks"))
	}
	const dup = "Check request body: there are multiple webhooks whose keys or names resolve to the same value."
	tests := []struct {
		name, method, key string
		body              any
		status            int
		detail            string
	}{
		{"unknown connection", http.MethodPut, "", []any{good, preHook("z", "Z", "ghost")}, 404, "No connection configuration found with key 'ghost'."},
		{"non-https connection", http.MethodPut, "", []any{good, preHook("z", "Z", "pg")}, 400, "ConnectionConfig 'pg' is of type postgres: only https connections can back webhooks."},
		{"duplicate key", http.MethodPut, "", []any{good, preHook("a", "Other", "hooks")}, 400, dup},
		{"duplicate name", http.MethodPut, "", []any{good, preHook("z", "Hook A", "hooks")}, 400, dup},
		{"duplicate derived key", http.MethodPut, "", []any{
			map[string]any{"name": "Same Name", "connection_config_key": "hooks"},
			map[string]any{"name": "same-name", "connection_config_key": "hooks"},
		}, 400, dup},
		{"bad key", http.MethodPut, "", []any{good, preHook("bad key!", "Z", "hooks")}, 422, ""},
		{"dot-dot key", http.MethodPut, "", []any{good, preHook("..", "Z", "hooks")}, 422, ""},
		{"name without a usable character", http.MethodPut, "", []any{map[string]any{"name": "!!!", "connection_config_key": "hooks"}}, 422, ""},
		{"missing name", http.MethodPut, "", []any{map[string]any{"key": "z", "connection_config_key": "hooks"}}, 422, ""},
		{"missing connection", http.MethodPut, "", []any{map[string]any{"key": "z", "name": "Z"}}, 422, ""},
		{"direction is not a field", http.MethodPut, "", []any{map[string]any{"key": "z", "name": "Z", "connection_config_key": "hooks", "direction": "two_way"}}, 422, ""},
		{"unknown field", http.MethodPut, "", []any{map[string]any{"key": "z", "name": "Z", "connection_config_key": "hooks", "order": 0}}, 422, ""},
		{"mis-cased field", http.MethodPut, "", `[{"key": "z", "Name": "Z", "connection_config_key": "hooks"}]`, 422, ""},
		{"repeated field", http.MethodPut, "", `[{"key": "z", "name": "Z", "name": "Y", "connection_config_key": "hooks"}]`, 422, ""},
		{"51 items", http.MethodPut, "", many, 422, ""},
		{"not a list", http.MethodPut, "", map[string]any{"key": "a"}, 422, ""},
		{"malformed JSON", http.MethodPut, "", `[{"key": "a",`, 400, ""},
		{"trailing brace", http.MethodPut, "", `[{"key": "z", "name": "Z", "connection_config_key": "hooks"}]}`, 400, ""},
		{"over 1 MiB", http.MethodPut, "", `[{"key": "` + strings.Repeat("a", 1<<20) + `"}]`, 413, ""},

		{"patch unknown webhook", http.MethodPatch, "zz", map[string]any{"name": "X"}, 404, "No PreApprovalWebhook found for key zz."},
		{"patch unknown connection", http.MethodPatch, "b", map[string]any{"connection_config_key": "ghost"}, 404, "No connection configuration found with key 'ghost'."},
		{"patch non-https connection", http.MethodPatch, "b", map[string]any{"connection_config_key": "pg"}, 400, "ConnectionConfig 'pg' is of type postgres: only https connections can back webhooks."},
		{"patch duplicate name", http.MethodPatch, "b", map[string]any{"name": "Hook A"}, 400, dup},
		{"patch key", http.MethodPatch, "b", map[string]any{"key": "new_key"}, 422, ""},
		{"patch order", http.MethodPatch, "b", map[string]any{"order": 0}, 422, ""},
		{"patch direction", http.MethodPatch, "b", map[string]any{"direction": "one_way"}, 422, ""},
		{"patch empty name", http.MethodPatch, "b", map[string]any{"name": ""}, 422, ""},
		{"patch empty connection", http.MethodPatch, "b", map[string]any{"connection_config_key": ""}, 422, ""},
		{"patch mis-cased field", http.MethodPatch, "b", `{"Name": "X"}`, 422, ""},
		{"patch repeated field", http.MethodPatch, "b", `{"name": "X", "name": "Y"}`, 422, ""},
		{"patch malformed", http.MethodPatch, "b", `{"name": `, 400, ""},
		{"patch trailing brace", http.MethodPatch, "b", `{"name": "X"}}`, 400, ""},
		{"patch over 1 MiB", http.MethodPatch, "b", `{"name": "` + strings.Repeat("a", 1<<20) + `"}`, 413, ""},

		{"delete unknown webhook", http.MethodDelete, "zz", nil, 404, "No PreApprovalWebhook found for key zz."},
	}
	list := string(e.call(http.MethodGet, preApprovalPath+"?size=100", nil, http.StatusOK, nil))
	_, plan1 := e.planStage("p1")
	if !strings.Contains(plan1, `"key":"a"`) {
		t.Fatalf("plan of p1 before: %s, want the pre-approval webhooks", plan1)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := preApprovalPath
			if tc.key != "" {
				path += "/" + tc.key
			}
			status, b, _ := e.raw(tc.method, path, e.root, tc.body)
			if status != tc.status {
				t.Fatalf("status: got %d, want %d (%.300s)", status, tc.status, b)
			}
			if tc.detail != "" && detail(t, b) != tc.detail {
				t.Fatalf("detail: got %q, want %q", detail(t, b), tc.detail)
			}
			if after := string(e.call(http.MethodGet, preApprovalPath+"?size=100", nil, http.StatusOK, nil)); after != list {
				t.Fatalf("list changed by a rejected request:\nbefore %s\nafter  %s", list, after)
			}
			if _, after := e.planStage("p1"); after != plan1 {
				t.Fatalf("plan changed by a rejected request:\nbefore %s\nafter  %s", plan1, after)
			}
		})
	}
}

func TestPreApprovalPatchAndDelete(t *testing.T) {
	e := preApprovalEnv(t, envOptions{preApproval: true})
	var w preApprovalResource
	e.call(http.MethodPatch, preApprovalPath+"/b", map[string]any{"name": "Renamed"}, http.StatusOK, &w)
	if w.Key != "b" || w.Name != "Renamed" || !strings.Contains(string(w.ConnectionConfig), `"key":"hooks"`) {
		t.Fatalf("rename: got %+v, want b named Renamed on hooks", w)
	}
	before := e.stageWebhooks("p1", 3)
	e.call(http.MethodPatch, preApprovalPath+"/b", map[string]any{"connection_config_key": "other"}, http.StatusOK, &w)
	if w.Name != "Renamed" || !strings.Contains(string(w.ConnectionConfig), `"key":"other"`) {
		t.Fatalf("connection: got %+v, want b still Renamed, on other", w)
	}
	if g := e.preApprovalKeys(); !slices.Equal(g, []string{"a", "b", "c"}) {
		t.Fatalf("order after PATCH: got %v, want [a b c]", g)
	}
	b := e.stageWebhooks("p1", 3)[1]
	if b.Key != "b" || b.Name != "Renamed" || b.ConnectionKey != "other" || b.Secrets != e.storedSecrets("other") ||
		b.URL != "https://example.org" || b.ID != before[1].ID || b.Order != 1 {
		t.Fatalf("plan after PATCH: got %+v, want b renamed on other with its id %s", b, before[1].ID)
	}

	status, body, _ := e.raw(http.MethodDelete, preApprovalPath+"/a", e.root, nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "null" {
		t.Fatalf("delete: got %d %s, want 200 null", status, body)
	}
	if g := e.preApprovalKeys(); !slices.Equal(g, []string{"b", "c"}) {
		t.Fatalf("after DELETE: got %v, want [b c]", g)
	}
	e.call(http.MethodGet, preApprovalPath+"/a", nil, http.StatusNotFound, nil)
	if ws := e.stageWebhooks("p2", 2); ws[0].Key != "b" || ws[0].Order != 0 || ws[1].Key != "c" || ws[1].Order != 1 {
		t.Fatalf("plan after DELETE: got %+v, want b at 0 and c at 1", ws)
	}
}

// TestPreApprovalPlans follows the plans in the bucket: with PRE_APPROVAL every plan carries the
// pre-approval webhooks (two-way, in order, with their connection's sealed secrets and state),
// follows a change of a connection they use, and carries an empty list when there is none; without
// it no plan carries a stage; a restart with the other setting adds or removes the stage, and a
// lost entry heals with its stage.
func TestPreApprovalPlans(t *testing.T) {
	e := preApprovalEnv(t, envOptions{preApproval: true})
	e.call(http.MethodPut, "/api/v1/policy/p1/webhook/pre_execution", []any{hook("own", "Own", "one_way", "other")}, 200, nil)
	e.call(http.MethodPut, preApprovalPath, []any{preHook("a", "Hook A", "hooks"), preHook("b", "Hook B", "other")}, 200, nil)

	sealedHooks, sealedOther := e.storedSecrets("hooks"), e.storedSecrets("other")
	for _, key := range []string{"p1", "p2"} {
		stage, raw := e.planStage(key)
		if stage == nil || len(stage.Webhooks) != 2 {
			t.Fatalf("plan of %s: %s, want two pre-approval webhooks", key, raw)
		}
		for i, want := range []event.PlanWebhook{
			{Key: "a", Name: "Hook A", Direction: event.TwoWay, Order: 0, ConnectionKey: "hooks", URL: "https://example.com", Secrets: sealedHooks},
			{Key: "b", Name: "Hook B", Direction: event.TwoWay, Order: 1, ConnectionKey: "other", URL: "https://example.org", Secrets: sealedOther},
		} {
			got := stage.Webhooks[i]
			if got.ID == "" {
				t.Fatalf("plan of %s: webhook %s has no id", key, got.Key)
			}
			want.ID = got.ID
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("plan of %s, webhook %d: got %+v, want %+v", key, i, got, want)
			}
		}
		if strings.Contains(raw, "auth-PRE-") {
			t.Fatalf("plan of %s holds a plaintext secret: %s", key, raw)
		}
	}
	if p, _ := e.planOf("p1"); len(p.Pre) != 1 || p.Pre[0].Key != "own" {
		t.Fatalf("p1's own webhooks: got %+v, want own", p.Pre)
	}

	t.Run("a secret change of a connection they use", func(t *testing.T) {
		e.call(http.MethodPut, "/api/v1/connection/hooks/secret?verify=false",
			map[string]any{"url": "https://example.net/new", "authorization": "auth-PRE-3"}, 200, nil)
		sealed := e.storedSecrets("hooks")
		if sealed == sealedHooks {
			t.Fatal("the sealed secrets did not change")
		}
		for _, key := range []string{"p1", "p2"} {
			if a := e.stageWebhooks(key, 2)[0]; a.Secrets != sealed || a.URL != "https://example.net" {
				t.Fatalf("plan of %s: got %+v, want the new sealed secrets and https://example.net", key, a)
			}
		}
	})

	t.Run("disabling a connection they use", func(t *testing.T) {
		e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
			{"name": "Connection hooks", "key": "hooks", "connection_type": "https", "access": "read", "disabled": true},
		}, 200, nil)
		if ws := e.stageWebhooks("p2", 2); !ws[0].ConnectionDisabled || ws[1].ConnectionDisabled {
			t.Fatalf("plan of p2: got %+v, want a's connection disabled, b's not", ws)
		}
	})

	t.Run("a lost entry heals with its stage", func(t *testing.T) {
		want, _ := e.planStage("p2")
		if err := e.plansKV.Delete(t.Context(), "p2"); err != nil {
			t.Fatal(err)
		}
		if err := e.pub.Republish(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, _ := e.planStage("p2"); !reflect.DeepEqual(got, want) {
			t.Fatalf("healed stage: got %+v, want %+v", got, want)
		}
	})

	t.Run("PRE_APPROVAL false", func(t *testing.T) {
		off := newEnv(t, envOptions{db: e.db, nats: e.nats})
		for _, key := range []string{"p1", "p2"} {
			if stage, raw := off.planStage(key); stage != nil || strings.Contains(raw, "pre_approval") {
				t.Fatalf("plan of %s: %s, want no pre-approval stage", key, raw)
			}
		}
		// The webhooks stay configured and editable; the plans stay without a stage.
		off.call(http.MethodDelete, preApprovalPath+"/a", nil, http.StatusOK, nil)
		if g := off.preApprovalKeys(); !slices.Equal(g, []string{"b"}) {
			t.Fatalf("list: got %v, want [b]", g)
		}
		if stage, raw := off.planStage("p1"); stage != nil {
			t.Fatalf("plan of p1 after an edit: %s, want no stage", raw)
		}
	})

	t.Run("PRE_APPROVAL true again", func(t *testing.T) {
		on := newEnv(t, envOptions{db: e.db, nats: e.nats, preApproval: true})
		if stage, raw := on.planStage("p1"); stage == nil || len(stage.Webhooks) != 1 || stage.Webhooks[0].Key != "b" {
			t.Fatalf("plan of p1 at start: %s, want the stage with b", raw)
		}
		on.call(http.MethodPut, preApprovalPath, []any{}, http.StatusOK, nil)
		for _, key := range []string{"p1", "p2"} {
			stage, raw := on.planStage(key)
			if stage == nil || stage.Webhooks == nil || len(stage.Webhooks) != 0 || !strings.Contains(raw, `"pre_approval":{"webhooks":[]}`) {
				t.Fatalf("plan of %s without pre-approval webhooks: %s, want an empty list", key, raw)
			}
		}
	})
}

// TestPreApprovalClaimsConnections (D21): a connection a pre-approval webhook uses can be neither
// deleted nor changed to another type; once no webhook uses it, it can.
func TestPreApprovalClaimsConnections(t *testing.T) {
	e := preApprovalEnv(t, envOptions{})
	e.call(http.MethodPut, preApprovalPath, []any{preHook("a", "Hook A", "hooks"), preHook("b", "Hook B", "other")}, 200, nil)
	status, b, _ := e.raw(http.MethodDelete, "/api/v1/connection/other", e.root, nil)
	if want := "Cannot delete ConnectionConfig 'other': it is used by the webhook(s) pre_approval.b. Remove them first."; status != http.StatusConflict || detail(t, b) != want {
		t.Fatalf("delete in use: got %d %s, want 409 %q", status, b, want)
	}
	var ans bulkAnswer
	e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
		{"name": "Connection other", "key": "other", "connection_type": "postgres", "access": "read"},
	}, http.StatusOK, &ans)
	if len(ans.Failed) != 1 || !strings.Contains(ans.Failed[0].Message, "pre_approval.b and must stay of type https") {
		t.Fatalf("type change in use: got %+v, want it failed naming pre_approval.b", ans)
	}
	e.call(http.MethodGet, "/api/v1/connection/other", nil, http.StatusOK, nil)

	e.call(http.MethodPatch, preApprovalPath+"/b", map[string]any{"connection_config_key": "hooks"}, http.StatusOK, nil)
	e.call(http.MethodDelete, "/api/v1/connection/other", nil, http.StatusNoContent, nil)
	e.call(http.MethodDelete, preApprovalPath+"/a", nil, http.StatusOK, nil)
	e.call(http.MethodDelete, "/api/v1/connection/hooks", nil, http.StatusConflict, nil)
	e.call(http.MethodPut, preApprovalPath, []any{}, http.StatusOK, nil)
	e.call(http.MethodDelete, "/api/v1/connection/hooks", nil, http.StatusNoContent, nil)
}

// TestPreApprovalScopes: each route takes its webhook scope and no other.
func TestPreApprovalScopes(t *testing.T) {
	e := preApprovalEnv(t, envOptions{})
	tokens := map[string]string{}
	for _, s := range []string{"webhook:read", "webhook:create_or_update", "webhook:delete", "policy:create_or_update"} {
		_, _, tokens[s] = e.client(s)
	}
	tests := []struct {
		method, path string
		body         any
		scope        string
		status       int
	}{
		{http.MethodGet, preApprovalPath, nil, "webhook:read", 200},
		{http.MethodGet, preApprovalPath + "/a", nil, "webhook:read", 200},
		{http.MethodPut, preApprovalPath, []any{preHook("a", "Hook A", "hooks"), preHook("b", "Hook B", "hooks")}, "webhook:create_or_update", 200},
		{http.MethodPatch, preApprovalPath + "/a", map[string]any{"name": "A2"}, "webhook:create_or_update", 200},
		{http.MethodDelete, preApprovalPath + "/b", nil, "webhook:delete", 200},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			for s, tok := range tokens {
				if s == tc.scope {
					continue
				}
				if status, b, _ := e.raw(tc.method, tc.path, tok, tc.body); status != http.StatusForbidden {
					t.Fatalf("with %s: got %d %s, want 403", s, status, b)
				}
			}
			if status, b, _ := e.raw(tc.method, tc.path, tokens[tc.scope], tc.body); status != tc.status {
				t.Fatalf("with %s: got %d %s, want %d", tc.scope, status, b, tc.status)
			}
		})
	}
}
