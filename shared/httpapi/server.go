package httpapi

import (
	"context"
	"net"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// NewRouter returns the router every service starts from: the shared Middleware on every route
// and on the not-found and method-not-allowed answers (mux runs Use middleware on matched routes
// only), and the routes a service answers outside its API: GET /health (alive), GET /ready (each
// of checks; 503 naming those that fail) and GET /metrics (reg, with the HTTP metrics registered
// on it).
func NewRouter(log zerolog.Logger, reg *prometheus.Registry, checks map[string]Check) *mux.Router {
	r := mux.NewRouter()
	mw := Middleware(log, NewMetrics(reg))
	r.Use(mw)
	r.NotFoundHandler = mw(http.HandlerFunc(NotFound))
	r.MethodNotAllowedHandler = mw(http.HandlerFunc(MethodNotAllowed))
	r.HandleFunc("/health", Health).Methods(http.MethodGet)
	r.HandleFunc("/ready", Ready(checks)).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})).Methods(http.MethodGet)
	return r
}

// Server is a service serving HTTP, as Start returns it.
type Server struct {
	addr string
	done chan struct{}
	err  error
}

// Start serves h on ln (Serve) until ctx ends, then calls each of after in order (drain NATS,
// close a store). It returns at once.
func Start(ctx context.Context, ln net.Listener, h http.Handler, after ...func()) *Server {
	s := &Server{addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = Serve(ctx, ln, h)
		for _, f := range after {
			f()
		}
	}()
	return s
}

// Addr returns the host:port the listener is bound to.
func (s *Server) Addr() string { return s.addr }

// Wait blocks until the server drained and each of Start's after ran, and returns what stopped
// the serving abnormally, if anything (nil when its context ended).
func (s *Server) Wait() error {
	<-s.done
	return s.err
}
