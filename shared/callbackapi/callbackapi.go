// Package callbackapi holds the callback service's public paths (SPEC §7), written once: the
// callback routes them, and the executor builds reply-to URLs from them.
package callbackapi

import (
	"net/url"
	"strings"
)

// Route patterns of the callback service (gorilla/mux syntax, {id} a privacy request id).
const (
	// Resume is where a halting webhook posts its reply-to token.
	Resume = "/api/v1/privacy-request/{id}/resume"
	// LegacyResume is the path fidesops put in reply-to, without /api/v1; still served.
	LegacyResume = "/privacy-request/{id}/resume"
	// PreApproveEligible and PreApproveNotEligible are where a pre-approval webhook posts its
	// reply-to-token (fides's paths).
	PreApproveEligible    = "/api/v1/privacy-request/{id}/pre-approve/eligible"
	PreApproveNotEligible = "/api/v1/privacy-request/{id}/pre-approve/not-eligible"
	// Approve and Deny are an operator's review of a request in the pre-approval stage.
	Approve = "/api/v1/privacy-request/{id}/approve"
	Deny    = "/api/v1/privacy-request/{id}/deny"
	// Retry retries a request in error.
	Retry = "/api/v1/privacy-request/{id}/retry"
	// RetryMatching retries every request in error a filter selects (a scoped retry).
	RetryMatching = "/api/v1/privacy-request/retry"
	// Request reads a request's state and webhook history.
	Request = "/api/v1/privacy-request/{id}"
	// Requests lists the requests, filtered, sorted and paged.
	Requests = "/api/v1/privacy-request"
	// OpenAPI is the service's OpenAPI document.
	OpenAPI = "/api/v1/openapi.json"
)

// ResumePath returns the resume path of request id, escaped for a URL.
func ResumePath(id string) string { return expand(Resume, id) }

// PreApproveEligiblePath returns the eligible reply path of request id, escaped for a URL.
func PreApproveEligiblePath(id string) string { return expand(PreApproveEligible, id) }

// PreApproveNotEligiblePath returns the not-eligible reply path of request id, escaped for a URL.
func PreApproveNotEligiblePath(id string) string { return expand(PreApproveNotEligible, id) }

// RetryPath returns the retry path of request id, escaped for a URL.
func RetryPath(id string) string { return expand(Retry, id) }

// RequestPath returns the path of request id, escaped for a URL.
func RequestPath(id string) string { return expand(Request, id) }

func expand(pattern, id string) string {
	return strings.Replace(pattern, "{id}", url.PathEscape(id), 1)
}
