package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// API talks to config and callback as a user would.
type API struct {
	ConfigURL, CallbackURL string
	ClientID, ClientSecret string
	client                 *http.Client
	token                  string
}

// NewAPI returns a client of the two REST services.
func NewAPI(configURL, callbackURL, id, secret string) *API {
	return &API{ConfigURL: configURL, CallbackURL: callbackURL, ClientID: id, ClientSecret: secret,
		client: &http.Client{Timeout: 10 * time.Second}}
}

// Token gets an access token with the root client's credentials.
func (a *API) Token(ctx context.Context) error {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {a.ClientID}, "client_secret": {a.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.ConfigURL+"/api/v1/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := a.do(req, http.StatusOK, &out); err != nil {
		return fmt.Errorf("oauth token: %w", err)
	}
	a.token = out.AccessToken
	return nil
}

func (a *API) call(ctx context.Context, method, u string, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token)
	if err := a.do(req, want, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, strings.TrimPrefix(u, a.ConfigURL), err)
	}
	return nil
}

func (a *API) do(req *http.Request, want int, out any) error {
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != want {
		return &StatusError{Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode %.200s: %w", b, err)
		}
	}
	return nil
}

// StatusError is an answer with an unexpected status.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string { return fmt.Sprintf("status %d: %.300s", e.Status, e.Body) }

// Configure creates, through the config API, one https connection per hook (with its URL,
// Authorization and signing secret), the policy and its pre- and post-execution webhooks, and the
// global list of pre-approval webhooks.
func (a *API) Configure(ctx context.Context, r *Receivers) error {
	var conns []map[string]any
	for _, h := range Hooks {
		conns = append(conns, map[string]any{
			"name": "Chaos " + h.Key, "key": "chaos_" + h.Key, "connection_type": "https", "access": "write",
		})
	}
	var bulk struct {
		Failed []json.RawMessage `json:"failed"`
	}
	if err := a.call(ctx, http.MethodPatch, a.ConfigURL+"/api/v1/connection", conns, http.StatusOK, &bulk); err != nil {
		return err
	}
	if len(bulk.Failed) > 0 {
		return fmt.Errorf("PATCH /api/v1/connection: failed items %s", bulk.Failed)
	}
	for _, h := range Hooks {
		secrets := map[string]any{"url": r.URLs[h.Key], "authorization": "Bearer chaos-" + h.Key, "signing_secret": r.Secrets[h.Key]}
		if err := a.call(ctx, http.MethodPut, a.ConfigURL+"/api/v1/connection/chaos_"+h.Key+"/secret?verify=false", secrets, http.StatusOK, nil); err != nil {
			return err
		}
	}
	if err := a.call(ctx, http.MethodPatch, a.ConfigURL+"/api/v1/policy",
		[]map[string]any{{"name": "Chaos policy", "key": PolicyKey}}, http.StatusOK, &bulk); err != nil {
		return err
	}
	if len(bulk.Failed) > 0 {
		return fmt.Errorf("PATCH /api/v1/policy: failed items %s", bulk.Failed)
	}
	for _, list := range []struct {
		typ  event.CallbackType
		path string
	}{
		{event.Pre, "/api/v1/policy/" + PolicyKey + "/webhook/pre_execution"},
		{event.Post, "/api/v1/policy/" + PolicyKey + "/webhook/post_execution"},
		{event.PreApprovalCallback, "/api/v1/dsr/webhook/pre_approval"}, // always two-way: no direction
	} {
		items := []map[string]any{}
		for _, h := range Hooks {
			if h.Type != list.typ {
				continue
			}
			item := map[string]any{"connection_config_key": "chaos_" + h.Key, "name": "Chaos " + h.Key, "key": h.Key}
			if h.Type != event.PreApprovalCallback {
				item["direction"] = h.Direction
			}
			items = append(items, item)
		}
		if err := a.call(ctx, http.MethodPut, a.ConfigURL+list.path, items, http.StatusOK, nil); err != nil {
			return err
		}
	}
	return nil
}

// WaitPlan waits until config published the whole plan (every hook, with secrets, the
// pre-approval stage included) to policy_webhooks.
func WaitPlan(ctx context.Context, js jetstream.JetStream) error {
	var last string
	for {
		if kv, err := js.KeyValue(ctx, event.BucketPlans); err != nil {
			last = err.Error()
		} else if e, err := kv.Get(ctx, event.KVKey(PolicyKey)); err != nil {
			last = err.Error()
		} else {
			var p event.Plan
			if err := json.Unmarshal(e.Value(), &p); err != nil {
				return fmt.Errorf("plan %s: %w", PolicyKey, err)
			}
			all := slices.Concat(p.Pre, p.Post)
			if p.PreApproval != nil {
				all = append(all, p.PreApproval.Webhooks...)
			}
			got := 0
			for _, w := range all {
				if w.Secrets != "" {
					got++
				}
			}
			if got == len(Hooks) && len(all) == len(Hooks) {
				return nil
			}
			last = fmt.Sprintf("plan has %d pre, %d post, %d pre-approval webhooks (stage present: %v), %d with secrets",
				len(p.Pre), len(p.Post), len(all)-len(p.Pre)-len(p.Post), p.PreApproval != nil, got)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plan %s not published: %s", PolicyKey, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Record is a privacy request as GET /api/v1/privacy-request/{id} on callback shows it.
type Record struct {
	ID                   string     `json:"id"`
	Status               string     `json:"status"`
	Step                 string     `json:"step"`
	PausedAt             *time.Time `json:"paused_at"`
	FinishedProcessingAt *time.Time `json:"finished_processing_at"`
	Error                *struct {
		Step       string  `json:"step"`
		WebhookKey *string `json:"webhook_key"`
		Message    string  `json:"message"`
	} `json:"error"`
	Webhooks []RecordWebhook       `json:"webhooks"`
	Timeline []event.TimelineEntry `json:"timeline"`
	Raw      string                `json:"-"`
}

// RecordWebhook is the history of one webhook in a Record; Reply is a pre-approval webhook's
// reply (eligible, not_eligible), empty for the others and while none was recorded.
type RecordWebhook struct {
	Key          string          `json:"key"`
	CallbackType string          `json:"callback_type"`
	Order        int             `json:"order"`
	Outcome      string          `json:"outcome"`
	Reply        string          `json:"reply"`
	Attempts     []RecordAttempt `json:"attempts"`
}

// RecordAttempt is one recorded call of a webhook.
type RecordAttempt struct {
	At        time.Time `json:"at"`
	WebhookID string    `json:"webhook_id"`
	Status    *int      `json:"status"`
	Error     *string   `json:"error"`
}

// Terminal reports whether the request will not change any more without an operator.
func (r *Record) Terminal() bool { return r.Status == "complete" || r.Status == "error" }

// List reads the whole request list from callback (GET /api/v1/privacy-request), a page of 100
// after another, and returns each listed request's status by id. It gets a new token once on 401
// or 403.
func (a *API) List(ctx context.Context) (map[string]string, error) {
	listed := map[string]string{}
	renewed := false
	for page := 1; ; page++ {
		var out struct {
			Items []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"items"`
			Pages int `json:"pages"`
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("%s/api/v1/privacy-request?size=100&sort_direction=asc&page=%d", a.CallbackURL, page), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		err = a.do(req, http.StatusOK, &out)
		var se *StatusError
		if errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) && !renewed {
			if err := a.Token(ctx); err != nil {
				return nil, err
			}
			renewed = true
			page--
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list page %d: %w", page, err)
		}
		for _, it := range out.Items {
			listed[it.ID] = it.Status
		}
		if page >= out.Pages {
			return listed, nil
		}
	}
}

// ErrNoRecord is a 404 from GET: callback does not know the request.
var ErrNoRecord = errors.New("no record")

// Get reads request id from callback; a 404 is ErrNoRecord. It gets a new token once on 401/403.
func (a *API) Get(ctx context.Context, id string) (*Record, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.CallbackURL+"/api/v1/privacy-request/"+id, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		var raw json.RawMessage
		err = a.do(req, http.StatusOK, &raw)
		var se *StatusError
		switch {
		case err == nil:
			rec := &Record{Raw: string(raw)}
			if err := json.Unmarshal(raw, rec); err != nil {
				return nil, err
			}
			return rec, nil
		case errors.As(err, &se) && se.Status == http.StatusNotFound:
			return nil, ErrNoRecord
		case errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) && attempt == 0:
			if terr := a.Token(ctx); terr != nil {
				return nil, terr
			}
		default:
			return nil, err
		}
	}
}
