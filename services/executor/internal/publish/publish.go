// Package publish publishes the executor's events on JetStream, each with a Nats-Msg-Id so that a
// repeat (a crash between the publish and the write that records it) is stored once: status events
// asynchronously, execute, and the reports of submissions that were not taken.
package publish

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/runner"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Publisher publishes through one JetStream context.
type Publisher struct {
	js         jetstream.JetStream
	executeTTL time.Duration
	count      func(op string)
}

// New returns a Publisher. An execute message, which carries the identity, lives executeTTL in the
// stream (EXECUTION_TIMEOUT: its run has failed by then, so no data layer needs it later; zero: as
// long as the stream keeps messages). count (may be nil) counts the publishes waited for, by
// operation.
func New(js jetstream.JetStream, executeTTL time.Duration, count func(op string)) *Publisher {
	if count == nil {
		count = func(string) {}
	}
	return &Publisher{js: js, executeTTL: executeTTL, count: count}
}

// Status publishes a status event asynchronously with Nats-Msg-Id status:<id>:<seq>, carrying the
// trace context of ctx.
func (p *Publisher) Status(ctx context.Context, ev event.StatusChanged) (runner.Ack, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("publish: encode status event: %w", err)
	}
	p.count("js_publish_async")
	f, err := p.js.PublishMsgAsync(tracing.NewMsg(ctx, event.StatusSubject(ev.Status), b),
		jetstream.WithMsgID("status:"+ev.ID+":"+strconv.Itoa(ev.Seq)))
	if err != nil {
		return nil, fmt.Errorf("publish: status event %d of %s: %w", ev.Seq, ev.ID, err)
	}
	return f, nil
}

// Execute publishes execute with Nats-Msg-Id = its execution id, in a producer span whose trace
// context the message carries: the data layer passes it on in executed to join the trace.
func (p *Publisher) Execute(ctx context.Context, ev event.Execute) error {
	var opts []jetstream.PublishOpt
	if p.executeTTL > 0 {
		opts = append(opts, jetstream.WithMsgTTL(max(p.executeTTL, time.Second)))
	}
	ctx, span := tracing.Child(ctx, "privacy.request.execute publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("privacy_request.id", ev.ID),
			attribute.String("privacy_request.execution_id", ev.ExecutionID),
			attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", event.SubjectExecute)))
	defer span.End()
	err := p.sync(ctx, event.SubjectExecute, ev, ev.ExecutionID, opts...)
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
	}
	return err
}

// Invalid publishes the status.error of a submission that was not taken.
func (p *Publisher) Invalid(ctx context.Context, ev event.StatusChanged, msgID string) error {
	return p.sync(ctx, event.StatusSubject(ev.Status), ev, msgID)
}

// Rejected publishes privacy.request.rejected with Nats-Msg-Id rejected:<hash of the payload>, so
// that a retried publish (a lost ack during a leader election) or a redelivery of the same payload
// within the duplicate window gives one event.
func (p *Publisher) Rejected(ctx context.Context, ev event.Rejected) error {
	sum := sha256.Sum256([]byte(ev.Payload))
	return p.sync(ctx, event.SubjectRejected, ev, "rejected:"+hex.EncodeToString(sum[:16]))
}

func (p *Publisher) sync(ctx context.Context, subject string, v any, msgID string, opts ...jetstream.PublishOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("publish: encode %s: %w", subject, err)
	}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	p.count("js_publish")
	if _, err := p.js.PublishMsg(ctx, tracing.NewMsg(ctx, subject, b), opts...); err != nil {
		return fmt.Errorf("publish: %s: %w", subject, err)
	}
	return nil
}
