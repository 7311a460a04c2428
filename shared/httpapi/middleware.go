package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// HeaderRequestID carries the request id on requests and responses.
const HeaderRequestID = "X-Request-ID"

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Metrics are the HTTP metrics of a service.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// Middleware returns the middleware every route runs behind: request id (echoed when valid, else
// generated), a request-scoped logger carrying it, panic recovery, an access log line and metrics.
// It is meant for mux.Router.Use, so that the route template is known.
func Middleware(log zerolog.Logger, m *Metrics) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			id := r.Header.Get(HeaderRequestID)
			if !validRequestID.MatchString(id) {
				id = newRequestID()
			}
			w.Header().Set(HeaderRequestID, id)
			l := log.With().Str("request_id", id).Logger()
			r = r.WithContext(l.WithContext(r.Context()))
			sw := &statusWriter{ResponseWriter: w}
			route := "unmatched"
			if cr := mux.CurrentRoute(r); cr != nil {
				if tpl, err := cr.GetPathTemplate(); err == nil {
					route = tpl
				}
			}
			defer func() {
				if p := recover(); p != nil {
					l.Error().Interface("panic", p).Str("route", route).Msg("handler panicked")
					if sw.status == 0 {
						WriteJSON(sw, http.StatusInternalServerError, map[string]any{"detail": "Internal server error"})
					}
				}
				status := sw.status
				if status == 0 {
					status = http.StatusOK
				}
				elapsed := time.Since(start)
				if m != nil {
					m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
					m.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
				}
				l.Info().Str("method", r.Method).Str("route", route).Int("status", status).
					Dur("elapsed", elapsed).Msg("http request")
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NotFound answers unmatched routes with the {"detail"} shape; use it as mux.Router.NotFoundHandler
// behind Middleware.
func NotFound(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusNotFound, map[string]any{"detail": "Not Found"})
}

// MethodNotAllowed answers a known path with another method.
func MethodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": "Method Not Allowed"})
}

// Health answers liveness: the process serves HTTP.
func Health(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Check is one readiness check of a dependency.
type Check func(ctx context.Context) error

// Ready answers 200 when every check passes within two seconds, else 503 naming the failures.
func Ready(checks map[string]Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		failed := map[string]string{}
		for name, check := range checks {
			if err := check(ctx); err != nil {
				failed[name] = err.Error()
			}
		}
		if len(failed) > 0 {
			WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failed": failed})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// Document serves a static JSON document (the OpenAPI document of a service).
func Document(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}
}

// Serve serves h on ln until ctx ends, then shuts down, giving in-flight requests up to ten seconds.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
