// Package httpapi is the REST API of the config service (SPEC §1–§4): every route on one
// mux.Router (Routes), the handlers that decode and validate bodies and call the connection,
// policy and oauth services, and the one function that maps their errors to status codes.
package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Prefix is the path prefix of the API.
const Prefix = "/api/v1"

// Deps are what the routes need.
type Deps struct {
	Log         zerolog.Logger
	Registry    *prometheus.Registry
	OAuth       *oauth.Service
	Auth        *api.Authorizer
	Connections *connection.Service
	Policies    *policy.Service
	Ready       map[string]api.Check
	OpenAPI     []byte
}

// Routes returns the router with every route of the service. It registers the HTTP metrics on
// d.Registry, so it is called once per registry.
func Routes(d Deps) *mux.Router {
	r := api.NewRouter(d.Log, d.Registry, d.Ready)
	r.HandleFunc(Prefix+"/openapi.json", api.Document(d.OpenAPI)).Methods(http.MethodGet)

	need := d.Auth.Require
	handle := func(method, path, scope string, h http.HandlerFunc) {
		r.HandleFunc(Prefix+path, need(scope, h)).Methods(method)
	}

	r.HandleFunc(Prefix+"/oauth/token", issueToken(d.OAuth)).Methods(http.MethodPost)
	handle(http.MethodPost, "/oauth/client", scope.ClientCreate, createClient(d.OAuth))
	handle(http.MethodDelete, "/oauth/client/{client_id}", scope.ClientDelete, deleteClient(d.OAuth))
	handle(http.MethodGet, "/oauth/scope", scope.ScopeRead, listScopes())

	handle(http.MethodPatch, "/connection", scope.ConnectionCreateOrUpdate, upsertConnections(d.Connections))
	handle(http.MethodGet, "/connection", scope.ConnectionRead, listConnections(d.Connections))
	handle(http.MethodGet, "/connection/{key}", scope.ConnectionRead, getConnection(d.Connections))
	handle(http.MethodDelete, "/connection/{key}", scope.ConnectionDelete, deleteConnection(d.Connections))
	handle(http.MethodPut, "/connection/{key}/secret", scope.ConnectionCreateOrUpdate, putSecrets(d.Connections))
	handle(http.MethodGet, "/connection/{key}/signing-key", scope.ConnectionRead, getSigningKey(d.Connections))
	handle(http.MethodGet, "/connection/{key}/health", scope.ConnectionRead, getHealth(d.Connections))
	handle(http.MethodPost, "/connection/{key}/health/close", scope.ConnectionCreateOrUpdate, closeBreaker(d.Connections))
	handle(http.MethodGet, "/connection_health", scope.ConnectionRead, listHealth(d.Connections))

	handle(http.MethodPatch, "/policy", scope.PolicyCreateOrUpdate, upsertPolicies(d.Policies))
	handle(http.MethodGet, "/policy", scope.PolicyRead, listPolicies(d.Policies))
	handle(http.MethodGet, "/policy/{key}", scope.PolicyRead, getPolicy(d.Policies))
	handle(http.MethodDelete, "/policy/{key}", scope.PolicyDelete, deletePolicy(d.Policies))

	for _, base := range WebhookRouteBases {
		handle(http.MethodGet, base+"/{policy_key}/webhook/{kind}", scope.WebhookRead, listWebhooks(d.Policies))
		handle(http.MethodPut, base+"/{policy_key}/webhook/{kind}", scope.WebhookCreateOrUpdate, replaceWebhooks(d.Policies))
		handle(http.MethodGet, base+"/{policy_key}/webhook/{kind}/{key}", scope.WebhookRead, getWebhook(d.Policies))
		handle(http.MethodPatch, base+"/{policy_key}/webhook/{kind}/{key}", scope.WebhookCreateOrUpdate, patchWebhook(d.Policies))
		handle(http.MethodDelete, base+"/{policy_key}/webhook/{kind}/{key}", scope.WebhookDelete, deleteWebhook(d.Policies))
	}

	handle(http.MethodGet, "/dsr/webhook/pre_approval", scope.WebhookRead, listPreApproval(d.Policies))
	handle(http.MethodPut, "/dsr/webhook/pre_approval", scope.WebhookCreateOrUpdate, replacePreApproval(d.Policies))
	handle(http.MethodGet, "/dsr/webhook/pre_approval/{key}", scope.WebhookRead, getPreApproval(d.Policies))
	handle(http.MethodPatch, "/dsr/webhook/pre_approval/{key}", scope.WebhookCreateOrUpdate, patchPreApproval(d.Policies))
	handle(http.MethodDelete, "/dsr/webhook/pre_approval/{key}", scope.WebhookDelete, deletePreApproval(d.Policies))
	return r
}

// WebhookRouteBases are the paths, under Prefix, the policy webhook routes are served below:
// fidesops's, and fides's (its urn_registry puts them under /dsr). Both behave the same.
var WebhookRouteBases = []string{"/policy", "/dsr/policy"}
