package httpapi

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/callback/internal/resume"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	resumes *prometheus.CounterVec
	retries *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_resume_total", Help: "Resume calls by answered status code.",
		}, []string{"code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callback_retry_total", Help: "Retry calls that reached the handler, by answered status code.",
		}, []string{"code"}),
	}
	reg.MustRegister(m.resumes, m.retries)
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

func handleRetry(svc *resume.Service, m *metrics) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusOK
		view, err := svc.Retry(r.Context(), mux.Vars(r)["id"])
		if err != nil {
			code = writeError(w, r, err)
		} else {
			api.WriteJSON(w, http.StatusOK, view)
		}
		m.retries.WithLabelValues(strconv.Itoa(code)).Inc()
	}
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
