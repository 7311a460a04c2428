package httpapi

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

type policyItem struct {
	Name               *string `json:"name"`
	Key                *string `json:"key"`
	DRPAction          *string `json:"drp_action"`
	ExecutionTimeframe *int    `json:"execution_timeframe"`
}

// policyInput validates one item of PATCH /policy.
func policyInput(it policyItem, fe *fieldErrors, i int) policy.Input {
	in := policy.Input{DRPAction: it.DRPAction, ExecutionTimeframe: it.ExecutionTimeframe}
	if it.Name == nil || *it.Name == "" {
		fe.required("body", i, "name")
	} else {
		in.Name = *it.Name
	}
	in.Key = fe.resolveKey(it.Key, in.Name, "body", i)
	if it.DRPAction != nil && !slices.Contains(policy.DRPActions, *it.DRPAction) {
		fe.add(fmt.Sprintf("value is not a valid enumeration member; permitted: %v", policy.DRPActions),
			"type_error.enum", "body", i, "drp_action")
	}
	if it.ExecutionTimeframe != nil && *it.ExecutionTimeframe < 1 {
		fe.add("ensure this value is greater than 0", "value_error.number.not_gt", "body", i, "execution_timeframe")
	}
	return in
}

// upsertPolicies is PATCH /policy.
func upsertPolicies(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inputs, err := decodeItems(r, policyInput)
		if err != nil {
			writeError(w, r, err)
			return
		}
		ok, failed, err := svc.Upsert(r.Context(), inputs)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, newBulkResult(ok, failed,
			func(f policy.Failed) (policy.Input, error) { return f.Data, f.Err }))
	}
}

// listPolicies is GET /policy, newest first.
func listPolicies(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, s, err := page(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		items, total, err := svc.List(r.Context(), (p-1)*s, s)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, api.NewPage(items, total, p, s))
	}
}

// getPolicy is GET /policy/{key}.
func getPolicy(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := svc.Get(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, p)
	}
}

// deletePolicy is DELETE /policy/{key}.
func deletePolicy(svc *policy.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Delete(r.Context(), mux.Vars(r)["key"]); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
