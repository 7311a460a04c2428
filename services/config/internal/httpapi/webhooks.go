package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// kindOf reads {kind}; an unknown kind is 404.
func kindOf(r *http.Request) (policy.Kind, error) {
	k, ok := policy.ParseKind(mux.Vars(r)["kind"])
	if !ok {
		return "", api.Errorf(http.StatusNotFound, "Not Found")
	}
	return k, nil
}

func validDirection(d string) bool { return d == string(event.OneWay) || d == string(event.TwoWay) }

const directionMsg = "value is not a valid enumeration member; permitted: 'one_way', 'two_way'"

// listWebhooks is GET /policy/{policy_key}/webhook/{kind}, by order.
func listWebhooks(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, err := kindOf(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		p, s, err := page(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		all, err := svc.Webhooks(r.Context(), mux.Vars(r)["policy_key"], kind)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, slicePage(all, p, s))
	}
}

// getWebhook is GET /policy/{policy_key}/webhook/{kind}/{key}.
func getWebhook(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, err := kindOf(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		v := mux.Vars(r)
		wh, err := svc.Webhook(r.Context(), v["policy_key"], kind, v["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, wh)
	}
}

type webhookItem struct {
	ConnectionConfigKey *string `json:"connection_config_key"`
	Direction           *string `json:"direction"`
	Name                *string `json:"name"`
	Key                 *string `json:"key"`
}

// webhookInput validates one item of PUT /policy/{policy_key}/webhook/{kind}.
func webhookInput(it webhookItem, fe *fieldErrors, i int) policy.WebhookInput {
	var direction event.Direction
	switch {
	case it.Direction == nil:
		fe.required("body", i, "direction")
	case !validDirection(*it.Direction):
		fe.add(directionMsg, "type_error.enum", "body", i, "direction")
	default:
		direction = event.Direction(*it.Direction)
	}
	in := listItem(it.Key, it.Name, it.ConnectionConfigKey, fe, i)
	in.Direction = direction
	return in
}

// listItem validates what the items of every webhook list PUT share, item i: the connection and
// the name are required, a missing key is derived from the name.
func listItem(key, name, connectionKey *string, fe *fieldErrors, i int) policy.WebhookInput {
	var in policy.WebhookInput
	if connectionKey == nil || *connectionKey == "" {
		fe.required("body", i, "connection_config_key")
	} else {
		in.ConnectionKey = *connectionKey
	}
	if name == nil || *name == "" {
		fe.required("body", i, "name")
	} else {
		in.Name = *name
	}
	in.Key = fe.resolveKey(key, in.Name, "body", i)
	return in
}

// replaceWebhooks is PUT /policy/{policy_key}/webhook/{kind}: the whole list, all or nothing.
func replaceWebhooks(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, err := kindOf(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		items, err := decodeItems(r, webhookInput)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out, err := svc.ReplaceWebhooks(r.Context(), mux.Vars(r)["policy_key"], kind, items)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}

type webhookPatch struct {
	Name                *string `json:"name"`
	Direction           *string `json:"direction"`
	ConnectionConfigKey *string `json:"connection_config_key"`
	Order               *int    `json:"order"`
}

// patchWebhook is PATCH /policy/{policy_key}/webhook/{kind}/{key}: strict, key not updatable.
func patchWebhook(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, err := kindOf(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		var body webhookPatch
		if err := api.Decode(r, &body, true); err != nil {
			writeError(w, r, err)
			return
		}
		var fe fieldErrors
		ch := policy.Change{Name: body.Name, ConnectionKey: body.ConnectionConfigKey, Order: body.Order}
		fe.notEmpty(body.Name, "name")
		fe.notEmpty(body.ConnectionConfigKey, "connection_config_key")
		if body.Direction != nil {
			if !validDirection(*body.Direction) {
				fe.add(directionMsg, "type_error.enum", "body", "direction")
			}
			d := event.Direction(*body.Direction)
			ch.Direction = &d
		}
		if err := fe.err(); err != nil {
			writeError(w, r, err)
			return
		}
		v := mux.Vars(r)
		wh, newOrder, err := svc.PatchWebhook(r.Context(), v["policy_key"], kind, v["key"], ch)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"resource": wh, "new_order": newOrder})
	}
}

// deleteWebhook is DELETE /policy/{policy_key}/webhook/{kind}/{key}.
func deleteWebhook(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		kind, err := kindOf(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		v := mux.Vars(r)
		newOrder, err := svc.DeleteWebhook(r.Context(), v["policy_key"], kind, v["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"new_order": newOrder})
	}
}
