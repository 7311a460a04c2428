package httpapi

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	resumes      *prometheus.CounterVec
	preApprovals *prometheus.CounterVec
	reviews      *prometheus.CounterVec
	retries      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_resume_total", Help: "Resume calls by answered status code.",
		}, []string{"code"}),
		preApprovals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_pre_approval_reply_total", Help: "Pre-approval replies by reply (eligible, not_eligible) and answered status code.",
		}, []string{"reply", "code"}),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_review_total", Help: "Approvals and denials that reached the handler, by decision (approve, deny) and answered status code.",
		}, []string{"decision", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_retry_total", Help: "Retry calls that reached the handler, by scope (request: one by id; matching: every request in error a filter selects) and answered status code.",
		}, []string{"scope", "code"}),
	}
	reg.MustRegister(m.resumes, m.preApprovals, m.reviews, m.retries)
	return m
}

// handleResume checks the reply-to-token, then the body, and only then resumes: a refused token
// or a bad body changes nothing.
func handleResume(svc *resume.Service, m *metrics) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code := serveResume(w, r, svc)
		m.resumes.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

func serveResume(w http.ResponseWriter, r *http.Request, svc *resume.Service) int {
	id := mux.Vars(r)["id"]
	raw, _ := api.BearerToken(r)
	ticket, err := svc.Check(r.Context(), id, raw)
	if err != nil {
		return writeError(w, r, err)
	}
	b, err := api.ReadBody(r)
	if err != nil {
		return writeError(w, r, err)
	}
	derived, err := decodeResumeBody(b)
	if err != nil {
		return writeError(w, r, err)
	}
	view, err := svc.Resume(r.Context(), ticket, derived)
	if err != nil {
		return writeError(w, r, err)
	}
	api.WriteJSON(w, http.StatusOK, view)
	return http.StatusOK
}

// handlePreApproval answers a pre-approval webhook's reply, eligible or not, at its reply-to URL:
// it checks the token, then the body (empty or {}), and only then publishes the reply.
func handlePreApproval(svc *resume.Service, m *metrics, eligible bool) http.HandlerFunc {
	label := string(event.ReplyNotEligible)
	if eligible {
		label = string(event.ReplyEligible)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		code := servePreApproval(w, r, svc, eligible)
		m.preApprovals.WithLabelValues(label, strconv.Itoa(code)).Inc()
	}
}

func servePreApproval(w http.ResponseWriter, r *http.Request, svc *resume.Service, eligible bool) int {
	raw, _ := api.BearerToken(r)
	ticket, err := svc.CheckPreApproval(r.Context(), mux.Vars(r)["id"], raw)
	if err != nil {
		return writeError(w, r, err)
	}
	b, err := api.ReadBody(r)
	if err != nil {
		return writeError(w, r, err)
	}
	if err := decodeEmptyBody(b); err != nil {
		return writeError(w, r, err)
	}
	view, err := svc.Reply(r.Context(), ticket, eligible)
	if err != nil {
		return writeError(w, r, err)
	}
	api.WriteJSON(w, http.StatusOK, view)
	return http.StatusOK
}

// handleReview answers an operator's approval (approve) or denial: it checks the body (empty or {},
// and a denial's optional reason) before it reads the request.
func handleReview(svc *resume.Service, m *metrics, approve bool) http.HandlerFunc {
	label := "deny"
	if approve {
		label = "approve"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		code := serveReview(w, r, svc, approve)
		m.reviews.WithLabelValues(label, strconv.Itoa(code)).Inc()
	}
}

func serveReview(w http.ResponseWriter, r *http.Request, svc *resume.Service, approve bool) int {
	b, err := api.ReadBody(r)
	if err != nil {
		return writeError(w, r, err)
	}
	var reason string
	if approve {
		err = decodeEmptyBody(b)
	} else {
		reason, err = decodeDenyBody(b)
	}
	if err != nil {
		return writeError(w, r, err)
	}
	view, err := svc.Review(r.Context(), mux.Vars(r)["id"], approve, reason)
	if err != nil {
		return writeError(w, r, err)
	}
	api.WriteJSON(w, http.StatusOK, view)
	return http.StatusOK
}

func handleRetry(svc *resume.Service, m *metrics) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusOK
		view, err := svc.Retry(r.Context(), mux.Vars(r)["id"])
		if err != nil {
			code = writeError(w, r, err)
		} else {
			api.WriteJSON(w, http.StatusOK, view)
		}
		m.retries.WithLabelValues("request", strconv.Itoa(code)).Inc()
	}
}

// handleRetryMatching is the scoped retry: every request in error the body's filter selects.
func handleRetryMatching(svc *resume.Service, m *metrics) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code := serveRetryMatching(w, r, svc)
		m.retries.WithLabelValues("matching", strconv.Itoa(code)).Inc()
	}
}

func serveRetryMatching(w http.ResponseWriter, r *http.Request, svc *resume.Service) int {
	b, err := api.ReadBody(r)
	if err != nil {
		return writeError(w, r, err)
	}
	f, err := decodeReplayBody(b)
	if err != nil {
		return writeError(w, r, err)
	}
	out, err := svc.RetryMatching(r.Context(), f)
	if err != nil {
		return writeError(w, r, err)
	}
	api.WriteJSON(w, http.StatusOK, out)
	return http.StatusOK
}

func handleGet(svc *resume.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		view, err := svc.Get(r.Context(), mux.Vars(r)["id"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, view)
	}
}
