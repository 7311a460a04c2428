// Package timers schedules the executor's durable timers (pause expiry, execution timeout) as
// JetStream scheduled messages in the PRIVACY_REQUESTS stream, so that they fire even when every
// executor was restarted meanwhile.
//
// A timer is a message on privacy.request.timer.schedule.<kind>.<token> carrying a Nats-Schedule
// "@at <time>" header and the target privacy.request.timer.fire.<kind>.<token>, where token is a
// hash of the request id (ids may hold characters that subjects cannot). The server publishes the
// payload on the target at that time. A later schedule on the same subject replaces the earlier one;
// a timer that fires late or twice is harmless because its handler checks the request's state.
package timers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/lifecycle"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/tracing"
)

// FireSubjects is the filter that receives every fired timer.
const FireSubjects = event.SubjectTimerPrefix + "fire.>"

// Fire is the payload of a timer: the lifecycle's timer and its request.
type Fire struct {
	RequestID string              `json:"request_id"`
	Kind      lifecycle.TimerKind `json:"kind"`
	Pause     int                 `json:"pause,omitempty"`
	Run       int                 `json:"run,omitempty"`
	Due       time.Time           `json:"due"`
}

// IsFire reports whether subject is a fired timer.
func IsFire(subject string) bool {
	return strings.HasPrefix(subject, event.SubjectTimerPrefix+"fire.")
}

func token(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:12])
}

// Scheduler schedules timers in the stream.
type Scheduler struct {
	js    jetstream.JetStream
	count func(op string)
}

// NewScheduler returns a Scheduler publishing through js; count (may be nil) counts its requests.
func NewScheduler(js jetstream.JetStream, count func(op string)) *Scheduler {
	if count == nil {
		count = func(string) {}
	}
	return &Scheduler{js: js, count: count}
}

// Schedule schedules t of request id.
func (s *Scheduler) Schedule(ctx context.Context, id string, t lifecycle.Timer) error {
	s.count("js_publish")
	return Schedule(ctx, s.js, Fire{RequestID: id, Kind: t.Kind, Pause: t.Pause, Run: t.Run, Due: t.Due})
}

// Schedule publishes f to fire at f.Due (rounded up to the second, the schedule's resolution).
func Schedule(ctx context.Context, js jetstream.JetStream, f Fire) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("timers: encode: %w", err)
	}
	at := f.Due.Truncate(time.Second)
	if at.Before(f.Due) {
		at = at.Add(time.Second)
	}
	tok := token(f.RequestID)
	subject := event.SubjectTimerPrefix + "schedule." + string(f.Kind) + "." + tok
	target := event.SubjectTimerPrefix + "fire." + string(f.Kind) + "." + tok
	// The server copies the schedule's headers, the trace context among them, to the fired message.
	if _, err := js.PublishMsg(ctx, tracing.NewMsg(ctx, subject, b), jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(target)); err != nil {
		return fmt.Errorf("timers: schedule %s for %s: %w", f.Kind, f.RequestID, err)
	}
	return nil
}
