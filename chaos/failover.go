package chaos

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// SubmitUntil publishes specs in order at rate per second, each as Submit does, until stop is
// closed or every spec went out; then it waits until every publish it started was acknowledged (or
// ctx ended) and returns how many it started: specs[:n] are the stream.
func (s *Submitter) SubmitUntil(ctx context.Context, js jetstream.JetStream, specs []Spec, rate float64, stop <-chan struct{}) int {
	s.mu.Lock()
	s.subs = map[string]*Submission{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for n, spec := range specs {
		select {
		case <-stop:
			return n
		case <-ctx.Done():
			return n
		case <-time.After(time.Until(next)):
		}
		next = next.Add(interval)
		sub := &Submission{FirstAt: time.Now()}
		s.mu.Lock()
		s.subs[spec.ID] = sub
		s.mu.Unlock()
		wg.Go(func() { s.publish(ctx, js, spec, sub) })
	}
	return len(specs)
}

// Progress returns, sorted, the moments the system moved a request of all on: a webhook call
// arrived at a receiver (after its claim was written), the data layer got an execute, a status
// change was written (the event's own time); and, separately, the moments requests completed
// (their first complete event). What the receivers do (resume posts, slow answers) is not counted.
func Progress(all []*Evidence) (progress, completions []time.Time) {
	for _, e := range all {
		for _, c := range e.Calls {
			progress = append(progress, c.At)
		}
		for _, d := range e.Deliveries {
			progress = append(progress, d.At)
		}
		done := false
		for _, ev := range e.Events {
			progress = append(progress, ev.Event.At)
			if ev.Event.Status == event.StatusComplete && !done {
				completions = append(completions, ev.Event.At)
				done = true
			}
		}
	}
	slices.SortFunc(progress, time.Time.Compare)
	slices.SortFunc(completions, time.Time.Compare)
	return progress, completions
}

// LongestGap returns the longest stretch of the window [from, to] in which no time of the sorted
// times falls, and where it starts: the gaps between consecutive times, clipped to the window, with
// from and to as the ends.
func LongestGap(times []time.Time, from, to time.Time) (gap time.Duration, start time.Time) {
	prev := from
	for _, t := range times {
		if !t.After(from) {
			continue
		}
		if t.After(to) {
			break
		}
		if d := t.Sub(prev); d > gap {
			gap, start = d, prev
		}
		prev = t
	}
	if d := to.Sub(prev); d > gap {
		gap, start = d, prev
	}
	return gap, start
}
