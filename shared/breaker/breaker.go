// Package breaker is the circuit breaker of connections (SPEC §6.3): its state machine, as a
// table of pure transitions over event.ConnectionHealth (Apply), what a request's call makes of a
// breaker (Held), and Store, which applies the transitions to connection_health by
// compare-and-set and announces every opening and closing on the stream.
package breaker

import (
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Input is what happens to a connection's breaker.
type Input string

// Inputs.
const (
	// Succeeded: a call answered with anything but a retryable failure.
	Succeeded Input = "succeeded"
	// Failed: a call failed and may be retried (a transport error, a timeout, 408, 429 or 5xx).
	Failed Input = "failed"
	// TakeProbe: a run asks to make the probe call of an open breaker.
	TakeProbe Input = "take probe"
	// CloseByHand: an operator closes the breaker through the config API.
	CloseByHand Input = "close by hand"
)

// Event is one input with what it needs.
type Event struct {
	Input Input
	Now   time.Time
	// Owner is the run that made the call (Succeeded, Failed) or asks for the probe (TakeProbe).
	Owner string
	// Reason is why a call failed (Failed).
	Reason string
}

// Config holds the breaker's settings.
type Config struct {
	// Failures is CIRCUIT_BREAKER_FAILURES: the failed calls in a row that open a breaker; 0
	// turns breakers off.
	Failures int
	// Cooldown is CIRCUIT_BREAKER_COOLDOWN: how long an opened breaker waits before its probe.
	Cooldown time.Duration
	// ProbeTTL is how long a probe's claim lasts: the webhook timeout plus a margin (after it,
	// another run may probe).
	ProbeTTL time.Duration
	// Recheck is how soon a request held while a probe is in flight looks again, so that it goes
	// on soon after the probe closes the breaker rather than at the end of the probe's claim.
	Recheck time.Duration
	// AnnounceAfter is DefaultAnnounceAfter unless set (tests).
	AnnounceAfter time.Duration
}

// On reports whether breakers are on.
func (c Config) On() bool { return c.Failures > 0 }

// By values of event.ConnectionHealth.
const (
	ByExecutor = "executor"
	ByOperator = "operator"
)

type row struct {
	id     string
	state  event.BreakerState
	input  Input
	when   string
	effect string
	cond   func(h *event.ConnectionHealth, ev Event, c Config) bool
	apply  func(h *event.ConnectionHealth, ev Event, c Config)
}

// table is the breaker's state machine: the first row whose state, input and condition match
// applies; with none, nothing changes. An opening and a closing count Seq up and wait to be
// announced (event.ConnectionHealth.Announced).
var table = []row{
	{"B1", event.BreakerClosed, Succeeded, "failures are counted", "failures = 0", counted, reset},
	{"B2", event.BreakerClosed, Failed, "this failure makes CIRCUIT_BREAKER_FAILURES in a row", "open; the probe is due after the cool-down; unhealthy", reaches, open},
	{"B3", event.BreakerClosed, Failed, "otherwise", "failures + 1", always, count},
	{"B4", event.BreakerOpen, Succeeded, "any call answered (the probe, or a call that started before the breaker opened)", "closed; healthy", always, closeByCall},
	{"B5", event.BreakerOpen, Failed, "the probe failed", "the next probe is due after another cool-down", isProbe, reprobe},
	{"B6", event.BreakerOpen, TakeProbe, "the cool-down is over and no probe is in flight (or its claim ended)", "the probe is the run's, for ProbeTTL", probeFree, claimProbe},
	{"B7", event.BreakerOpen, CloseByHand, "always", "closed; healthy, by the operator", always, closeByHand},
}

// Apply returns h after ev, the row that applied ("" for none) and whether h changed. A
// connection without an entry is the zero ConnectionHealth with its key: closed, no failures.
func Apply(h event.ConnectionHealth, ev Event, c Config) (event.ConnectionHealth, string, bool) {
	if h.State == "" {
		h.State = event.BreakerClosed
	}
	for _, r := range table {
		if r.state != h.State || r.input != ev.Input || !r.cond(&h, ev, c) {
			continue
		}
		next := h
		next.ProbeAt, next.Probe = clone(h.ProbeAt), cloneProbe(h.Probe)
		r.apply(&next, ev, c)
		return next, r.id, true
	}
	return h, "", false
}

// MayCall reports whether a run may call the connection after TakeProbe: the breaker is closed,
// or the probe is the run's.
func MayCall(h event.ConnectionHealth, owner string) bool {
	return h.State != event.BreakerOpen || h.Probe != nil && h.Probe.Owner == owner
}

// Held reports whether a call to h's connection must wait at now, and until when it looks again:
// the breaker is open and its probe is not due yet, or another run makes it (probing). A call that
// is not held may be made: the breaker is closed, or the run may try to take the probe.
func Held(h event.ConnectionHealth, now time.Time, c Config) (until time.Time, probing, held bool) {
	switch {
	case h.State != event.BreakerOpen:
		return time.Time{}, false, false
	case h.Probe != nil && now.Before(h.Probe.Until):
		return h.Probe.Until, true, true
	case h.ProbeAt != nil && now.Before(*h.ProbeAt):
		return *h.ProbeAt, false, true
	}
	return time.Time{}, false, false
}

func always(*event.ConnectionHealth, Event, Config) bool { return true }
func counted(h *event.ConnectionHealth, _ Event, _ Config) bool {
	return h.Failures > 0
}
func reaches(h *event.ConnectionHealth, _ Event, c Config) bool { return h.Failures+1 >= c.Failures }
func isProbe(h *event.ConnectionHealth, ev Event, _ Config) bool {
	return h.Probe != nil && h.Probe.Owner == ev.Owner
}
func probeFree(h *event.ConnectionHealth, ev Event, _ Config) bool {
	return (h.ProbeAt == nil || !ev.Now.Before(*h.ProbeAt)) && (h.Probe == nil || !ev.Now.Before(h.Probe.Until))
}

func reset(h *event.ConnectionHealth, _ Event, _ Config) { h.Failures = 0 }
func count(h *event.ConnectionHealth, ev Event, _ Config) {
	h.Failures++
	h.LastError = event.Reason(ev.Reason)
}

func open(h *event.ConnectionHealth, ev Event, c Config) {
	count(h, ev, c)
	probe := ev.Now.Add(c.Cooldown)
	transition(h, event.BreakerOpen, ev.Now, ByExecutor)
	h.ProbeAt = &probe
}

func reprobe(h *event.ConnectionHealth, ev Event, c Config) {
	probe := ev.Now.Add(c.Cooldown)
	h.ProbeAt, h.Probe = &probe, nil
	h.LastError = event.Reason(ev.Reason)
}

func claimProbe(h *event.ConnectionHealth, ev Event, c Config) {
	h.Probe = &event.Probe{Owner: ev.Owner, Until: ev.Now.Add(c.ProbeTTL)}
}

func closeByCall(h *event.ConnectionHealth, ev Event, _ Config) {
	transition(h, event.BreakerClosed, ev.Now, ByExecutor)
}

func closeByHand(h *event.ConnectionHealth, ev Event, _ Config) {
	transition(h, event.BreakerClosed, ev.Now, ByOperator)
}

// transition changes h's state; its event waits to be announced.
func transition(h *event.ConnectionHealth, s event.BreakerState, now time.Time, by string) {
	h.State, h.Since, h.By = s, now, by
	h.Seq++
	h.Announced = false
	if s == event.BreakerClosed {
		h.Failures, h.ProbeAt, h.Probe = 0, nil, nil
	}
}

func clone(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

func cloneProbe(p *event.Probe) *event.Probe {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
