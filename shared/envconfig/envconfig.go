// Package envconfig reads a service's settings from environment variables. A Reader collects every
// problem, each naming its variable, so that a service can report them all at start and exit.
package envconfig

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/secret"
)

// Reader reads variables through getenv and remembers what was wrong.
type Reader struct {
	getenv func(string) string
	errs   []error
}

// New returns a Reader over getenv (os.Getenv in main, a map in tests).
func New(getenv func(string) string) *Reader { return &Reader{getenv: getenv} }

// Err returns every problem found so far, one line each, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Fail records a problem with the variable name.
func (r *Reader) Fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

func (r *Reader) lookup(name string) (string, bool) {
	v := strings.TrimSpace(r.getenv(name))
	return v, v != ""
}

// String returns the variable or def when unset.
func (r *Reader) String(name, def string) string {
	if v, ok := r.lookup(name); ok {
		return v
	}
	return def
}

// Required returns the variable and records a problem when it is unset.
func (r *Reader) Required(name string) string {
	v, ok := r.lookup(name)
	if !ok {
		r.Fail(name, "is required")
	}
	return v
}

// OneOf returns the variable, which must be one of allowed, or def when unset.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.String(name, def))
	if !slices.Contains(allowed, v) {
		r.Fail(name, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	return v
}

// Duration returns the variable as a Go duration ("30s", "60h") or a whole number of seconds, or
// def when unset. It must be positive.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr != nil {
			r.Fail(name, "must be a duration such as 30s or 60h, got %q", v)
			return def
		}
		d = time.Duration(n) * time.Second
	}
	if d <= 0 {
		r.Fail(name, "must be positive, got %q", v)
		return def
	}
	return d
}

// DurationOrForever is Duration, except that "0" or "forever" is accepted and returned as 0: for a
// retention, where 0 means keeping for good.
func (r *Reader) DurationOrForever(name string, def time.Duration) time.Duration {
	if v, ok := r.lookup(name); ok && (v == "0" || strings.EqualFold(v, "forever")) {
		return 0
	}
	return r.Duration(name, def)
}

// DurationOrZero is Duration, except that "0" (or "0s") is accepted and returned as 0: for a
// setting where 0 means not at all.
func (r *Reader) DurationOrZero(name string, def time.Duration) time.Duration {
	if v, ok := r.lookup(name); ok {
		if d, err := time.ParseDuration(v); err == nil && d == 0 || v == "0" {
			return 0
		}
	}
	return r.Duration(name, def)
}

// Int returns the variable as an integer within [lo, hi], or def when unset.
func (r *Reader) Int(name string, def, lo, hi int) int {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.Fail(name, "must be a whole number from %d to %d, got %q", lo, hi, v)
		return def
	}
	return n
}

// Bool returns the variable as true/false (also 1/0, yes/no), or def when unset.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	r.Fail(name, "must be true or false, got %q", v)
	return def
}

// List returns the comma-separated entries of the variable, each trimmed, or nil when unset. An
// empty entry is a problem.
func (r *Reader) List(name string) []string {
	v, ok := r.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for i, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			r.Fail(name, "entry %d is empty, in %q", i+1, v)
			continue
		}
		out = append(out, e)
	}
	return out
}

// URL returns the variable as an absolute URL with one of schemes, or def when unset.
func (r *Reader) URL(name, def string, schemes ...string) string {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || !slices.Contains(schemes, u.Scheme) {
		r.Fail(name, "must be an absolute %s URL, got %q", strings.Join(schemes, "/"), v)
		return def
	}
	return strings.TrimRight(v, "/")
}

// DefaultEventRetention is EVENT_RETENTION when unset: two weeks of events, far beyond the
// longest timer (PRIVACY_REQUEST_DELAY_TIMEOUT, 60 hours by default).
const DefaultEventRetention = 14 * 24 * time.Hour

// Common holds the settings every service reads (SPEC §8).
type Common struct {
	// NATSURL is one server or a comma-separated list of a cluster's servers.
	NATSURL    string
	NATSCreds  string
	NATSCAFile string
	// NATSReplicas is NATS_REPLICAS: the replicas of the stream and every bucket (1, 3 or 5).
	NATSReplicas int
	// EventRetention is EVENT_RETENTION: how long the PRIVACY_REQUESTS stream keeps its messages
	// (its MaxAge), the status events and the timers among them. Every service applies it to the
	// stream, so all must be given the same value.
	EventRetention time.Duration
	// AppKey is APP_ENCRYPTION_KEY; PreviousAppKey is APP_ENCRYPTION_KEY_PREVIOUS, still accepted
	// for opening what the old key sealed.
	AppKey         string
	PreviousAppKey string
	LogLevel       string
	LogFormat      string
	HTTPAddr       string
}

// Common reads the shared settings; defaultHTTPAddr is the service's own default.
func (r *Reader) Common(defaultHTTPAddr string) Common {
	c := Common{
		NATSURL:        r.String("NATS_URL", "nats://127.0.0.1:4222"),
		NATSCreds:      r.String("NATS_CREDS", ""),
		NATSCAFile:     r.String("NATS_CA_FILE", ""),
		NATSReplicas:   r.Int("NATS_REPLICAS", 1, 1, 5),
		EventRetention: r.Duration("EVENT_RETENTION", DefaultEventRetention),
		AppKey:         r.Required("APP_ENCRYPTION_KEY"),
		PreviousAppKey: r.String("APP_ENCRYPTION_KEY_PREVIOUS", ""),
		LogLevel:       r.OneOf("LOG_LEVEL", "info", "trace", "debug", "info", "warn", "error"),
		LogFormat:      r.OneOf("LOG_FORMAT", "json", "json", "console"),
		HTTPAddr:       r.String("HTTP_ADDR", defaultHTTPAddr),
	}
	if c.EventRetention < time.Hour {
		r.Fail("EVENT_RETENTION", "must be at least 1h, got %s", c.EventRetention)
	}
	if c.NATSReplicas%2 == 0 {
		// An even count adds no fault tolerance over the odd one below it (a raft group needs a
		// majority).
		r.Fail("NATS_REPLICAS", "must be 1, 3 or 5, got %d", c.NATSReplicas)
	}
	if c.AppKey != "" && len(c.AppKey) != secret.AppKeyLength {
		r.Fail("APP_ENCRYPTION_KEY", "must be exactly %d characters, got %d", secret.AppKeyLength, len(c.AppKey))
	}
	if c.PreviousAppKey != "" && len(c.PreviousAppKey) != secret.AppKeyLength {
		r.Fail("APP_ENCRYPTION_KEY_PREVIOUS", "must be exactly %d characters, got %d", secret.AppKeyLength, len(c.PreviousAppKey))
	}
	return c
}
