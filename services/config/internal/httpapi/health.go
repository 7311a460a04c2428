package httpapi

import (
	"bytes"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/shared/event"
	api "github.com/policyhooks/policyhooks/shared/httpapi"
)

// healthAnswer is a connection's circuit breaker as the API shows it (SPEC §6.3).
type healthAnswer struct {
	ConnectionKey string             `json:"connection_key"`
	State         event.BreakerState `json:"state"`
	Failures      int                `json:"failures"`
	// Since is when the breaker last opened or closed; null when it never did.
	Since *time.Time `json:"since"`
	// ProbeAt is when an open breaker's next probe call may be made; null when closed.
	ProbeAt *time.Time `json:"probe_at"`
	// ProbeInFlight reports that a probe call is being made now.
	ProbeInFlight bool    `json:"probe_in_flight"`
	LastError     *string `json:"last_error"`
	// ChangedBy is who last opened or closed it: executor or operator; null when nobody did.
	ChangedBy *string `json:"changed_by"`
}

func newHealthAnswer(h event.ConnectionHealth, now time.Time) healthAnswer {
	out := healthAnswer{ConnectionKey: h.ConnectionKey, State: h.State, Failures: h.Failures}
	if out.State == "" {
		out.State = event.BreakerClosed
	}
	if h.Seq > 0 {
		since := h.Since
		out.Since = &since
	}
	if h.State == event.BreakerOpen {
		out.ProbeAt = h.ProbeAt
		out.ProbeInFlight = h.Probe != nil && now.Before(h.Probe.Until)
	}
	if h.LastError != "" {
		out.LastError = &h.LastError
	}
	if h.By != "" {
		out.ChangedBy = &h.By
	}
	return out
}

// getHealth is GET /connection/{key}/health: the connection's circuit breaker.
func getHealth(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h, err := svc.Health(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, newHealthAnswer(h, time.Now()))
	}
}

// listHealth is GET /connection_health: the circuit breakers with an entry (connections whose
// calls failed at least once), in connection key order, filtered by ?state= (open or closed)
// and paged. It is what a console or an alert asks: which endpoints are unhealthy, in one call.
func listHealth(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, s, err := page(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		state := event.BreakerState(r.URL.Query().Get("state"))
		if state != "" && state != event.BreakerOpen && state != event.BreakerClosed {
			var fe fieldErrors
			fe.add("value is not a valid enumeration member; permitted: 'open', 'closed'", "type_error.enum", "query", "state")
			writeError(w, r, fe.err())
			return
		}
		all, err := svc.Healths(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		now := time.Now()
		answers := make([]healthAnswer, 0, len(all))
		for _, h := range all {
			// Filtered as answered: newHealthAnswer is where an entry's state is made explicit.
			if a := newHealthAnswer(h, now); state == "" || a.State == state {
				answers = append(answers, a)
			}
		}
		api.WriteJSON(w, http.StatusOK, slicePage(answers, p, s))
	}
}

// closeBreaker is POST /connection/{key}/health/close: an operator closes the connection's
// circuit breaker by hand. The body must be empty or {} (strict: any field is a 422).
func closeBreaker(svc *connection.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := api.ReadBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if len(bytes.TrimSpace(b)) > 0 {
			var body struct{}
			if err := api.Unmarshal(b, &body, true, "body"); err != nil {
				writeError(w, r, err)
				return
			}
		}
		h, err := svc.CloseBreaker(r.Context(), mux.Vars(r)["key"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, newHealthAnswer(h, time.Now()))
	}
}
