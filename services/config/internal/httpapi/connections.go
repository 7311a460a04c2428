package httpapi

import (
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

type connectionItem struct {
	Name           *string `json:"name"`
	Key            *string `json:"key"`
	ConnectionType *string `json:"connection_type"`
	Access         *string `json:"access"`
	Disabled       *bool   `json:"disabled"`
	Description    *string `json:"description"`
}

// connectionInput validates one item of PATCH /connection.
func connectionInput(it connectionItem, fe *fieldErrors, i int) connection.Input {
	in := connection.Input{Description: it.Description}
	if it.Name == nil || *it.Name == "" {
		fe.required("body", i, "name")
	} else {
		in.Name = *it.Name
	}
	in.Key = fe.resolveKey(it.Key, in.Name, "body", i)
	switch {
	case it.ConnectionType == nil:
		fe.required("body", i, "connection_type")
	case !connection.ValidType(connection.Type(*it.ConnectionType)):
		fe.add(fmt.Sprintf("value is not a valid enumeration member; permitted: %v", connection.Types),
			"type_error.enum", "body", i, "connection_type")
	default:
		in.Type = connection.Type(*it.ConnectionType)
	}
	switch {
	case it.Access == nil:
		fe.required("body", i, "access")
	case *it.Access != connection.AccessRead && *it.Access != connection.AccessWrite:
		fe.add("value is not a valid enumeration member; permitted: 'read', 'write'", "type_error.enum", "body", i, "access")
	default:
		in.Access = *it.Access
	}
	if it.Disabled != nil {
		in.Disabled = *it.Disabled
	}
	return in
}

// upsertConnections is PATCH /connection: strict items; a secrets field is an unknown field.
func upsertConnections(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inputs, err := decodeItems(r, connectionInput)
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
			func(f connection.Failed) (connection.Input, error) { return f.Data, f.Err }))
	}
}

// listConnections is GET /connection.
func listConnections(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, s, err := page(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		q := r.URL.Query()
		f := connection.Filter{Search: q.Get("search")}
		var fe fieldErrors
		for _, t := range q["connection_type"] {
			if !connection.ValidType(connection.Type(t)) {
				fe.add("value is not a valid enumeration member", "type_error.enum", "query", "connection_type")
				continue
			}
			f.Types = append(f.Types, connection.Type(t))
		}
		switch v := q.Get("disabled"); v {
		case "":
		case "true", "false":
			b := v == "true"
			f.Disabled = &b
		default:
			fe.add("value could not be parsed to a boolean", "type_error.bool", "query", "disabled")
		}
		if err := fe.err(); err != nil {
			writeError(w, r, err)
			return
		}
		items, total, err := svc.List(r.Context(), f, (p-1)*s, s)
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, api.NewPage(items, total, p, s))
	}
}

// getConnection is GET /connection/{key}.
func getConnection(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := svc.Get(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, c)
	}
}

// deleteConnection is DELETE /connection/{key}.
func deleteConnection(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := svc.Delete(r.Context(), mux.Vars(r)["key"]); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

type secretsBody struct {
	URL           *string           `json:"url"`
	Authorization *string           `json:"authorization"`
	Headers       map[string]string `json:"headers"`
	SigningSecret *string           `json:"signing_secret"`
	OAuth2        *event.OAuth2     `json:"oauth2"`
	// The rotation and Ed25519 fields (signing.go); the untils are RFC 3339 times.
	SigningSecretPrevious      *string `json:"signing_secret_previous"`
	SigningSecretPreviousUntil *string `json:"signing_secret_previous_until"`
	SigningKey                 *string `json:"signing_key"`
	SigningKeyPrevious         *string `json:"signing_key_previous"`
	SigningKeyPreviousUntil    *string `json:"signing_key_previous_until"`
	// ClientCertificate and ClientKey are the PEM client certificate chain and private key of
	// mutual TLS, given together (checked by the connection service).
	ClientCertificate *string `json:"client_certificate"`
	ClientKey         *string `json:"client_key"`
}

// putSecrets is PUT /connection/{key}/secret?verify=: strict https secrets (oauth2 and a client
// certificate included), sealed at rest, optionally verified by a TLS handshake. The body is never
// logged or echoed.
func putSecrets(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := mux.Vars(r)["key"]
		verify := true
		switch v := r.URL.Query().Get("verify"); v {
		case "", "true", "True", "1":
		case "false", "False", "0":
			verify = false
		default:
			writeError(w, r, api.InvalidField("value could not be parsed to a boolean", "type_error.bool", "query", "verify"))
			return
		}
		var body secretsBody
		if err := api.Decode(r, &body, true); err != nil {
			writeError(w, r, err)
			return
		}
		var fe fieldErrors
		if body.URL == nil || *body.URL == "" {
			fe.required("body", "url")
		}
		// The Authorization header of the calls comes from authorization or, with oauth2, from
		// the token obtained with its credentials.
		if body.OAuth2 == nil && (body.Authorization == nil || *body.Authorization == "") {
			fe.required("body", "authorization")
		}
		if o := body.OAuth2; o != nil {
			for _, f := range []struct{ name, value string }{
				{"token_url", o.TokenURL}, {"client_id", o.ClientID}, {"client_secret", o.ClientSecret},
			} {
				if f.value == "" {
					fe.required("body", "oauth2", f.name)
				}
			}
		}
		if err := fe.err(); err != nil {
			writeError(w, r, err)
			return
		}
		sec := event.HTTPSSecrets{URL: *body.URL, Headers: body.Headers, OAuth2: body.OAuth2}
		if body.Authorization != nil {
			sec.Authorization = *body.Authorization
		}
		if body.SigningSecret != nil {
			sec.SigningSecret = *body.SigningSecret
		}
		if err := body.setSigning(&sec); err != nil {
			writeError(w, r, err)
			return
		}
		if body.ClientCertificate != nil {
			sec.ClientCertificate = *body.ClientCertificate
		}
		if body.ClientKey != nil {
			sec.ClientKey = *body.ClientKey
		}
		res, err := svc.SetSecrets(r.Context(), key, sec, verify)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := map[string]any{"msg": fmt.Sprintf("Secrets updated for ConnectionConfig with key: %s.", key),
			"test_status": nil, "failure_reason": nil}
		if res != nil {
			out["test_status"] = "succeeded"
			if !res.Succeeded {
				out["test_status"] = "failed"
				out["failure_reason"] = res.Reason
			}
		}
		api.WriteJSON(w, http.StatusOK, out)
	}
}
