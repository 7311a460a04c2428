// Package httpapi is the REST face of the callback service (SPEC §7): the routes, their handlers,
// the decoding of their bodies and the one mapping from domain errors to HTTP answers.
package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/callback/internal/requestlist"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/callbackapi"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Deps are what the routes need.
type Deps struct {
	Log      zerolog.Logger
	Registry *prometheus.Registry
	Resume   *resume.Service
	// List is the request list's index.
	List *requestlist.Index
	// Auth checks OAuth access tokens for approve, deny, retry and GET.
	Auth    *api.Authorizer
	Ready   map[string]api.Check
	OpenAPI []byte
}

// NewRouter returns every route of the service on one router, behind the shared middleware. It
// registers the service's metrics on d.Registry.
func NewRouter(d Deps) *mux.Router {
	m := newMetrics(d.Registry)
	r := api.NewRouter(d.Log, d.Registry, d.Ready)
	r.HandleFunc(callbackapi.OpenAPI, api.Document(d.OpenAPI)).Methods(http.MethodGet)

	resumeH := handleResume(d.Resume, m)
	r.HandleFunc(callbackapi.Resume, resumeH).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.LegacyResume, resumeH).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.PreApproveEligible, handlePreApproval(d.Resume, m, true)).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.PreApproveNotEligible, handlePreApproval(d.Resume, m, false)).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.Approve, d.Auth.Require(scope.PrivacyRequestReview, handleReview(d.Resume, m, true))).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.Deny, d.Auth.Require(scope.PrivacyRequestReview, handleReview(d.Resume, m, false))).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.Retry, d.Auth.Require(scope.PrivacyRequestResume, handleRetry(d.Resume, m))).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.RetryMatching, d.Auth.Require(scope.PrivacyRequestResume, handleRetryMatching(d.Resume, m))).Methods(http.MethodPost)
	r.HandleFunc(callbackapi.Request, d.Auth.Require(scope.PrivacyRequestRead, handleGet(d.Resume))).Methods(http.MethodGet)
	r.HandleFunc(callbackapi.Requests, d.Auth.Require(scope.PrivacyRequestRead, handleList(d.List))).Methods(http.MethodGet)
	return r
}
