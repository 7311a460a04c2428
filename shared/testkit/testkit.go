// Package testkit holds test helpers over real parts: an embedded NATS with the shared topology, a
// scripted HTTPS webhook receiver, and waits on conditions instead of sleeps. It imports "testing"
// and is meant to be used from tests only.
package testkit

import (
	"fmt"
	"testing"
	"time"
)

// pollInterval is how often Eventually and WaitFor check their condition.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond every few milliseconds until it holds, and fails the test, naming what and
// the time waited, when it does not hold within the given time.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, within, what, func() (struct{}, bool) { return struct{}{}, cond() })
}

// WaitFor polls get every few milliseconds until it reports true, and returns the value it
// returned then. When it does not within the given time the test fails, naming what, the time
// waited and the last value get returned.
func WaitFor[T any](t testing.TB, within time.Duration, what string, get func() (T, bool)) T {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		v, ok := get()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last got %s", time.Since(start).Round(time.Millisecond), what, show(v))
			return v
		}
		time.Sleep(pollInterval)
	}
}

// show formats the last value of a failed wait; an empty struct (Eventually's) says nothing.
func show(v any) string {
	if _, ok := v.(struct{}); ok {
		return "false"
	}
	return fmt.Sprintf("%+v", v)
}
