package chaos

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// Submission is how a request's privacy.request.submitted went out.
type Submission struct {
	FirstAt   time.Time
	AckedAt   time.Time // zero when never acknowledged
	Attempts  int
	Duplicate bool // JetStream said a retry was a duplicate: an earlier attempt was stored
	LastErr   string
}

// Submitter publishes the stream of requests as an upstream system would: with Nats-Msg-Id = id,
// retried with the same id while NATS is down.
type Submitter struct {
	mu   sync.Mutex
	subs map[string]*Submission
}

// Submit publishes specs at rate per second, each in its own goroutine so that the pace holds
// while NATS is down, and returns once every one was acknowledged or ctx ended.
func (s *Submitter) Submit(ctx context.Context, js jetstream.JetStream, specs []Spec, rate float64) {
	s.mu.Lock()
	s.subs = map[string]*Submission{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for _, spec := range specs {
		sleepCtx(ctx, time.Until(next))
		next = next.Add(interval)
		if ctx.Err() != nil {
			break
		}
		sub := &Submission{FirstAt: time.Now()}
		s.mu.Lock()
		s.subs[spec.ID] = sub
		s.mu.Unlock()
		wg.Go(func() { s.publish(ctx, js, spec, sub) })
	}
	wg.Wait()
}

func (s *Submitter) publish(ctx context.Context, js jetstream.JetStream, spec Spec, sub *Submission) {
	payload, _ := json.Marshal(event.Submitted{ID: spec.ID, PolicyKey: PolicyKey, Identity: spec.Identity()})
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := js.Publish(pctx, event.SubjectSubmitted, payload, jetstream.WithMsgID(spec.ID))
		cancel()
		s.mu.Lock()
		sub.Attempts++
		if err == nil {
			sub.AckedAt, sub.Duplicate = time.Now(), ack.Duplicate
			s.mu.Unlock()
			return
		}
		sub.LastErr = err.Error()
		s.mu.Unlock()
		sleepCtx(ctx, 300*time.Millisecond)
	}
}

// Get returns a copy of a request's submission, ok false when it was never attempted.
func (s *Submitter) Get(id string) (Submission, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[id]
	if !ok {
		return Submission{}, false
	}
	return *sub, true
}
