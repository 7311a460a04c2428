package web

import (
	stdlog "log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	api "github.com/policyhooks/policyhooks/shared/httpapi"
	"github.com/rs/zerolog"
)

// Backend names a service the console forwards API calls to.
type Backend string

// The services behind the console.
const (
	Config   Backend = "config"
	Callback Backend = "callback"
)

// apiRoutes is the one routing rule of the proxy: the first entry whose prefix holds the path
// wins. A prefix ending in "/" holds every path below it; any other holds itself and the paths
// below it (so /api/v1/privacy-requests is not the callback's).
var apiRoutes = []struct {
	prefix  string
	backend Backend
}{
	{"/api/v1/privacy-request", Callback},
	{"/api/v1/", Config},
}

// Route returns the backend that serves path, and false for a path outside the API.
func Route(path string) (Backend, bool) {
	for _, r := range apiRoutes {
		if strings.HasSuffix(r.prefix, "/") {
			if strings.HasPrefix(path, r.prefix) && len(path) > len(r.prefix) {
				return r.backend, true
			}
			continue
		}
		if path == r.prefix || strings.HasPrefix(path, r.prefix+"/") {
			return r.backend, true
		}
	}
	return "", false
}

// securityHeaderNames are the headers the console sets on every answer itself; a backend's own
// values are dropped so that each is sent once.
var securityHeaderNames = []string{
	"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options",
}

// newProxy returns the reverse proxy of the API: each request goes to the backend Route names. It
// never logs a header or a body, only the backend and the error of a failed forward; the proxy's
// own messages (a body copy cut short) go to log.
func newProxy(backends map[Backend]*url.URL, log zerolog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		ErrorLog: stdlog.New(log.With().Str("component", "proxy").Logger(), "", 0),
		Rewrite: func(pr *httputil.ProxyRequest) {
			b, _ := Route(pr.In.URL.Path)
			target := backends[b]
			pr.SetURL(target)
			pr.SetXForwarded()
			// The browser's cookies are the console's, not the backends'.
			pr.Out.Header.Del("Cookie")
		},
		ModifyResponse: func(res *http.Response) error {
			for _, h := range securityHeaderNames {
				res.Header.Del(h)
			}
			// The answer carries the console's request id already (the backend echoes it).
			res.Header.Del(api.HeaderRequestID)
			res.Header.Del("Set-Cookie")
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			b, _ := Route(r.URL.Path)
			zerolog.Ctx(r.Context()).Warn().Str("backend", string(b)).Err(err).Msg("proxy: backend unreachable")
			api.WriteJSON(w, http.StatusBadGateway, map[string]any{
				"detail": "The " + string(b) + " service did not answer; try again shortly.",
			})
		},
	}
}

// proxyHandler forwards API paths to their backend and answers 404 for any other. The backend gets
// the console's request id (set on the answer by the middleware), so that their logs line up.
func proxyHandler(p *httputil.ReverseProxy) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := Route(r.URL.Path); !ok {
			api.NotFound(w, r)
			return
		}
		if id := w.Header().Get(api.HeaderRequestID); id != "" {
			r = r.Clone(r.Context())
			r.Header.Set(api.HeaderRequestID, id)
		}
		p.ServeHTTP(w, r)
	}
}
