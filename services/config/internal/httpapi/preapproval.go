package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// listPreApproval is GET /dsr/webhook/pre_approval, in order.
func listPreApproval(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, s, err := page(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		all, err := svc.PreApprovalWebhooks(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, slicePage(all, p, s))
	}
}

// getPreApproval is GET /dsr/webhook/pre_approval/{key}.
func getPreApproval(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		wh, err := svc.PreApprovalWebhook(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, wh)
	}
}

// preApprovalItem is an item of PUT /dsr/webhook/pre_approval (fides's PreApprovalWebhookCreate).
type preApprovalItem struct {
	Key                 *string `json:"key"`
	Name                *string `json:"name"`
	ConnectionConfigKey *string `json:"connection_config_key"`
}

func preApprovalInput(it preApprovalItem, fe *fieldErrors, i int) policy.WebhookInput {
	return listItem(it.Key, it.Name, it.ConnectionConfigKey, fe, i)
}

// replacePreApproval is PUT /dsr/webhook/pre_approval: the whole list, all or nothing.
func replacePreApproval(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		items, err := decodeItems(r, preApprovalInput)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out, err := svc.ReplacePreApproval(r.Context(), items)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}

// preApprovalPatch is the body of PATCH /dsr/webhook/pre_approval/{key} (fides's
// PreApprovalWebhookUpdate).
type preApprovalPatch struct {
	Name                *string `json:"name"`
	ConnectionConfigKey *string `json:"connection_config_key"`
}

// patchPreApproval is PATCH /dsr/webhook/pre_approval/{key}: strict, key not updatable.
func patchPreApproval(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body preApprovalPatch
		if err := api.Decode(r, &body, true); err != nil {
			writeError(w, r, err)
			return
		}
		var fe fieldErrors
		fe.notEmpty(body.Name, "name")
		fe.notEmpty(body.ConnectionConfigKey, "connection_config_key")
		if err := fe.err(); err != nil {
			writeError(w, r, err)
			return
		}
		wh, err := svc.PatchPreApproval(r.Context(), mux.Vars(r)["key"], body.Name, body.ConnectionConfigKey)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, wh)
	}
}

// deletePreApproval is DELETE /dsr/webhook/pre_approval/{key}: 200 with a null body, as fides
// answers.
func deletePreApproval(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := svc.DeletePreApproval(r.Context(), mux.Vars(r)["key"]); err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, json.RawMessage("null"))
	}
}
