package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

func (e *env) planOf(key string) (event.Plan, bool) {
	e.t.Helper()
	_, raw, ok := e.plan(key)
	if !ok {
		return event.Plan{}, false
	}
	var p event.Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		e.t.Fatal(err)
	}
	return p, true
}

func TestPlanView(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.https("shared", "https://example.com/a", "auth-PLAN-1")
	e.https("solo", "https://example.org/b", "auth-PLAN-2")
	e.policy("p1")
	e.policy("p2")
	e.policy("p3")

	t.Run("a webhook change shows up", func(t *testing.T) {
		before, _ := e.planOf("p1")
		e.call(http.MethodPut, "/api/v1/policy/p1/webhook/pre_execution", []any{
			hook("a", "A", "one_way", "shared"), hook("b", "B", "two_way", "solo"),
		}, 200, nil)
		p, ok := e.planOf("p1")
		if !ok || len(p.Pre) != 2 || p.Pre[0].Key != "a" || p.Pre[1].Key != "b" || p.Pre[1].Order != 1 ||
			p.Pre[1].Direction != event.TwoWay || p.Pre[0].ConnectionKey != "shared" || p.Pre[0].Secrets == "" || p.Version <= before.Version {
			t.Fatalf("plan: got %+v (before version %d)", p, before.Version)
		}
		e.call(http.MethodPatch, "/api/v1/policy/p1/webhook/pre_execution/b", map[string]any{"order": 0}, 200, nil)
		if p, _ := e.planOf("p1"); p.Pre[0].Key != "b" || p.Pre[0].Order != 0 {
			t.Fatalf("after reorder: got %+v, want b first", p.Pre)
		}
	})

	t.Run("a secret change updates every policy using the connection", func(t *testing.T) {
		e.call(http.MethodPut, "/api/v1/policy/p2/webhook/post_execution", []any{hook("c", "C", "one_way", "shared")}, 200, nil)
		e.call(http.MethodPut, "/api/v1/policy/p3/webhook/pre_execution", []any{hook("d", "D", "one_way", "solo")}, 200, nil)
		p3Before, _ := e.planOf("p3")
		e.call(http.MethodPut, "/api/v1/connection/shared/secret?verify=false",
			map[string]any{"url": "https://example.net/new", "authorization": "auth-PLAN-3"}, 200, nil)
		sealed := e.storedSecrets("shared")
		p1, _ := e.planOf("p1")
		p2, _ := e.planOf("p2")
		if p1.Pre[1].Secrets != sealed || p2.Post[0].Secrets != sealed || p1.Pre[1].URL != "https://example.net" {
			t.Fatalf("plans after the secret change: p1 %+v, p2 %+v, want the new sealed value", p1.Pre, p2.Post)
		}
		if p3, _ := e.planOf("p3"); p3.Pre[0].Secrets != p3Before.Pre[0].Secrets {
			t.Fatal("p3 does not use the connection but its plan changed")
		}
	})

	t.Run("disabling a connection re-publishes", func(t *testing.T) {
		e.call(http.MethodPatch, "/api/v1/connection", []map[string]any{
			{"name": "Connection solo", "key": "solo", "connection_type": "https", "access": "read", "disabled": true},
		}, 200, nil)
		if p, _ := e.planOf("p3"); !p.Pre[0].ConnectionDisabled {
			t.Fatalf("plan: got %+v, want connection_disabled", p.Pre[0])
		}
	})

	t.Run("a deleted KV entry heals on the next re-publish", func(t *testing.T) {
		want, _ := e.planOf("p2")
		if err := e.plansKV.Delete(context.Background(), "p2"); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.planOf("p2"); ok {
			t.Fatal("entry still there after the delete")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.pub.Run(ctx, 20*time.Millisecond)
		}()
		defer func() { cancel(); <-done }()
		testkit.Eventually(t, 10*time.Second, "the periodic re-publish to restore p2", func() bool {
			p, ok := e.planOf("p2")
			return ok && p.Version == want.Version && len(p.Post) == 1 && p.Post[0].ID == want.Post[0].ID
		})
	})

	t.Run("plans of deleted policies go away", func(t *testing.T) {
		e.call(http.MethodDelete, "/api/v1/policy/p3", nil, http.StatusNoContent, nil)
		if _, ok := e.planOf("p3"); ok {
			t.Fatal("plan of a deleted policy is still there")
		}
		// A stale entry (as after a crash between the MongoDB delete and the KV delete).
		if _, err := e.plansKV.Put(context.Background(), "stale", []byte(`{"policy_key":"stale"}`)); err != nil {
			t.Fatal(err)
		}
		if err := e.pub.Republish(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.planOf("stale"); ok {
			t.Fatal("re-publish kept the plan of a policy that does not exist")
		}
	})

	t.Run("no plaintext secret in KV", func(t *testing.T) {
		lister, err := e.plansKV.ListKeys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range lister.Keys() {
			_, raw, _ := e.plan(k)
			n++
			for _, s := range []string{"auth-PLAN-1", "auth-PLAN-2", "auth-PLAN-3"} {
				if strings.Contains(string(raw), s) {
					t.Errorf("plan %s holds %q", k, s)
				}
			}
		}
		if n < 2 {
			t.Fatalf("checked %d plans, want at least 2", n)
		}
	})
}

func TestPolicies(t *testing.T) {
	e := newEnv(t, envOptions{})
	var ans struct {
		Succeeded []map[string]any `json:"succeeded"`
		Failed    []struct {
			Message string         `json:"message"`
			Data    map[string]any `json:"data"`
		} `json:"failed"`
	}
	e.call(http.MethodPatch, "/api/v1/policy", []map[string]any{
		{"name": "Erase Everything", "drp_action": "deletion", "execution_timeframe": 45},
		{"name": "Access", "key": "access_policy"},
	}, 200, &ans)
	if len(ans.Succeeded) != 2 || ans.Succeeded[0]["key"] != "erase_everything" || ans.Succeeded[0]["execution_timeframe"] != float64(45) {
		t.Fatalf("create: got %+v", ans)
	}
	e.call(http.MethodPatch, "/api/v1/policy", []map[string]any{
		{"name": "Access", "key": "other"}, {"name": "Access v2", "key": "access_policy"},
	}, 200, &ans)
	if len(ans.Failed) != 1 || !strings.HasPrefix(ans.Failed[0].Message, "Key other already exists in Policy.") ||
		len(ans.Succeeded) != 1 || ans.Succeeded[0]["name"] != "Access v2" {
		t.Fatalf("update and conflict: got %+v", ans)
	}
	var page struct {
		Items []map[string]any `json:"items"`
		Total int              `json:"total"`
		Page  int              `json:"page"`
		Size  int              `json:"size"`
	}
	e.call(http.MethodGet, "/api/v1/policy?size=1", nil, 200, &page)
	if page.Total != 2 || page.Size != 1 || page.Page != 1 || len(page.Items) != 1 {
		t.Fatalf("page: got %+v", page)
	}
	status, b, _ := e.raw(http.MethodGet, "/api/v1/policy/nope", e.root, nil)
	if status != 404 || detail(t, b) != "No Policy found for key nope." {
		t.Fatalf("unknown: got %d %s", status, b)
	}
	for _, body := range []any{
		[]map[string]any{{"name": "X", "drp_action": "destroy"}},
		[]map[string]any{{"name": "X", "execution_timeframe": 0}},
		[]map[string]any{{"name": "X", "rules": []any{}}},
		[]map[string]any{{"key": "x"}},
	} {
		if status, b, _ := e.raw(http.MethodPatch, "/api/v1/policy", e.root, body); status != 422 {
			t.Fatalf("%v: got %d %s, want 422", body, status, b)
		}
	}
	e.call(http.MethodDelete, "/api/v1/policy/access_policy", nil, http.StatusNoContent, nil)
	e.call(http.MethodDelete, "/api/v1/policy/access_policy", nil, http.StatusNotFound, nil)
	e.call(http.MethodGet, "/api/v1/policy/access_policy/webhook/pre_execution", nil, http.StatusNotFound, nil)
}
