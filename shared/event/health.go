package event

import (
	"strconv"
	"time"
)

// BreakerState is the state of a connection's circuit breaker (SPEC §6.3).
type BreakerState string

// Breaker states.
const (
	// BreakerClosed: calls are made; consecutive failures are counted.
	BreakerClosed BreakerState = "closed"
	// BreakerOpen: calls wait, except one probe call once the cool-down is over.
	BreakerOpen BreakerState = "open"
)

// ConnectionHealth is the value of a connection key in connection_health: its circuit breaker.
// A connection without an entry has a closed breaker and no failures.
type ConnectionHealth struct {
	ConnectionKey string       `json:"connection_key"`
	State         BreakerState `json:"state"`
	// Failures counts the failed calls in a row (a transport error, a timeout, 408, 429 or 5xx);
	// any answer that is none of those sets it back to zero.
	Failures int `json:"failures"`
	// Since is when the breaker entered its state.
	Since time.Time `json:"since"`
	// ProbeAt is, while open, when the next probe call may be made (the cool-down's end).
	ProbeAt *time.Time `json:"probe_at,omitempty"`
	// Probe is, while open, the probe call in flight, until its claim ends.
	Probe *Probe `json:"probe,omitempty"`
	// LastError is the reason of the last failed call (no URL, no personal data).
	LastError string `json:"last_error,omitempty"`
	// Seq counts the breaker's openings and closings: the Nats-Msg-Id of their events.
	Seq int `json:"seq"`
	// By says who made the last change of state: "executor", or "operator" (closed by hand).
	By string `json:"by,omitempty"`
	// Announced reports that the event of the last opening or closing is stored in the stream.
	Announced bool `json:"announced"`
}

// Probe is the one call made to a connection whose breaker is open, once the cool-down is over.
type Probe struct {
	// Owner is the executor run that makes it.
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// ConnectionHealthChanged is published on privacy.connection.unhealthy when a connection's
// breaker opens and on privacy.connection.healthy when it closes, with Nats-Msg-Id
// health:<connection_key>:<seq>.
type ConnectionHealthChanged struct {
	ConnectionKey string       `json:"connection_key"`
	State         BreakerState `json:"state"`
	Seq           int          `json:"seq"`
	At            time.Time    `json:"at"`
	// Failures is the count that opened the breaker (0 on a closing), Error the last failure.
	Failures int    `json:"failures"`
	Error    string `json:"error,omitempty"`
	By       string `json:"by"`
}

// Unannounced reports that h's last opening or closing is not yet known to be stored in the
// stream; a breaker that never opened has nothing to announce.
func (h ConnectionHealth) Unannounced() bool { return h.Seq > 0 && !h.Announced }

// Changed returns the event of h's last opening or closing.
func (h ConnectionHealth) Changed() ConnectionHealthChanged {
	ev := ConnectionHealthChanged{ConnectionKey: h.ConnectionKey, State: h.State, Seq: h.Seq, At: h.Since, By: h.By}
	if h.State == BreakerOpen {
		ev.Failures, ev.Error = h.Failures, h.LastError
	}
	return ev
}

// Subject returns the subject ev is published on.
func (ev ConnectionHealthChanged) Subject() string {
	if ev.State == BreakerOpen {
		return SubjectConnectionUnhealthy
	}
	return SubjectConnectionHealthy
}

// MsgID returns the Nats-Msg-Id of ev.
func (ev ConnectionHealthChanged) MsgID() string {
	return "health:" + ev.ConnectionKey + ":" + strconv.Itoa(ev.Seq)
}
